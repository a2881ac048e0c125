"""The scheduling step of a real-time policy: set the policy and priority, and undo it."""

from __future__ import annotations

import errno
import resource
import threading
from collections.abc import Callable

from edgert.errors import PermissionDeniedError, RealtimeError
from edgert.realtime._remedy import diagnose_sched, errno_label
from edgert.realtime._sched import (
    RESET_ON_FORK,
    RaisedSoftLimit,
    SchedPolicy,
    get_thread_sched,
    policy_from_os,
    set_thread_sched,
)

__all__ = ["apply_sched"]


def apply_sched(pol: SchedPolicy, prio: int, *, reset_on_fork: bool,
                tid: int) -> tuple[str, Callable[[], str]]:
    """Switch the calling thread (native id ``tid``) to ``pol``/``prio``; return (detail, undo).

    Raises:
        PermissionDeniedError: EPERM, with the remediation in ``hint``.
        RealtimeError: Another errno.
    """
    before = get_thread_sched(0)
    raw = pol.os_value | (RESET_ON_FORK if reset_on_fork else 0)
    code = _try_sched(raw, prio)
    note = ""
    if code == errno.EPERM and pol.is_realtime:
        # As cyclictest does: an unprivileged process may raise its soft RLIMIT_RTPRIO up
        # to the hard limit; only for the call, since lowering later never needs it.
        with RaisedSoftLimit(resource.RLIMIT_RTPRIO, prio) as lim:
            if lim.raised is not None:
                code = _try_sched(raw, prio)
                if code == 0:
                    note = (f" (soft RLIMIT_RTPRIO raised {lim.raised[0]} -> "
                            f"{lim.raised[1]} for the call, then put back)")
    if code:
        diag = diagnose_sched(code, priority=prio)
        message = (f"cannot set SCHED_{pol.value.upper()} priority {prio} on thread {tid} "
                   f"({threading.current_thread().name}): {errno_label(code)}: {diag.reason}")
        if diag.permission:
            raise PermissionDeniedError(message, hint=diag.hint, errno_value=code)
        raise RealtimeError(message, hint=diag.hint)

    def undo() -> str:
        back = _sched_text(before.raw_policy, before.priority)
        try:
            set_thread_sched(tid, before.raw_policy, before.priority)
        except OSError as err:
            if err.errno != errno.EPERM or not raw & RESET_ON_FORK or before.reset_on_fork:
                raise
            # Clearing SCHED_RESET_ON_FORK needs CAP_SYS_NICE ("can be reset only if the
            # thread has the CAP_SYS_NICE capability", sched(7),
            # https://man7.org/linux/man-pages/man7/sched.7.html), which an RLIMIT_RTPRIO
            # thread lacks; lowering the policy itself is always allowed, so keep the flag.
            set_thread_sched(tid, before.raw_policy | RESET_ON_FORK, before.priority)
            return (f"scheduler back to {back}; SCHED_RESET_ON_FORK kept because clearing "
                    "it needs CAP_SYS_NICE (children forked by this thread start at "
                    "SCHED_OTHER)")
        return f"scheduler back to {back}"

    return (f"thread {tid}: {_sched_text(before.raw_policy, before.priority)} -> "
            f"{_sched_text(raw, prio)}{note}"), undo


def _try_sched(raw: int, prio: int) -> int:
    try:
        set_thread_sched(0, raw, prio)
    except OSError as err:
        return err.errno or errno.EINVAL
    return 0


def _sched_text(raw: int, prio: int) -> str:
    pol = policy_from_os(raw)
    name = f"SCHED_{pol.value.upper()}" if pol is not None else f"policy {raw & ~RESET_ON_FORK}"
    return f"{name} priority {prio}"
