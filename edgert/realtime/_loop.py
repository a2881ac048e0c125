"""PeriodicLoop: absolute-deadline periodic execution with deadline accounting."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import resource
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from edgert._compat import StrEnum
from edgert._latency import LatencySummary
from edgert.errors import ConcurrentUseError, InvalidArgumentError
from edgert.realtime._clock import MonotonicSleeper, SleepUntil, monotonic_ns
from edgert.realtime._gc import GcCounter
from edgert.realtime._policy import ActivePolicy, PolicyReport, RealtimePolicy

if TYPE_CHECKING:
    pass

__all__ = ["LoopReport", "OverrunPolicy", "PeriodicLoop", "Tick"]


class OverrunPolicy(StrEnum):
    """What a loop does when a step ends after the next deadline.

    * ``SKIP`` (default; cyclictest and ros2_control): drop the deadlines that already passed and
      wait for the next one on the original grid. Missed periods are counted in
      :attr:`LoopReport.skipped_periods`.
    * ``CATCH_UP`` (rttest): run the late iterations back to back until the schedule is met
      again; nothing is skipped, but one stall makes many late wake-ups.
    * ``REPHASE`` (cactus-rt): start a new grid one period after the late step ended; the passed
      deadlines are counted as skipped.
    """

    SKIP = "skip"
    CATCH_UP = "catch_up"
    REPHASE = "rephase"


class Tick(NamedTuple):
    """One iteration, as the step sees it (all times on the loop's clock, in ns).

    Attributes:
        iteration: Iteration number, from 0.
        deadline_ns: The deadline this iteration was scheduled for.
        wake_ns: When the loop woke up.
        latency_ns: ``wake_ns - deadline_ns``: the wake-up latency.
        skipped: Periods skipped just before this iteration (overrun handling).
    """

    iteration: int
    deadline_ns: int
    wake_ns: int
    latency_ns: int
    skipped: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopReport:
    """What a :class:`PeriodicLoop` run measured.

    Attributes:
        period_ns: The period.
        overrun: The overrun policy.
        iterations: Steps run.
        deadline_misses: Iterations whose wake-up latency plus step time exceeded the period
            (the step ended after the next deadline).
        skipped_periods: Deadlines dropped by SKIP or REPHASE (never hidden: a skipped period
            is a period without a step).
        elapsed_ns: From the first deadline to the end of the last step.
        wake: Wake-up latency (now - deadline), over all iterations.
        step: Step duration (end of step - wake-up).
        gc_collections: Garbage collections (any thread) during the run; 0 with a frozen GC.
        minor_faults: Minor page faults of the loop thread during the run.
        major_faults: Major page faults (disk I/O) of the loop thread.
        involuntary_switches: Times the loop thread was preempted.
        stopped_by: ``iterations``, ``stop`` (stop() or a signal handler), ``exception`` (the
            step or the policy raised), ``closed`` (the code iterating the loop stopped asking
            for ticks, e.g. ``break``) or ``running`` (report taken mid-run). The iteration
            that was left by an exception or a ``break`` is not counted.
        policy: What the real-time policy applied and refused, when there was one.
    """

    period_ns: int
    overrun: OverrunPolicy
    iterations: int
    deadline_misses: int
    skipped_periods: int
    elapsed_ns: int
    wake: LatencySummary
    step: LatencySummary
    gc_collections: int
    minor_faults: int
    major_faults: int
    involuntary_switches: int
    stopped_by: str
    policy: PolicyReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "period_ns": self.period_ns, "overrun": self.overrun.value,
            "iterations": self.iterations, "deadline_misses": self.deadline_misses,
            "skipped_periods": self.skipped_periods, "elapsed_ns": self.elapsed_ns,
            "wake": self.wake.to_dict(), "step": self.step.to_dict(),
            "gc_collections": self.gc_collections, "minor_faults": self.minor_faults,
            "major_faults": self.major_faults, "involuntary_switches": self.involuntary_switches,
            "stopped_by": self.stopped_by,
            "policy": self.policy.to_dict() if self.policy is not None else None,
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON; keyword arguments go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)


def _rusage() -> tuple[int, int, int]:
    ru = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    return ru.ru_minflt, ru.ru_majflt, ru.ru_nivcsw


def _period_ns(period_s: float | None, period_ns: int | None) -> int:
    """The period in ns; its errors name the argument and unit the caller used."""
    value: object = period_s if period_s is not None else period_ns
    name, unit = ("period_s", "seconds") if period_s is not None else ("period_ns", "nanoseconds")
    hint = "e.g. PeriodicLoop(0.002) for 500 Hz (period_s = 1 / rate in Hz)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number of {unit}, got {value!r}",
                                   hint=hint)
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
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._iterations = 0
        self._misses = 0
        self._skipped = 0
        self._start_ns = 0
        self._end_ns = 0
        self._gc = GcCounter()
        self._ru0 = self._ru1 = (0, 0, 0)
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
        once when a signal interrupted its sleep.
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
            Exception: Whatever ``step`` raised; the loop stops and the policy is restored first.
        """
        ticks = self._cycle(iterations)
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
        CPython; use ``contextlib.closing`` to be explicit).

        Raises:
            ConcurrentUseError: The loop is already running.
        """
        return self._cycle(iterations)

    def __iter__(self) -> Iterator[Tick]:
        return self._cycle(None)

    def _cycle(self, iterations: int | None) -> Generator[Tick, None, None]:
        if iterations is not None and iterations < 0:
            raise InvalidArgumentError(f"iterations must be >= 0, got {iterations}")
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError("this PeriodicLoop is already running",
                                     hint="create one loop per thread")
        try:
            yield from self._body(iterations)
        finally:
            self._busy.release()

    def _body(self, iterations: int | None) -> Generator[Tick, None, None]:
        self._reset_counters()
        self._stop = False
        self.wake_stats.reset()
        self.step_stats.reset()
        sleep_until = self._sleep_until or MonotonicSleeper()
        clock = self._clock
        period = self._period
        policy = self._overrun
        wake_record = self.wake_stats.record
        step_record = self.step_stats.record
        limit = -1 if iterations is None else iterations
        try:
            active = self._policy.apply() if self._policy is not None else None
        except BaseException:
            self._stopped_by = "exception"
            raise
        self._active = active
        self._policy_report = active.report if active is not None else None
        self._gc.install()
        self._ru0 = _rusage()
        stopped_by = "exception"
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
        except GeneratorExit:
            stopped_by = "closed"
            raise
        finally:
            self._stopped_by = stopped_by
            self._ru1 = _rusage()
            self._gc.remove()
            self._active = None
            if active is not None:
                active.close()

    def report(self) -> LoopReport:
        """The figures of the current (``stopped_by="running"``) or last run."""
        ru1 = _rusage() if self._stopped_by == "running" else self._ru1
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
            minor_faults=ru1[0] - self._ru0[0],
            major_faults=ru1[1] - self._ru0[1],
            involuntary_switches=ru1[2] - self._ru0[2],
            stopped_by=self._stopped_by,
            policy=self._policy_report,
        )

    def __repr__(self) -> str:
        return (f"PeriodicLoop(period_ns={self._period}, overrun={self._overrun.value!r}, "
                f"policy={self._policy!r})")


def _run_signal_handlers() -> None:
    """A Python-level call: entering it lets CPython run pending signal handlers (EINTR)."""
