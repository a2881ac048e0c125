"""realtime_capabilities(): the doctor's check, on this machine and on fake procfs/sysfs trees."""

from __future__ import annotations

import errno
import gzip
import json
import os
import threading
from pathlib import Path

import pytest

from edgert.realtime import CapabilityVerdict, realtime_capabilities
from edgert.realtime._remedy import diagnose_sched
from edgert.realtime._sysinfo import parse_cpu_list, rt_cgroup, rt_group_sched

NAMES = ["sched_fifo", "rt_priority_limit", "rt_cgroup", "rt_throttling", "memory_lock",
         "cpu_isolation", "cpu_dma_latency", "rt_kernel", "python"]


def _fifo_works(priority: int) -> bool:
    """An independent probe: try SCHED_FIFO in a throwaway thread."""
    result: list[bool] = []

    def body() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            result.append(True)
        except PermissionError:
            result.append(False)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return result[0]


def test_this_machine() -> None:
    caps = realtime_capabilities(priority=80)
    assert [c.name for c in caps.checks] == NAMES
    assert all(c.verdict is not CapabilityVerdict.UNKNOWN for c in caps.checks), str(caps)
    assert caps.can_schedule_fifo == _fifo_works(80)
    if os.geteuid() == 0:
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
    assert by["cpu_dma_latency"].verdict is CapabilityVerdict.UNKNOWN  # the tree has no dev/
    assert "not readable in this tree" in by["cpu_dma_latency"].detail
    (tmp_path / "dev").mkdir()
    dma = realtime_capabilities(root=tmp_path)["cpu_dma_latency"]
    assert dma.verdict is CapabilityVerdict.WARN  # a dev/ without the device: it is missing
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
    assert "is not exposed here" in caps["rt_throttling"].detail  # a fact, not a failed check
    assert rt_cgroup(tmp_path) is None


def test_facts_a_jetson_tree_lacks_read_as_unknown_never_fail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake Jetson tree has no proc/self/status (capabilities) and no kernel version. Limits
    # are this process's own: make them refuse, so only the unread capability could lift them.
    import resource

    from edgert.testing.jetson import build_jetson_tree

    real = resource.getrlimit
    tight = {resource.RLIMIT_RTPRIO: (0, 0), resource.RLIMIT_MEMLOCK: (8 << 20, 8 << 20)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: tight.get(which) or real(which))
    with build_jetson_tree(tmp_path, "jp6-orin-nx") as tree:
        caps = realtime_capabilities(root=tree.root)
    for name in ("rt_priority_limit", "memory_lock", "rt_kernel", "cpu_dma_latency"):
        check = caps[name]
        assert check.verdict is CapabilityVerdict.UNKNOWN, check
        assert "not readable in this tree" in check.detail, check
        assert check.hint is None, check  # no limits.conf advice for what was not read
    assert "kernel version is ''" not in caps["rt_kernel"].detail
    assert caps.ok


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,6,8-9\n") == {0, 1, 2, 3, 6, 8, 9}
    assert parse_cpu_list("\n") == frozenset()


def v2_tree(tmp_path: Path, *, config: str | None, cmdline: str = "quiet") -> Path:
    """A cgroup v2 host like the GPU VMs: the process sits in /process_api/<id>, and the cpu
    controller is enabled for /process_api."""
    def put(rel: str, data: str | bytes) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)

    put("proc/self/cgroup", "0::/process_api/8689\n")
    put("proc/self/mountinfo", "41 23 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    put("sys/fs/cgroup/cgroup.subtree_control", "cpuset cpu io memory hugetlb pids\n")
    put("sys/fs/cgroup/process_api/cgroup.subtree_control", "memory\n")
    put("sys/fs/cgroup/process_api/8689/cgroup.subtree_control", "\n")
    put("proc/cmdline", cmdline + "\n")
    if config is not None:
        put("proc/config.gz", gzip.compress(config.encode()))
    return tmp_path


def test_cgroup_v2_with_rt_group_scheduling_is_diagnosed(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, config="CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_RT_GROUP_SCHED=y\n")
    assert rt_group_sched(root) is True
    group = rt_cgroup(root)
    assert group is not None
    assert (group.group, group.version, group.runtime_us, group.file) == ("/process_api", 2, 0,
                                                                          None)
    check = realtime_capabilities(root=root)["rt_cgroup"]
    assert check.verdict is CapabilityVerdict.FAIL
    assert "'/process_api' (cgroup v2) is not the root group" in check.detail
    assert check.hint is not None
    assert "/sys/fs/cgroup/cgroup.procs" in check.hint
    diag = diagnose_sched(errno.EPERM, priority=80, root=root)
    assert "CONFIG_RT_GROUP_SCHED" in diag.reason
    assert diag.permission


@pytest.mark.parametrize(("config", "cmdline", "expected"), [
    ("# CONFIG_RT_GROUP_SCHED is not set\n", "quiet", False),
    ("CONFIG_RT_GROUP_SCHED=y\n", "quiet rt_group_sched=0", False),
    ("CONFIG_RT_GROUP_SCHED=y\nCONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y\n", "quiet", False),
    ("CONFIG_RT_GROUP_SCHED=y\nCONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y\n",
     "rt_group_sched=1", True),
    (None, "quiet", None),
])
def test_rt_group_sched_from_config_and_cmdline(tmp_path: Path, config: str | None,
                                                cmdline: str, expected: bool | None) -> None:
    root = v2_tree(tmp_path, config=config, cmdline=cmdline)
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.18.0-test\n")
    assert rt_group_sched(root) is expected
    # Without RT group scheduling (or when it cannot be told) a v2 group is no obstacle.
    assert (rt_cgroup(root) is not None) is bool(expected)


def test_v2_process_in_the_root_cpu_group_is_fine(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, config="CONFIG_RT_GROUP_SCHED=y\n")
    (root / "sys/fs/cgroup/cgroup.subtree_control").write_text("memory pids\n")
    assert rt_cgroup(root) is None
