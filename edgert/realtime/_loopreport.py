"""What a :class:`~edgert.realtime.PeriodicLoop` run reports: overrun policies, ticks, reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from edgert._compat import StrEnum
from edgert._latency import LatencySummary
from edgert.realtime._report import PolicyReport

__all__ = ["LoopReport", "OverrunPolicy", "Tick"]


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
        minor_faults: Minor page faults of the loop thread during the run (always the loop
            thread's, whichever thread asks for the report; 0 before a run). ``None`` when the
            counters could not be read: a report taken mid-run from another thread reads them
            from ``/proc/self/task/<tid>``, which fails without procfs.
        major_faults: Major page faults (disk I/O) of the loop thread; ``None`` as above.
        involuntary_switches: Times the loop thread was preempted; ``None`` as above.
        stopped_by: ``iterations``, ``stop`` (stop() or a signal handler, also one called
            before the run started: the run then returns at once), ``exception`` (the step or
            the policy raised), ``closed`` (the code iterating the loop stopped asking for
            ticks, e.g. ``break``), ``running`` (report taken mid-run) or ``not_started`` (the
            loop never ran). The iteration that was left by an exception or a ``break`` is not
            counted. In a bare ``for tick in loop.ticks()`` CPython closes the generator the same
            way for an exception as for a ``break``, so both read ``closed``; iterate inside
            ``with contextlib.closing(loop.ticks()) as ticks:`` (or use
            :meth:`PeriodicLoop.run`) to have an exception reported as ``exception``. In a
            forked child, ``forked`` for a run another thread of the parent was making.
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
    minor_faults: int | None
    major_faults: int | None
    involuntary_switches: int | None
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
