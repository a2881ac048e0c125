"""realtime_capabilities(): the doctor's check, on this machine and on fake procfs/sysfs trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgert.realtime import CapabilityVerdict, realtime_capabilities
from edgert.realtime._sysinfo import parse_cpu_list, rt_cgroup

NAMES = ["sched_fifo", "rt_priority_limit", "rt_cgroup", "rt_throttling", "memory_lock",
         "cpu_isolation", "cpu_dma_latency", "rt_kernel", "python"]


def test_this_machine() -> None:
    caps = realtime_capabilities(priority=80)
    assert [c.name for c in caps.checks] == NAMES
    assert all(c.verdict is not CapabilityVerdict.UNKNOWN for c in caps.checks), str(caps)
    if os.geteuid() == 0:
        assert caps.can_schedule_fifo
        assert caps.can_lock_memory
    assert all(c.hint for c in caps.checks if c.verdict is not CapabilityVerdict.OK)
    json.dumps(caps.to_dict())
    assert "sched_fifo" in str(caps)
    assert caps["memory_lock"].name == "memory_lock"
    with pytest.raises(KeyError):
        caps["nope"]


def fake_tree(tmp_path: Path, *, rt_runtime_us: int | None = 0, throttle: str = "950000",
              kernel_rt: bool = False, isolated: str = "") -> Path:
    def put(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put("proc/self/status", "Name:\tpython\nVmSize:\t  400000 kB\nVmLck:\t       0 kB\n"
        "CapEff:\t0000000000000000\n")
    put("proc/self/cgroup", "4:memory:/x\n1:cpu,cpuacct:/robot.slice/ctl.service\n0::/\n")
    put("proc/self/mountinfo",
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    if rt_runtime_us is not None:
        put("sys/fs/cgroup/cpu,cpuacct/robot.slice/ctl.service/cpu.rt_runtime_us",
            f"{rt_runtime_us}\n")
    put("proc/sys/kernel/sched_rt_runtime_us", throttle + "\n")
    put("proc/sys/kernel/version", "#1 SMP PREEMPT_RT 6.1\n" if kernel_rt else "#1 SMP\n")
    put("sys/devices/system/cpu/online", "0-5\n")
    put("sys/devices/system/cpu/isolated", isolated + "\n")
    return tmp_path


def test_fake_tree_with_rt_less_cgroup_and_no_capabilities(tmp_path: Path) -> None:
    caps = realtime_capabilities(root=fake_tree(tmp_path, throttle="-1"))
    by = {c.name: c for c in caps.checks}
    assert by["sched_fifo"].verdict is CapabilityVerdict.UNKNOWN  # never probed off "/"
    assert by["rt_cgroup"].verdict is CapabilityVerdict.FAIL
    assert "/robot.slice/ctl.service" in by["rt_cgroup"].detail
    assert by["rt_cgroup"].hint
    assert "cpu.rt_runtime_us" in by["rt_cgroup"].hint
    assert by["rt_throttling"].verdict is CapabilityVerdict.WARN
    assert by["rt_kernel"].verdict is CapabilityVerdict.WARN
    assert by["cpu_isolation"].verdict is CapabilityVerdict.WARN
    assert by["cpu_dma_latency"].verdict is CapabilityVerdict.WARN  # no device in the tree
    assert not caps.ok


def test_fake_tree_that_allows_everything(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, rt_runtime_us=950000, kernel_rt=True, isolated="2-3")
    caps = realtime_capabilities(root=root)
    by = {c.name: c for c in caps.checks}
    assert by["rt_cgroup"].verdict is CapabilityVerdict.OK
    assert "950000" in by["rt_cgroup"].detail
    assert by["rt_kernel"].verdict is CapabilityVerdict.OK
    assert by["cpu_isolation"].verdict is CapabilityVerdict.OK
    assert "isolcpus 2,3" in by["cpu_isolation"].detail
    group = rt_cgroup(root)
    assert group is not None
    assert group.runtime_us == 950000


def test_never_raises_on_an_empty_tree(tmp_path: Path) -> None:
    caps = realtime_capabilities(root=tmp_path, priority=500)
    assert caps.priority == 99
    assert [c.name for c in caps.checks] == NAMES
    assert caps["rt_throttling"].verdict is CapabilityVerdict.UNKNOWN
    assert "FileNotFoundError" in caps["rt_throttling"].detail
    assert rt_cgroup(tmp_path) is None


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,6,8-9\n") == {0, 1, 2, 3, 6, 8, 9}
    assert parse_cpu_list("\n") == frozenset()
