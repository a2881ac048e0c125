"""Per-thread scheduling policy and CPU affinity, addressed by native thread id.

Linux schedules threads, not processes: ``sched_setscheduler(0, ...)`` and
``sched_setaffinity(0, ...)`` change the *calling thread* only, and another thread is addressed
by its kernel thread id (``threading.get_native_id()`` / ``Thread.native_id``), never by
``threading.get_ident()`` (a pthread_t address that means nothing to the kernel).
"""

from __future__ import annotations

import ctypes
import os
import resource
import threading
from dataclasses import dataclass

from edgert._compat import StrEnum
from edgert._libc import libc

__all__ = [
    "RESET_ON_FORK",
    "RaisedSoftLimit",
    "SchedPolicy",
    "ThreadSched",
    "get_affinity",
    "get_thread_sched",
    "get_timer_slack",
    "policy_from_os",
    "set_affinity",
    "set_thread_sched",
    "set_timer_slack",
]

RESET_ON_FORK: int = getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)


class SchedPolicy(StrEnum):
    """A Linux scheduling policy.

    ``FIFO`` and ``RR`` are real-time (priorities 1-99; a runnable RT thread always runs before
    any ``OTHER`` thread). ``RR`` adds a time slice among threads of equal priority. ``OTHER`` is
    the default time-sharing policy; ``BATCH`` and ``IDLE`` are for background work.
    SCHED_DEADLINE is deliberately absent (see docs/realtime.md).
    """

    OTHER = "other"
    FIFO = "fifo"
    RR = "rr"
    BATCH = "batch"
    IDLE = "idle"

    @property
    def os_value(self) -> int:
        """The ``os.SCHED_*`` constant."""
        return _TO_OS[self]

    @property
    def is_realtime(self) -> bool:
        """Whether this policy takes a 1-99 priority."""
        return self in (SchedPolicy.FIFO, SchedPolicy.RR)


_TO_OS: dict[SchedPolicy, int] = {
    SchedPolicy.OTHER: os.SCHED_OTHER,
    SchedPolicy.FIFO: os.SCHED_FIFO,
    SchedPolicy.RR: os.SCHED_RR,
    SchedPolicy.BATCH: getattr(os, "SCHED_BATCH", 3),
    SchedPolicy.IDLE: getattr(os, "SCHED_IDLE", 5),
}
_FROM_OS = {v: k for k, v in _TO_OS.items()}


def policy_from_os(value: int) -> SchedPolicy | None:
    """Map an ``os.SCHED_*`` value (with or without SCHED_RESET_ON_FORK) to a policy."""
    return _FROM_OS.get(value & ~RESET_ON_FORK)


@dataclass(frozen=True, slots=True)
class ThreadSched:
    """A thread's raw scheduling state, as needed to put it back exactly.

    Attributes:
        raw_policy: ``sched_getscheduler`` result, including the SCHED_RESET_ON_FORK bit.
        priority: Its static RT priority (0 for non-RT policies).
    """

    raw_policy: int
    priority: int

    @property
    def policy(self) -> SchedPolicy | None:
        """The policy, or ``None`` for one edgert does not name (e.g. SCHED_DEADLINE)."""
        return policy_from_os(self.raw_policy)

    @property
    def reset_on_fork(self) -> bool:
        """Whether children forked by the thread start back at SCHED_OTHER."""
        return bool(self.raw_policy & RESET_ON_FORK)


def get_thread_sched(tid: int = 0) -> ThreadSched:
    """Read a thread's policy and priority (0 = the calling thread).

    Raises:
        OSError: ESRCH when no such thread exists.
    """
    return ThreadSched(os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)


def set_thread_sched(tid: int, raw_policy: int, priority: int) -> None:
    """``sched_setscheduler`` on one thread (0 = the calling thread).

    Raises:
        OSError: EPERM, EINVAL or ESRCH from the kernel.
    """
    os.sched_setscheduler(tid, raw_policy, os.sched_param(priority))


def get_affinity(tid: int = 0) -> frozenset[int]:
    """A thread's CPU affinity mask (0 = the calling thread).

    Raises:
        OSError: ESRCH when no such thread exists.
    """
    return frozenset(os.sched_getaffinity(tid))


def set_affinity(tid: int, cpus: frozenset[int]) -> None:
    """Pin one thread to ``cpus`` (0 = the calling thread).

    Raises:
        OSError: EINVAL when none of ``cpus`` is online and allowed by the cpuset.
    """
    os.sched_setaffinity(tid, cpus)


_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


def _prctl(option: int, arg: int) -> int:
    fn = libc().prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    result = int(fn(option, arg, 0, 0, 0))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def get_timer_slack() -> int:
    """The calling thread's timer slack in ns (how late the kernel may fire its timers).

    Raises:
        OSError: prctl failed.
    """
    return _prctl(_PR_GET_TIMERSLACK, 0)


def set_timer_slack(slack_ns: int) -> None:
    """Set the calling thread's timer slack (0 means "back to the thread's default").

    Raises:
        OSError: prctl failed.
    """
    _prctl(_PR_SET_TIMERSLACK, slack_ns)


_RLIMIT_LOCK = threading.Lock()


def _as_number(limit: int) -> float:
    return float("inf") if limit == resource.RLIM_INFINITY else float(limit)


class RaisedSoftLimit:
    """Temporarily raise a soft rlimit towards its hard limit, as cyclictest does on EPERM.

    ``wanted`` may be ``resource.RLIM_INFINITY`` (raise to the hard limit). Raising the soft limit
    up to the hard one needs no privilege. ``raised`` is the
    ``(old_soft, new_soft)`` pair when the limit changed, else ``None``; ``keep()`` skips putting
    the old value back on exit (the caller then owns restoring it).
    """

    def __init__(self, which: int, wanted: int) -> None:
        self._which = which
        self._wanted = wanted
        self.raised: tuple[int, int] | None = None
        self._keep = False

    def __enter__(self) -> RaisedSoftLimit:
        _RLIMIT_LOCK.acquire()
        try:
            soft, hard = resource.getrlimit(self._which)
            want = _as_number(self._wanted)
            if _as_number(soft) < min(want, _as_number(hard)):
                new = self._wanted if want <= _as_number(hard) else hard
                resource.setrlimit(self._which, (new, hard))
                self.raised = (soft, new)
        except BaseException:
            _RLIMIT_LOCK.release()
            raise
        return self

    def keep(self) -> None:
        """Leave the raised soft limit in place when the block ends."""
        self._keep = True

    def __exit__(self, *exc: object) -> None:
        try:
            if self.raised is not None and not self._keep:
                _soft, hard = resource.getrlimit(self._which)
                resource.setrlimit(self._which, (self.raised[0], hard))
        finally:
            _RLIMIT_LOCK.release()
