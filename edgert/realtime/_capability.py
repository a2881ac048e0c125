"""What real-time settings would succeed on this machine, and why not (for ``edgert doctor``)."""

from __future__ import annotations

import errno
import gc
import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert._compat import StrEnum
from edgert._fileio import MAX_SYSFS_BYTES, parse_int, read_file
from edgert.realtime._remedy import (
    cgroup_refusal,
    diagnose_sched,
    errno_label,
    memlock_hint,
    rtprio_hint,
)
from edgert.realtime._sched import RaisedSoftLimit, SchedPolicy, set_thread_sched
from edgert.realtime._sysinfo import (
    CAP_IPC_LOCK,
    CAP_SYS_NICE,
    format_limit,
    has_capability,
    isolated_cpus,
    kernel_is_preempt_rt,
    online_cpus,
    proc_status_kib,
    rlimit,
    rt_cgroup,
)

__all__ = ["CapabilityCheck", "CapabilityVerdict", "RealtimeCapabilities", "realtime_capabilities"]


class CapabilityVerdict(StrEnum):
    """How one capability stands: ``ok``, ``warn`` (works, with a caveat), ``fail``, ``unknown``."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class CapabilityCheck:
    """One line of the capability check.

    Attributes:
        name: ``sched_fifo``, ``rt_priority_limit``, ``rt_cgroup``, ``rt_throttling``,
            ``memory_lock``, ``cpu_isolation``, ``cpu_dma_latency``, ``rt_kernel``, ``python``.
        verdict: The outcome.
        detail: What was found.
        hint: What to change, for ``warn`` and ``fail``.
    """

    name: str
    verdict: CapabilityVerdict
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"name": self.name, "verdict": self.verdict.value, "detail": self.detail,
                "hint": self.hint}


@dataclass(frozen=True, kw_only=True, slots=True)
class RealtimeCapabilities:
    """The result of :func:`realtime_capabilities`.

    Attributes:
        priority: The RT priority the scheduling checks were made for.
        checks: One entry per capability, in a stable order.
    """

    priority: int
    checks: tuple[CapabilityCheck, ...]

    def __getitem__(self, name: str) -> CapabilityCheck:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(c.verdict is not CapabilityVerdict.FAIL for c in self.checks)

    @property
    def can_schedule_fifo(self) -> bool:
        """Whether SCHED_FIFO at :attr:`priority` was granted to a probe thread."""
        return self["sched_fifo"].verdict is CapabilityVerdict.OK

    @property
    def can_lock_memory(self) -> bool:
        """Whether mlockall(MCL_CURRENT|MCL_FUTURE) would succeed now."""
        return self["memory_lock"].verdict is CapabilityVerdict.OK

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"priority": self.priority, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks]}

    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = []
        for c in self.checks:
            lines.append(f"{c.verdict.value.upper():7} {c.name:{width}}  {c.detail}")
            if c.hint and c.verdict is not CapabilityVerdict.OK:
                lines.append(f"{'':7} {'':{width}}  hint: {c.hint}")
        return "\n".join(lines)


_OK, _WARN, _FAIL = CapabilityVerdict.OK, CapabilityVerdict.WARN, CapabilityVerdict.FAIL


def _probe_fifo(priority: int) -> tuple[int, str]:
    """Try SCHED_FIFO in a throwaway thread that does nothing else, the way
    :meth:`RealtimePolicy.apply` would (raising the soft RLIMIT_RTPRIO on EPERM).

    Returns:
        ``(0 or errno, note about the rlimit)``.
    """
    result: list[tuple[int, str]] = []

    def attempt() -> int:
        try:
            set_thread_sched(0, SchedPolicy.FIFO.os_value, priority)
        except OSError as err:
            return err.errno or errno.EINVAL
        return 0

    def body() -> None:
        code = attempt()
        note = ""
        if code == errno.EPERM:
            with RaisedSoftLimit(resource.RLIMIT_RTPRIO, priority) as lim:
                if lim.raised is not None:
                    code = attempt()
                    note = (f" after raising the soft RLIMIT_RTPRIO {lim.raised[0]} -> "
                            f"{lim.raised[1]} (edgert does this when applying a policy)")
        result.append((code, note))

    probe = threading.Thread(target=body, name="edgert-rt-probe", daemon=True)
    probe.start()
    probe.join()
    return result[0] if result else (errno.EINVAL, "")


def _check_fifo(priority: int, root: Path, probe: bool) -> CapabilityCheck:
    if not probe:
        return CapabilityCheck(name="sched_fifo", verdict=CapabilityVerdict.UNKNOWN,
                               detail="not probed")
    code, note = _probe_fifo(priority)
    if code == 0:
        return CapabilityCheck(name="sched_fifo", verdict=_OK,
                               detail=f"a probe thread got SCHED_FIFO priority {priority}{note}")
    diag = diagnose_sched(code, priority=priority, root=root)
    return CapabilityCheck(
        name="sched_fifo", verdict=_FAIL,
        detail=f"SCHED_FIFO priority {priority} refused: {errno_label(code)}: {diag.reason}",
        hint=diag.hint,
    )


def _check_priority_limit(priority: int, root: Path) -> CapabilityCheck:
    soft, hard = rlimit(resource.RLIMIT_RTPRIO)
    cap = has_capability(CAP_SYS_NICE, root)
    limits = f"RLIMIT_RTPRIO soft {format_limit(soft)}, hard {format_limit(hard)}"
    if cap:
        return CapabilityCheck(name="rt_priority_limit", verdict=_OK,
                               detail=f"CAP_SYS_NICE: any priority up to 99 ({limits})")
    top = 99 if hard == resource.RLIM_INFINITY else min(hard, 99)
    if top >= priority:
        return CapabilityCheck(name="rt_priority_limit", verdict=_OK,
                               detail=f"up to priority {top} ({limits}; no CAP_SYS_NICE)")
    if cap is None:  # the limit alone says no, but CAP_SYS_NICE would lift it: cannot judge
        return CapabilityCheck(
            name="rt_priority_limit", verdict=CapabilityVerdict.UNKNOWN,
            detail=f"CAP_SYS_NICE is {_unreadable('proc/self/status', root)}, so the limit "
                   f"cannot be judged ({limits} allows at most priority {top})")
    return CapabilityCheck(name="rt_priority_limit", verdict=_FAIL,
                           detail=f"at most priority {top} without CAP_SYS_NICE ({limits})",
                           hint=rtprio_hint(priority))


def _check_cgroup(root: Path) -> CapabilityCheck:
    group = rt_cgroup(root)
    if group is None:
        return CapabilityCheck(name="rt_cgroup", verdict=_OK,
                               detail="no RT group scheduling budget limits this process")
    if group.runtime_us <= 0:
        diag = cgroup_refusal(group)
        return CapabilityCheck(name="rt_cgroup", verdict=_FAIL,
                               detail=f"FIFO/RR refused: {diag.reason}", hint=diag.hint)
    return CapabilityCheck(name="rt_cgroup", verdict=_OK,
                           detail=f"cgroup {group.group!r} has {group.runtime_us} us of RT time "
                                  f"per period ({group.file})")


def _check_throttling(root: Path) -> CapabilityCheck:
    # Bounded, non-blocking read; another OSError becomes an "unknown" verdict in _guarded.
    try:
        raw = read_file(root / "proc/sys/kernel/sched_rt_runtime_us", max_bytes=MAX_SYSFS_BYTES)
    except FileNotFoundError:  # containers may hide /proc/sys: a fact, not a failed check
        return CapabilityCheck(
            name="rt_throttling", verdict=CapabilityVerdict.UNKNOWN,
            detail="/proc/sys/kernel/sched_rt_runtime_us is not exposed here (containers can "
                   "hide /proc/sys): RT throttling cannot be read")
    runtime = parse_int(raw, lo=-1)
    if runtime is None:
        return CapabilityCheck(
            name="rt_throttling", verdict=CapabilityVerdict.UNKNOWN,
            detail=f"/proc/sys/kernel/sched_rt_runtime_us holds {raw[:40]!r}, not a number")
    if runtime < 0:
        return CapabilityCheck(
            name="rt_throttling", verdict=_WARN,
            detail="RT throttling is off (sched_rt_runtime_us = -1): a runaway FIFO thread can "
                   "starve everything else on its CPU",
            hint="fine for a tested loop on an isolated CPU; otherwise restore 950000")
    if runtime == 0:
        return CapabilityCheck(name="rt_throttling", verdict=_FAIL,
                               detail="sched_rt_runtime_us = 0: RT threads never get to run",
                               hint="echo 950000 > /proc/sys/kernel/sched_rt_runtime_us")
    return CapabilityCheck(name="rt_throttling", verdict=_OK,
                           detail=f"RT threads may use {runtime} us of every second "
                                  "(the rest is kept for other tasks)")


def _check_memlock(root: Path) -> CapabilityCheck:
    soft, hard = rlimit(resource.RLIMIT_MEMLOCK)
    cap = has_capability(CAP_IPC_LOCK, root)
    limits = (f"RLIMIT_MEMLOCK soft {format_limit(soft, unit='bytes')}, "
              f"hard {format_limit(hard, unit='bytes')}")
    if cap:
        return CapabilityCheck(name="memory_lock", verdict=_OK,
                               detail=f"CAP_IPC_LOCK: no size limit ({limits})")
    if hard == resource.RLIM_INFINITY:
        return CapabilityCheck(name="memory_lock", verdict=_OK, detail=limits)
    if cap is None:  # CAP_IPC_LOCK would lift the limit: cannot judge without it
        return CapabilityCheck(
            name="memory_lock", verdict=CapabilityVerdict.UNKNOWN,
            detail=f"CAP_IPC_LOCK is {_unreadable('proc/self/status', root)}, so the limit "
                   f"cannot be judged ({limits})")
    size_kib = proc_status_kib("VmSize", root)
    if hard == 0:
        return CapabilityCheck(name="memory_lock", verdict=_FAIL,
                               detail=f"mlockall would fail with EPERM: {limits}, no CAP_IPC_LOCK",
                               hint=memlock_hint())
    if size_kib is not None and size_kib * 1024 > hard:
        return CapabilityCheck(
            name="memory_lock", verdict=_FAIL,
            detail=f"mlockall would fail with ENOMEM: the process maps {size_kib // 1024} MiB "
                   f"but {limits}, no CAP_IPC_LOCK", hint=memlock_hint())
    return CapabilityCheck(
        name="memory_lock", verdict=_WARN,
        detail=f"mlockall fits today ({limits}) but later allocations beyond the limit will fail "
               "while MCL_FUTURE is on", hint=memlock_hint())


def _check_isolation(root: Path) -> CapabilityCheck:
    isolated, nohz = isolated_cpus(root)
    online = online_cpus(root)
    allowed = sorted(os.sched_getaffinity(0)) if root == Path("/") else None
    detail = (f"online CPUs {_cpus(online)}; allowed here {allowed if allowed else 'n/a'}; "
              f"isolcpus {_cpus(isolated)}; nohz_full {_cpus(nohz)}")
    if isolated:
        return CapabilityCheck(name="cpu_isolation", verdict=_OK, detail=detail)
    if isolated is None and nohz is None and root != Path("/"):
        return CapabilityCheck(
            name="cpu_isolation", verdict=CapabilityVerdict.UNKNOWN,
            detail=f"{detail}: isolcpus and nohz_full are not readable in this tree")
    return CapabilityCheck(
        name="cpu_isolation", verdict=_WARN, detail=detail,
        hint="for the lowest jitter, reserve a CPU for the loop: boot with isolcpus=N "
             "nohz_full=N rcu_nocbs=N irqaffinity=<others> (or a cpuset), and pin the loop there")


def _cpus(cpus: frozenset[int] | None) -> str:
    if cpus is None:
        return "n/a"
    return ",".join(map(str, sorted(cpus))) or "none"


def _check_dma(root: Path) -> CapabilityCheck:
    dev = root / "dev/cpu_dma_latency"
    if root != Path("/") and not (root / "dev").is_dir():
        return CapabilityCheck(name="cpu_dma_latency", verdict=CapabilityVerdict.UNKNOWN,
                               detail=f"not readable in this tree (it has no {root / 'dev'})")
    if not dev.exists():
        return CapabilityCheck(name="cpu_dma_latency", verdict=_WARN,
                               detail=f"{dev} does not exist: C-state exit latency cannot be "
                                      "bounded from user space",
                               hint="leave cpu_dma_latency_us unset")
    if os.access(dev, os.W_OK):
        return CapabilityCheck(name="cpu_dma_latency", verdict=_OK,
                               detail=f"{dev} is writable (cpu_dma_latency_us works)")
    return CapabilityCheck(name="cpu_dma_latency", verdict=_WARN,
                           detail=f"{dev} is not writable by this user",
                           hint='add a udev rule: KERNEL=="cpu_dma_latency", GROUP="realtime", '
                                'MODE="0660"')


def _check_kernel(root: Path) -> CapabilityCheck:
    is_rt, how = kernel_is_preempt_rt(root)
    if is_rt:
        return CapabilityCheck(name="rt_kernel", verdict=_OK, detail=f"PREEMPT_RT ({how})")
    if is_rt is None:
        return CapabilityCheck(name="rt_kernel", verdict=CapabilityVerdict.UNKNOWN,
                               detail=f"the kernel version is {how}")
    return CapabilityCheck(
        name="rt_kernel", verdict=_WARN,
        detail=f"not a PREEMPT_RT kernel ({how}): expect wake-up tails of 100s of us to ms",
        hint="install a PREEMPT_RT kernel (Jetson: the RT kernel from the BSP; Ubuntu Pro: "
             "`pro enable realtime-kernel`) for bounded latency")


def _unreadable(rel: str, root: Path) -> str:
    """How to say that ``rel`` (a path under ``root``) could not be read."""
    if root == Path("/"):
        return f"not readable (/{rel})"
    return f"not readable in this tree ({root / rel} is missing or unreadable)"


def _check_python() -> CapabilityCheck:
    interval_ms = sys.getswitchinterval() * 1000
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    detail = (f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, switch interval "
              f"{interval_ms:g} ms, gc.freeze available, gc {'on' if gc.isenabled() else 'off'}")
    if gil and interval_ms > 1:
        return CapabilityCheck(
            name="python", verdict=_WARN, detail=detail,
            hint="another thread running bytecode can delay the RT thread by a switch interval; "
                 "keep other threads idle, or sys.setswitchinterval(0.0005), or use a process")
    return CapabilityCheck(name="python", verdict=_OK, detail=detail)


def _guarded(name: str, fn: Callable[[], CapabilityCheck]) -> CapabilityCheck:
    try:
        return fn()
    except Exception as err:  # the doctor must always get an answer
        return CapabilityCheck(name=name, verdict=CapabilityVerdict.UNKNOWN,
                               detail=f"check failed: {type(err).__name__}: {err}")


def realtime_capabilities(
    *, priority: int = 80, root: Path | str = Path("/"), probe: bool = True
) -> RealtimeCapabilities:
    """Check which real-time settings would succeed here, and why not. Never raises.

    Args:
        priority: The SCHED_FIFO priority to check for.
        root: Where procfs/sysfs live (tests pass a fake tree). Resource limits are always
            this process's own; capabilities and the kernel version are read from the tree,
            and a fact the tree does not hold reads as ``unknown`` ("not readable in this
            tree"), never as a failure.
        probe: Try SCHED_FIFO for real in a short-lived helper thread (it runs nothing and
            exits). Nothing else is changed; mlockall is predicted, not attempted.

    Returns:
        One :class:`CapabilityCheck` per capability, each with a verdict, the detail found and a
        remediation hint.
    """
    root = Path(root)
    try:
        priority = int(priority)
    except (TypeError, ValueError):
        priority = 80
    priority = min(max(priority, 1), 99)
    probe = probe and root == Path("/")
    checks = (
        _guarded("sched_fifo", lambda: _check_fifo(priority, root, probe)),
        _guarded("rt_priority_limit", lambda: _check_priority_limit(priority, root)),
        _guarded("rt_cgroup", lambda: _check_cgroup(root)),
        _guarded("rt_throttling", lambda: _check_throttling(root)),
        _guarded("memory_lock", lambda: _check_memlock(root)),
        _guarded("cpu_isolation", lambda: _check_isolation(root)),
        _guarded("cpu_dma_latency", lambda: _check_dma(root)),
        _guarded("rt_kernel", lambda: _check_kernel(root)),
        _guarded("python", _check_python),
    )
    return RealtimeCapabilities(priority=priority, checks=checks)
