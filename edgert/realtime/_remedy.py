"""Why the kernel refused a real-time setting, and the exact change that allows it.

Each ``diagnose_*`` returns a :class:`Diagnosis` (never raises) so that both the policy (which
raises it as an error) and the capability check (which prints it) say the same thing.
"""

from __future__ import annotations

import errno
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from edgert.realtime._sysinfo import (
    CAP_IPC_LOCK,
    CAP_SYS_NICE,
    CgroupRt,
    format_limit,
    has_capability,
    online_cpus,
    proc_status_kib,
    rlimit,
    rt_cgroup,
    user_name,
)

__all__ = [
    "Diagnosis",
    "cgroup_refusal",
    "diagnose_affinity",
    "diagnose_dma_latency",
    "diagnose_mlock",
    "diagnose_sched",
    "errno_label",
    "memlock_hint",
    "rtprio_hint",
]

_ROOT = Path("/")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """``reason``: why it failed; ``hint``: what to change; ``permission``: EPERM-like."""

    reason: str
    hint: str
    permission: bool


def errno_label(code: int | None) -> str:
    """``EPERM (Operation not permitted)`` style label for an errno value."""
    if code is None:
        return "unknown error"
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{name} ({os.strerror(code)})"


def _lim_number(value: int) -> float:
    return float("inf") if value == resource.RLIM_INFINITY else float(value)


def rtprio_hint(priority: int) -> str:
    """The ways to allow RT priority ``priority`` for this user."""
    user = user_name()
    return (
        f"allow RT priority {priority}: add the line '{user} - rtprio {priority}' (or "
        f"'@realtime - rtprio {priority}' for a group) to "
        f"/etc/security/limits.d/99-realtime.conf and log in again; in a systemd unit set "
        f"LimitRTPRIO={priority}; a shell whose hard limit allows it can run "
        f"`ulimit -r {priority}`; or grant CAP_SYS_NICE (systemd AmbientCapabilities=CAP_SYS_NICE, "
        f"`setcap cap_sys_nice+ep <real path of the python binary>`, Docker "
        f"--cap-add=SYS_NICE --ulimit rtprio={priority})"
    )


def memlock_hint() -> str:
    """The ways to allow mlockall for this user."""
    user = user_name()
    return (
        f"allow locking: add the line '{user} - memlock unlimited' (or '@realtime - memlock "
        f"unlimited') to /etc/security/limits.d/99-realtime.conf and log in again; in a systemd "
        f"unit set LimitMEMLOCK=infinity; a shell whose hard limit allows it can run "
        f"`ulimit -l unlimited`; or grant CAP_IPC_LOCK (systemd AmbientCapabilities=CAP_IPC_LOCK, "
        f"`setcap cap_ipc_lock+ep <real path of the python binary>`, Docker --ulimit memlock=-1 "
        f"--cap-add=IPC_LOCK)"
    )


def cgroup_refusal(group: CgroupRt) -> Diagnosis:
    """Why a cpu cgroup without RT runtime refuses FIFO/RR, and how to give it some."""
    if group.version == 1:
        file = group.file
        return Diagnosis(
            f"its cpu cgroup {group.group!r} has cpu.rt_runtime_us = {group.runtime_us} "
            f"({file}), so no thread in it may use SCHED_FIFO/RR, not even root's",
            f"give the group an RT budget: `echo 950000 > {file}` (every parent group needs at "
            f"least as much; new groups start at 0), or move the process to the root cpu group "
            f"(`echo $$ > /sys/fs/cgroup/cpu/cgroup.procs`); Docker: start dockerd with "
            f"--cpu-rt-runtime=950000 and the container with --cpu-rt-runtime=<us>; systemd "
            f"services that get their own cpu group (CPUAccounting=, CPUQuota=) start with 0",
            permission=True,
        )
    return Diagnosis(
        f"its cpu cgroup {group.group!r} (cgroup v2) is not the root group, and this kernel "
        f"has RT group scheduling (CONFIG_RT_GROUP_SCHED), under which such a group has no RT "
        f"runtime: only the root cpu group may use SCHED_FIFO/RR, not even root's",
        "run the process in the root cgroup (as root: `echo $$ > /sys/fs/cgroup/cgroup.procs`), "
        "or turn the cpu controller off for its subtree (remove 'cpu' from the parent's "
        "cgroup.subtree_control), or boot with rt_group_sched=0 (kernels that offer "
        "CONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED) or a kernel built without CONFIG_RT_GROUP_SCHED",
        permission=True,
    )


def diagnose_sched(err_code: int, *, priority: int, root: Path = _ROOT) -> Diagnosis:
    """Explain a failed ``sched_setscheduler`` to an RT policy at ``priority``."""
    if err_code != errno.EPERM:
        if err_code == errno.EINVAL:
            return Diagnosis(
                f"{errno_label(err_code)}: the kernel rejected the policy or priority {priority}",
                "RT policies take priorities 1-99; OTHER, BATCH and IDLE take 0",
                permission=False,
            )
        return Diagnosis(errno_label(err_code), "check that the thread still exists",
                         permission=False)
    reasons: list[str] = []
    hints: list[str] = []
    cap = has_capability(CAP_SYS_NICE, root)
    soft, hard = rlimit(resource.RLIMIT_RTPRIO)
    if cap is not True and _lim_number(hard) < priority:
        lacks = "lacks CAP_SYS_NICE" if cap is False else "may lack CAP_SYS_NICE"
        reasons.append(
            f"RLIMIT_RTPRIO is {format_limit(soft)} (hard {format_limit(hard)}), below "
            f"priority {priority}, and the process {lacks}"
        )
        hints.append(rtprio_hint(priority))
    group = rt_cgroup(root)
    if group is not None and group.runtime_us <= 0:
        diag = cgroup_refusal(group)
        reasons.append(diag.reason)
        hints.append(diag.hint)
    if not reasons:
        reasons.append(
            f"RLIMIT_RTPRIO ({format_limit(soft)}, hard {format_limit(hard)}) and CAP_SYS_NICE "
            f"({'present' if cap else 'absent' if cap is False else 'unknown'}) should allow it, "
            f"so a security module (SELinux, AppArmor), seccomp, the container runtime or (on "
            f"cgroup v2 with an unreadable kernel config) RT group scheduling refused"
        )
        hints.append("check the audit log (`journalctl -k | grep -i denied`) and the "
                     "container's seccomp/capability settings; " + rtprio_hint(priority))
    return Diagnosis("; ".join(reasons), " / ".join(hints), permission=True)


def diagnose_mlock(err_code: int, root: Path = _ROOT) -> Diagnosis:
    """Explain a failed ``mlockall``."""
    soft, hard = rlimit(resource.RLIMIT_MEMLOCK)
    cap = has_capability(CAP_IPC_LOCK, root)
    lacks = "lacks CAP_IPC_LOCK" if cap is False else "may lack CAP_IPC_LOCK"
    limits = (f"RLIMIT_MEMLOCK is {format_limit(soft, unit='bytes')} "
              f"(hard {format_limit(hard, unit='bytes')})")
    if err_code == errno.EPERM:
        return Diagnosis(f"{limits} and the process {lacks}", memlock_hint(), permission=True)
    if err_code == errno.ENOMEM:
        size = proc_status_kib("VmSize", root)
        mapped = f"{size / 1024:.0f} MiB" if size is not None else "more"
        return Diagnosis(
            f"{limits}, but the process maps {mapped} (mlockall must fit the whole address "
            f"space) and it {lacks}",
            memlock_hint(),
            permission=False,
        )
    if err_code == errno.EAGAIN:
        return Diagnosis(f"{errno_label(err_code)}: some memory could not be locked",
                         "check free memory (locked pages cannot be swapped)", permission=False)
    return Diagnosis(errno_label(err_code), "check the mlockall flags", permission=False)


def diagnose_affinity(err_code: int, cpus: frozenset[int], root: Path = _ROOT) -> Diagnosis:
    """Explain a failed ``sched_setaffinity``."""
    online = online_cpus(root)
    online_text = ",".join(map(str, sorted(online))) if online is not None else "unknown"
    if err_code == errno.EINVAL:
        return Diagnosis(
            f"none of CPUs {sorted(cpus)} is online and allowed for this thread "
            f"(online: {online_text})",
            "pick CPUs that are online and inside the process's cpuset (taskset, "
            "`docker --cpuset-cpus`, systemd AllowedCPUs=)",
            permission=False,
        )
    if err_code == errno.EPERM:
        return Diagnosis(errno_label(err_code) + ": the thread belongs to another user",
                         "set affinity from inside the thread itself", permission=True)
    return Diagnosis(errno_label(err_code), "check that the thread still exists",
                     permission=False)


def diagnose_dma_latency(err_code: int) -> Diagnosis:
    """Explain a failure to open or write /dev/cpu_dma_latency; the reason names the errno once."""
    if err_code in (errno.EACCES, errno.EPERM):
        return Diagnosis(
            f"{errno_label(err_code)}: /dev/cpu_dma_latency is writable by root only",
            'run as root, or add a udev rule: KERNEL=="cpu_dma_latency", GROUP="realtime", '
            'MODE="0660" (/etc/udev/rules.d/99-cpu-dma-latency.rules), or leave '
            "cpu_dma_latency_us unset",
            permission=True,
        )
    if err_code == errno.ENOENT:
        return Diagnosis(f"{errno_label(err_code)}: /dev/cpu_dma_latency does not exist "
                         "(kernel without PM QoS)",
                         "leave cpu_dma_latency_us unset", permission=False)
    return Diagnosis(errno_label(err_code), "leave cpu_dma_latency_us unset", permission=False)
