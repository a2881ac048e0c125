"""Refusals for real: child processes drop to uid nobody with lowered rlimits (or join a cgroup
without RT budget) and report the errors edgert raises, their errno and their remediation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgert.realtime._sysinfo import has_capability

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
CAP_SYS_RESOURCE = 24

# Raising a hard rlimit needs CAP_SYS_RESOURCE, which some sandboxes (this CI VM) withhold.
needs_sys_resource = pytest.mark.skipif(
    not has_capability(CAP_SYS_RESOURCE),
    reason="raising a hard rlimit needs CAP_SYS_RESOURCE, which this root lacks")

CHILD = r"""
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, (soft, hard) in spec.get("rlimits", {}).items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
if spec.get("cgroup_procs"):
    with open(spec["cgroup_procs"], "w") as f:
        f.write(str(os.getpid()))
import edgert.realtime as rt
if spec.get("drop", True):
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
out = {"uid": os.geteuid()}
try:
    exec(spec["code"], {"rt": rt, "out": out, "os": os, "resource": resource})
except Exception as err:
    out.update(error=type(err).__name__, message=getattr(err, "message", str(err)),
               hint=getattr(err, "hint", None), errno=getattr(err, "errno_value", None),
               mro=[c.__name__ for c in type(err).__mro__])
print(json.dumps(out))
"""


def child(code: str, *, rlimits: dict[str, tuple[int, int]] | None = None, drop: bool = True,
          cgroup_procs: str | None = None) -> dict[str, Any]:
    spec = {"code": code, "rlimits": rlimits or {}, "drop": drop, "cgroup_procs": cgroup_procs}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["uid"] == (NOBODY if drop else 0)
    return result


APPLY_FIFO = "rt.RealtimePolicy(priority=80).apply().close()"


def test_fifo_eperm_from_rlimit_rtprio_zero() -> None:
    r = child(APPLY_FIFO, rlimits={"RLIMIT_RTPRIO": (0, 0)})
    assert r["error"] == "PermissionDeniedError"
    assert r["errno"] == 1
    assert "EPERM" in r["message"]
    assert "SCHED_FIFO priority 80" in r["message"]
    assert "RLIMIT_RTPRIO is 0 (hard 0)" in r["message"]
    assert "lacks CAP_SYS_NICE" in r["message"]
    for remedy in ("nobody - rtprio 80", "/etc/security/limits.d/", "LimitRTPRIO=80",
                   "ulimit -r 80", "CAP_SYS_NICE", "--ulimit rtprio=80"):
        assert remedy in r["hint"], remedy


@needs_sys_resource
def test_fifo_priority_above_hard_limit_is_refused() -> None:
    r = child(APPLY_FIFO, rlimits={"RLIMIT_RTPRIO": (10, 10)})
    assert r["error"] == "PermissionDeniedError"
    assert "RLIMIT_RTPRIO is 10 (hard 10), below priority 80" in r["message"]


@needs_sys_resource
def test_soft_rtprio_is_raised_to_hard_like_cyclictest_then_put_back() -> None:
    code = (
        "with rt.RealtimePolicy(priority=80).apply() as a:\n"
        "    out['sched'] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK\n"
        "    out['detail'] = a.report.applied[0].detail\n"
        "out['soft'] = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]\n"
        "out['after'] = os.sched_getscheduler(0)\n"
    )
    r = child(code, rlimits={"RLIMIT_RTPRIO": (0, 90)})
    assert "error" not in r, r
    assert r["sched"] == os.SCHED_FIFO
    assert r["after"] == os.SCHED_OTHER
    assert "soft RLIMIT_RTPRIO raised 0 -> 80" in r["detail"]
    assert r["soft"] == 0


def test_mlockall_eperm_when_memlock_limit_is_zero() -> None:
    r = child("rt.lock_memory().close()", rlimits={"RLIMIT_MEMLOCK": (0, 0)})
    assert r["error"] == "PermissionDeniedError"
    assert r["errno"] == 1
    assert "mlockall(MCL_CURRENT|MCL_FUTURE) failed: EPERM" in r["message"]
    assert "RLIMIT_MEMLOCK is 0 bytes (hard 0 bytes)" in r["message"]
    assert "lacks CAP_IPC_LOCK" in r["message"]
    for remedy in ("nobody - memlock unlimited", "LimitMEMLOCK=infinity", "ulimit -l unlimited",
                   "CAP_IPC_LOCK", "--ulimit memlock=-1"):
        assert remedy in r["hint"], remedy


def test_mlockall_enomem_when_memlock_limit_is_too_small() -> None:
    r = child("rt.lock_memory().close()", rlimits={"RLIMIT_MEMLOCK": (65536, 65536)})
    assert r["error"] == "RealtimeError"  # not a permission problem: the limit is too small
    assert "PermissionDeniedError" not in r["mro"]
    assert "ENOMEM" in r["message"]
    assert "RLIMIT_MEMLOCK is 64 KiB (hard 64 KiB)" in r["message"]
    assert "the process maps" in r["message"]
    assert "LimitMEMLOCK=infinity" in r["hint"]


def test_non_strict_applies_what_is_permitted_and_reports_the_rest() -> None:
    code = (
        "import gc\n"
        "p = rt.RealtimePolicy(priority=80, lock_memory=True, freeze_gc=True, "
        "cpu_dma_latency_us=0, strict=False)\n"
        "with p.apply() as a:\n"
        "    out['gc_enabled'] = gc.isenabled()\n"
        "    out['applied'] = [o.setting for o in a.report.applied]\n"
        "    out['refused'] = {o.setting: [o.errno_value, o.hint] for o in a.report.refused}\n"
        "    out['text'] = str(a.report)\n"
        "out['gc_after'] = gc.isenabled()\n"
    )
    r = child(code, rlimits={"RLIMIT_RTPRIO": (0, 0), "RLIMIT_MEMLOCK": (0, 0)})
    assert "error" not in r, r
    assert r["applied"] == ["gc"]
    assert set(r["refused"]) == {"scheduler", "memory_lock", "cpu_dma_latency"}
    assert r["refused"]["scheduler"][0] == 1
    assert "LimitRTPRIO=80" in r["refused"]["scheduler"][1]
    assert "LimitMEMLOCK=infinity" in r["refused"]["memory_lock"][1]
    assert "udev" in r["refused"]["cpu_dma_latency"][1]
    assert r["gc_enabled"] is False
    assert r["gc_after"] is True
    assert "REFUSED  scheduler" in r["text"]


def test_strict_refusal_undoes_what_was_applied_before_it() -> None:
    code = (
        "import gc\n"
        "try:\n"
        "    rt.RealtimePolicy(priority=80, freeze_gc=True).apply()\n"
        "except PermissionError:\n"
        "    out['gc_after'] = gc.isenabled()\n"
        "    out['frozen'] = gc.get_freeze_count()\n"
    )
    r = child(code, rlimits={"RLIMIT_RTPRIO": (0, 0)})
    assert r["gc_after"] is True
    assert r["frozen"] == 0


def test_capability_check_explains_refusals_without_raising() -> None:
    code = (
        "caps = rt.realtime_capabilities(priority=80)\n"
        "out['checks'] = {c.name: [c.verdict.value, c.hint] for c in caps.checks}\n"
        "out['ok'] = caps.ok\n"
        "out['fifo'] = caps.can_schedule_fifo\n"
    )
    r = child(code, rlimits={"RLIMIT_RTPRIO": (0, 0), "RLIMIT_MEMLOCK": (0, 0)})
    checks = r["checks"]
    assert checks["sched_fifo"][0] == "fail"
    assert "LimitRTPRIO=80" in checks["sched_fifo"][1]
    assert checks["rt_priority_limit"][0] == "fail"
    assert checks["memory_lock"][0] == "fail"
    assert "LimitMEMLOCK" in checks["memory_lock"][1]
    assert checks["cpu_dma_latency"][0] == "warn"
    assert r["ok"] is False
    assert r["fifo"] is False


@pytest.fixture
def rt_less_cgroup() -> Iterator[Path]:
    """A v1 cpu cgroup with cpu.rt_runtime_us = 0 (new groups start there)."""
    base = Path("/sys/fs/cgroup/cpu")
    if not (base / "cpu.rt_runtime_us").exists():
        pytest.skip("no cgroup v1 RT group scheduling (CONFIG_RT_GROUP_SCHED) here")
    group = base / f"edgert-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as err:
        pytest.skip(f"cannot create a cpu cgroup: {err}")
    try:
        assert (group / "cpu.rt_runtime_us").read_text().strip() == "0"
        yield group
    finally:
        group.rmdir()


def test_fifo_eperm_from_cgroup_without_rt_runtime_even_as_root(rt_less_cgroup: Path) -> None:
    r = child(APPLY_FIFO, drop=False, cgroup_procs=str(rt_less_cgroup / "cgroup.procs"))
    assert r["error"] == "PermissionDeniedError"
    assert r["errno"] == 1
    assert f"cpu cgroup '/{rt_less_cgroup.name}' has cpu.rt_runtime_us = 0" in r["message"]
    assert "RLIMIT_RTPRIO" not in r["message"]  # root has CAP_SYS_NICE: not the cause
    assert f"echo 950000 > {rt_less_cgroup}/cpu.rt_runtime_us" in r["hint"]
    assert "--cpu-rt-runtime" in r["hint"]


def test_mlockall_retries_with_the_soft_limit_raised_to_the_hard_one() -> None:
    r = child("rt.lock_memory().close()", rlimits={"RLIMIT_MEMLOCK": (0, 65536)})
    assert r["error"] == "RealtimeError"
    # EPERM at soft 0 became ENOMEM at the hard limit: the retry happened and is reported.
    assert "ENOMEM" in r["message"]
    assert "also after raising the soft limit to 64 KiB" in r["message"]
