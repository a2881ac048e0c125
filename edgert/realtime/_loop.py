"""PeriodicLoop: absolute-deadline periodic execution with deadline accounting."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import os
import sys
import threading
import weakref
from collections.abc import Callable, Generator, Iterator

from edgert.errors import ConcurrentUseError, InvalidArgumentError
from edgert.realtime._clock import MonotonicSleeper, SleepUntil, monotonic_ns
from edgert.realtime._gc import GcCounter
from edgert.realtime._loopreport import LoopReport, OverrunPolicy, Tick
from edgert.realtime._policy import ActivePolicy, PolicyReport, RealtimePolicy
from edgert.realtime._threadstat import ThreadCounters, thread_counters

__all__ = ["LoopReport", "OverrunPolicy", "PeriodicLoop", "Tick"]

_ZERO = ThreadCounters(0, 0, 0)
_LOOPS: weakref.WeakSet[PeriodicLoop] = weakref.WeakSet()


def _iterations_arg(iterations: object) -> int | None:
    """``iterations`` as an int (or None); a float such as 2.5 would never be reached."""
    if iterations is None:
        return None
    hint = "give a whole number of iterations, e.g. round(duration_s / period_s), or None"
    if isinstance(iterations, bool):
        raise InvalidArgumentError(f"iterations must be an int or None, got {iterations!r}",
                                   hint=hint)
    try:
        count = operator.index(iterations)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(f"iterations must be an int or None, got {iterations!r}",
                                   hint=hint) from None
    if count < 0:
        raise InvalidArgumentError(f"iterations must be >= 0, got {count}", hint=hint)
    return count


def _period_ns(period_s: float | None, period_ns: int | None) -> int:
    """The period in ns; its errors name the argument and unit the caller used."""
    value: object = period_s if period_s is not None else period_ns
    name, unit = ("period_s", "seconds") if period_s is not None else ("period_ns", "nanoseconds")
    hint = "e.g. PeriodicLoop(0.002) for 500 Hz (period_s = 1 / rate in Hz)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number of {unit}, got {value!r}",
                                   hint=hint)
    if name == "period_ns" and not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"period_ns must be an int number of nanoseconds, got "
                                   f"{value!r}", hint="or give period_s in seconds (a float)")
    if not math.isfinite(float(value)) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive, finite number of {unit}, got "
                                   f"{value!r}", hint=hint)
    period = round(float(value) * 1e9) if name == "period_s" else round(float(value))
    if period <= 0:
        raise InvalidArgumentError(f"{name}={value!r} is shorter than 1 ns", hint=hint)
    return period


class PeriodicLoop:
    """Run a step every period on absolute deadlines, measuring wake-up latency and step time.

    The loop sleeps to absolute CLOCK_MONOTONIC deadlines (``clock_nanosleep`` with
    TIMER_ABSTIME, GIL released), so a step's duration never drifts the schedule. It runs in the
    thread that calls :meth:`run` or iterates it, applying ``policy`` to that thread for the
    duration and restoring it afterwards, even when a step raises.

    Args:
        period_s: The period in seconds (or give ``period_ns``).
        period_ns: The period in nanoseconds.
        policy: Real-time settings for the loop thread while it runs.
        overrun: What to do after a step that ended past the next deadline.
        capacity: Samples kept for percentiles (wake and step; 16 bytes per sample in all).
        clock: Nanosecond clock; must be the clock ``sleep_until`` sleeps on. Tests inject a
            fake (see :mod:`edgert.testing.realtime`).
        sleep_until: ``sleep_until(deadline_ns) -> bool``: False when interrupted by a signal.

    Raises:
        InvalidArgumentError: A non-positive period, both or neither period given, or an
            unknown overrun policy.

    Example:
        >>> loop = PeriodicLoop(0.001, policy=RealtimePolicy(priority=80))  # doctest: +SKIP
        >>> report = loop.run(lambda tick: control_step(), iterations=5000)  # doctest: +SKIP
        >>> report.wake.p99_us, report.deadline_misses  # doctest: +SKIP
    """

    def __init__(
        self,
        period_s: float | None = None,
        *,
        period_ns: int | None = None,
        policy: RealtimePolicy | None = None,
        overrun: OverrunPolicy | str = OverrunPolicy.SKIP,
        capacity: int = 65_536,
        clock: Callable[[], int] | None = None,
        sleep_until: SleepUntil | None = None,
    ) -> None:
        if (period_s is None) == (period_ns is None):
            raise InvalidArgumentError("give exactly one of period_s and period_ns")
        period = _period_ns(period_s, period_ns)
        try:
            self._overrun = OverrunPolicy(overrun)
        except ValueError:
            raise InvalidArgumentError(
                f"unknown overrun policy {overrun!r}; choose one of "
                f"{[o.value for o in OverrunPolicy]}") from None
        self._period = period
        self._policy = policy
        self._clock = clock if clock is not None else monotonic_ns
        self._sleep_until = sleep_until
        # LatencyStats keeps its ring in numpy: imported here, not at `import edgert.realtime`,
        # so a process that never makes a loop never loads numpy (DESIGN.md, import targets).
        from edgert.stats import LatencyStats

        self.wake_stats = LatencyStats(capacity, thresholds_ns=[period // 10, period])
        """Wake-up latencies of the current/last run (counts over 10 % and 100 % of the period)."""
        self.step_stats = LatencyStats(capacity, thresholds_ns=[period])
        """Step durations of the current/last run (count over the period)."""
        self._stop = False
        self._busy = threading.Lock()
        self._runner_ident = 0  # threading.get_ident() of the thread running it
        self._reset_counters()
        self._stopped_by = "not_started"
        _LOOPS.add(self)

    def _reset_counters(self) -> None:
        self._iterations = 0
        self._misses = 0
        self._skipped = 0
        self._start_ns = 0
        self._end_ns = 0
        self._gc = GcCounter()
        self._tid = 0
        self._ru0: ThreadCounters | None = _ZERO
        self._ru1: ThreadCounters | None = _ZERO
        self._measuring = False  # between the two readings: report() reads live counters
        self._stopped_by = "running"
        self._active: ActivePolicy | None = None
        self._policy_report: PolicyReport | None = None

    @property
    def period_ns(self) -> int:
        """The period in nanoseconds."""
        return self._period

    @property
    def overrun(self) -> OverrunPolicy:
        """The overrun policy."""
        return self._overrun

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._busy.locked()

    def stop(self) -> None:
        """Ask the loop to stop; safe from any thread and from a signal handler.

        The loop finishes the step in progress (if any) and returns at its next deadline, or at
        once when a signal interrupted its sleep. A stop requested before the run starts (a
        SIGTERM during start-up) is kept: that run returns at once, without applying the policy
        or running a step, with ``stopped_by="stop"``. Each run consumes the request, so the
        next run starts normally.
        """
        self._stop = True

    def _stop_requested(self) -> bool:
        # A call, not an attribute read, so type checkers do not assume the flag cannot change
        # while the loop sleeps (another thread or a signal handler sets it).
        return self._stop

    def run(self, step: Callable[[Tick], object] | None = None, *,
            iterations: int | None = None) -> LoopReport:
        """Call ``step(tick)`` every period until ``iterations`` ran or :meth:`stop` was called.

        ``step=None`` runs an empty loop (pure wake-up latency, as cyclictest measures).

        Raises:
            ConcurrentUseError: The loop is already running.
            PermissionDeniedError: The policy was refused (strict policy).
            RealtimeError: The policy failed or the sleep failed.
            InvalidArgumentError: ``iterations`` is not a non-negative int or None.
            Exception: Whatever ``step`` raised; the loop stops and the policy is restored first.
        """
        ticks = self._cycle(_iterations_arg(iterations))
        try:
            with contextlib.closing(ticks):
                if step is None:
                    for _tick in ticks:
                        pass
                else:
                    for tick in ticks:
                        step(tick)
        except BaseException:
            self._stopped_by = "exception"
            raise
        return self.report()

    def ticks(self, iterations: int | None = None) -> Generator[Tick, None, None]:
        """Iterate: each ``next()`` sleeps to the next deadline; the body is the step.

        The step is timed from the wake-up to the request for the next tick. The policy is
        restored when the generator finishes or is closed (``break`` closes it at once in
        CPython). Iterate inside ``with contextlib.closing(loop.ticks(n)) as ticks:``: then an
        exception in the body is reported as ``stopped_by="exception"``; in a bare ``for`` loop
        CPython closes the generator the same way as for a ``break``, so it reads ``closed``.

        Raises:
            InvalidArgumentError: ``iterations`` is not a non-negative int or None (at once).
            ConcurrentUseError: The loop is already running.
        """
        return self._cycle(_iterations_arg(iterations))

    def __iter__(self) -> Iterator[Tick]:
        return self._cycle(None)

    def _cycle(self, iterations: int | None) -> Generator[Tick, None, None]:
        busy = self._busy  # this run's (a forked child makes a new one: see the end)
        if not busy.acquire(blocking=False):
            raise ConcurrentUseError("this PeriodicLoop is already running",
                                     hint="create one loop per thread")
        self._runner_ident = threading.get_ident()
        try:
            yield from self._body(iterations)
        finally:
            busy.release()

    def _body(self, iterations: int | None) -> Generator[Tick, None, None]:
        self._reset_counters()
        self.wake_stats.reset()
        self.step_stats.reset()
        self._tid = threading.get_native_id()
        if self._stop_requested():
            # stop() before the run: return at once, before the policy touches the thread.
            self._stop = False
            self._stopped_by = "stop"
            return
        sleep_until = self._sleep_until or MonotonicSleeper()
        clock = self._clock
        period = self._period
        policy = self._overrun
        wake_record = self.wake_stats.record
        step_record = self.step_stats.record
        limit = -1 if iterations is None else iterations
        # The exception being handled where the loop started: a GeneratorExit whose context is
        # another one was raised by close() while the body's own exception was being handled.
        outer = sys.exc_info()[1]
        active: ActivePolicy | None = None
        stopped_by = "exception"
        try:
            active = self._policy.apply() if self._policy is not None else None
            self._active = active
            self._policy_report = active.report if active is not None else None
            self._gc.install()
            self._ru0 = thread_counters(self._tid)
            self._measuring = True
            try:
                i = skipped = 0
                deadline = self._start_ns = self._end_ns = clock() + period
                while i != limit:
                    if self._stop:
                        break
                    while not sleep_until(deadline):
                        _run_signal_handlers()
                        if self._stop_requested():
                            break
                    if self._stop_requested():
                        break
                    wake = clock()
                    yield Tick(i, deadline, wake, wake - deadline, skipped)
                    end = clock()
                    wake_record(wake - deadline)
                    step_record(end - wake)
                    i += 1
                    self._iterations = i
                    self._end_ns = end
                    deadline += period
                    skipped = 0
                    if end > deadline:
                        self._misses += 1
                        if policy is OverrunPolicy.SKIP:
                            skipped = -(-(end - deadline) // period)
                            deadline += skipped * period
                        elif policy is OverrunPolicy.REPHASE:
                            skipped = -(-(end - deadline) // period)
                            deadline = end + period
                        self._skipped += skipped
                stopped_by = "stop" if self._stop else "iterations"
            except GeneratorExit as exit_:
                context = exit_.__context__
                stopped_by = "exception" if context is not None and context is not outer \
                    else "closed"
                raise
            finally:
                self._ru1 = thread_counters(self._tid)
                self._measuring = False
                self._gc.remove()
        finally:
            self._stopped_by = stopped_by
            self._stop = False  # consumed: the next run starts afresh
            self._active = None
            if active is not None:
                active.close()

    def report(self) -> LoopReport:
        """The figures of the current (``stopped_by="running"``) or last run.

        Safe from any thread: the fault and switch counts are always the loop thread's (read
        from ``/proc/self/task/<tid>`` when asked mid-run from another thread), 0 for a loop
        that never ran, and ``None`` when they cannot be read.
        """
        ru0 = self._ru0
        ru1 = thread_counters(self._tid) if self._measuring else self._ru1
        faults: tuple[int | None, ...] = (None, None, None)
        if ru0 is not None and ru1 is not None:
            faults = tuple(b - a for a, b in zip(ru0, ru1, strict=True))
        return LoopReport(
            period_ns=self._period,
            overrun=self._overrun,
            iterations=self._iterations,
            deadline_misses=self._misses,
            skipped_periods=self._skipped,
            elapsed_ns=self._end_ns - self._start_ns if self._iterations else 0,
            wake=self.wake_stats.summary(),
            step=self.step_stats.summary(),
            gc_collections=self._gc.collections,
            minor_faults=faults[0],
            major_faults=faults[1],
            involuntary_switches=faults[2],
            stopped_by=self._stopped_by,
            policy=self._policy_report,
        )

    def __repr__(self) -> str:
        return (f"PeriodicLoop(period_ns={self._period}, overrun={self._overrun.value!r}, "
                f"policy={self._policy!r})")


def _run_signal_handlers() -> None:
    """A Python-level call: entering it lets CPython run pending signal handlers (EINTR)."""


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: a loop another thread was running is
    not running here, and would read "already running" for good (found by a trial). Its run
    lock is made anew and its policy forgotten (it was applied to that thread, not to this
    one: undoing it here would touch a thread id the child does not have)."""
    me = threading.get_ident()
    for loop in list(_LOOPS):
        if loop._busy.locked() and loop._runner_ident != me:
            loop._busy = threading.Lock()
            loop._active = None
            loop._measuring = False
            loop._stopped_by = "forked"


os.register_at_fork(after_in_child=_after_fork_in_child)
