"""A fake clock and sleeper for testing code built on :class:`edgert.realtime.PeriodicLoop`.

Example:
    >>> from edgert.realtime import PeriodicLoop
    >>> clock = FakeClock()
    >>> loop = PeriodicLoop(period_ns=1000, clock=clock, sleep_until=clock.sleep_until)
    >>> report = loop.run(lambda tick: clock.advance(1500 if tick.iteration == 2 else 100),
    ...                   iterations=5)
    >>> report.deadline_misses, report.skipped_periods
    (1, 1)
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FakeClock"]


class FakeClock:
    """Deterministic nanosecond clock whose sleeper jumps straight to the deadline.

    Args:
        start_ns: The initial reading.
        wake_latency_ns: Added to the clock after every sleep that reaches its deadline: an int,
            or a callable ``(deadline_ns) -> int`` for per-wake-up latencies.

    Attributes:
        now_ns: The current reading.
        sleeps: Every deadline passed to :meth:`sleep_until`, in order.
        interrupt_next: When > 0, that many following sleeps return False (as if EINTR) without
            advancing time; ``on_interrupt`` runs at each.
    """

    def __init__(self, start_ns: int = 1_000_000_000,
                 wake_latency_ns: int | Callable[[int], int] = 0) -> None:
        self.now_ns = start_ns
        self.wake_latency_ns = wake_latency_ns
        self.sleeps: list[int] = []
        self.interrupt_next = 0
        self.on_interrupt: Callable[[], None] | None = None

    def __call__(self) -> int:
        """The current reading in nanoseconds (the clock interface of :class:`PeriodicLoop`)."""
        return self.now_ns

    def advance(self, ns: int) -> None:
        """Move time forward by ``ns`` (a step's simulated duration)."""
        if ns < 0:
            raise ValueError("time does not go backwards")
        self.now_ns += ns

    def sleep_until(self, deadline_ns: int) -> bool:
        """Jump to ``deadline_ns`` (if it is in the future) plus the wake-up latency."""
        self.sleeps.append(deadline_ns)
        if self.interrupt_next > 0:
            self.interrupt_next -= 1
            if self.on_interrupt is not None:
                self.on_interrupt()
            return False
        self.now_ns = max(self.now_ns, deadline_ns)
        lat = self.wake_latency_ns
        self.now_ns += lat(deadline_ns) if callable(lat) else lat
        return True
