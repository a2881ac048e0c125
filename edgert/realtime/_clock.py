"""Absolute-deadline sleeping on CLOCK_MONOTONIC through ctypes.

``time.sleep`` takes a relative duration, so the time spent computing it drifts the schedule.
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` sleeps until an absolute instant on the same
clock as :func:`time.monotonic_ns`, and ctypes releases the GIL for the duration of the call.
"""

from __future__ import annotations

import ctypes
import errno
import time
from collections.abc import Callable

from edgert._libc import libc
from edgert.errors import RealtimeError
from edgert.realtime._remedy import errno_label

__all__ = ["CLOCK_MONOTONIC", "TIMER_ABSTIME", "MonotonicSleeper", "SleepUntil", "monotonic_ns"]

CLOCK_MONOTONIC = 1
TIMER_ABSTIME = 1

#: ``sleep_until(deadline_ns) -> bool``: True once the deadline has passed, False when a signal
#: interrupted the sleep early (the caller checks for a stop request and sleeps again).
SleepUntil = Callable[[int], bool]

monotonic_ns: Callable[[], int] = time.monotonic_ns
"""The loop's default clock: CLOCK_MONOTONIC in nanoseconds (what ``time.monotonic_ns`` reads)."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class MonotonicSleeper:
    """``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` with a preallocated timespec.

    One instance per thread: the timespec is reused, so a call allocates nothing.
    """

    __slots__ = ("_fn", "_ref", "_ts")

    def __init__(self) -> None:
        self._fn = libc().clock_nanosleep
        self._fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._ts = _Timespec()
        self._ref = ctypes.byref(self._ts)

    def __call__(self, deadline_ns: int) -> bool:
        """Sleep until ``deadline_ns`` on CLOCK_MONOTONIC.

        Returns:
            True when the deadline was reached (at once if it has passed), False when a signal
            interrupted the sleep (EINTR).

        Raises:
            RealtimeError: clock_nanosleep failed otherwise (EINVAL: negative deadline).
        """
        ts = self._ts
        ts.tv_sec, ts.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        # clock_nanosleep returns the error number instead of setting errno.
        code = self._fn(CLOCK_MONOTONIC, TIMER_ABSTIME, self._ref, None)
        if code == 0:
            return True
        if code == errno.EINTR:
            return False
        raise RealtimeError(f"clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, {deadline_ns} ns) "
                            f"failed: {errno_label(code)}")
