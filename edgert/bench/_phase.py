"""Running requests for one phase of a benchmark: in a periodic loop, or back to back."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from typing import Any

from edgert.realtime import LoopReport, PeriodicLoop, Tick
from edgert.stats import LatencyStats

__all__ = ["PhaseRunner"]

_now = time.perf_counter_ns


class PhaseRunner:
    """Drives one session through a phase and keeps live counters for progress lines.

    The counters are plain ints written by the loop thread and read by the sampler's thread:
    a monitoring view, cheap enough to update on every request.
    """

    def __init__(self, session: Any, inputs: Mapping[str, Any], *, slots: int,
                 period_ns: int | None, capacity: int) -> None:
        self.session = session
        self.inputs = inputs
        self.slots = slots
        self.period_ns = period_ns
        self.times = LatencyStats(capacity)
        """Start of each request since the start of the phase (ns), in request order."""
        self.loop = PeriodicLoop(period_ns=period_ns, capacity=capacity) if period_ns else None
        self.phase = "setup"
        self.phase_duration_s = 0.0
        self.phase_start_ns = _now()
        self.requests = 0
        self.sum_ns = 0
        self.max_ns = 0
        self.late = 0
        self._stop = False
        self._t0 = 0
        self._end_ns = 0
        self._inflight: collections.deque[Any] = collections.deque()

    def stop(self) -> None:
        """End the phase in progress early (safe from any thread)."""
        self._stop = True
        if self.loop is not None:
            self.loop.stop()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop

    def run(self, phase: str, duration_s: float) -> LoopReport | None:
        """Run requests for ``duration_s``; returns the loop's report (None when back to back).

        Raises:
            EdgeRTError: A request failed (the loop stops; its policy is not ours to restore).
        """
        self.phase = phase
        self.phase_duration_s = duration_s
        self.requests = self.sum_ns = self.max_ns = self.late = 0
        self.times.reset()
        step = self._make_step()
        self._t0 = self.phase_start_ns = _now()
        self._end_ns = self._t0 + round(duration_s * 1e9)
        if self._stop:
            return None
        report: LoopReport | None = None
        try:
            if self.loop is not None and self.period_ns:
                iterations = max(1, round(duration_s * 1e9 / self.period_ns))
                report = self.loop.run(step, iterations=iterations)
            else:
                end = time.monotonic_ns() + round(duration_s * 1e9)
                clock = time.monotonic_ns
                while not self._stop and clock() < end:
                    step(None)
        except BaseException:
            self._drain(quiet=True)  # the step's failure is the one to report
            raise
        self._drain(quiet=False)
        return report

    def _make_step(self) -> Callable[[Tick | None], None]:
        session = self.session
        inputs = self.inputs
        record_time = self.times.record
        if self.slots == 1:
            infer = session.infer

            def step(tick: Tick | None) -> None:
                start = _now()
                record_time(start - self._t0)
                infer(inputs)
                self._count(_now() - start, tick)

            return step
        submit = session.submit
        slots = self.slots
        inflight = self._inflight

        def step_pipelined(tick: Tick | None) -> None:
            start = _now()
            # Collect what has finished (never blocks), then wait only when every slot is busy.
            while inflight and inflight[0].done():
                inflight.popleft().result()
            if len(inflight) == slots:
                inflight.popleft().result()
            record_time(start - self._t0)
            inflight.append(submit(inputs))
            self._count(_now() - start, tick)

        return step_pipelined

    def _count(self, dt: int, tick: Tick | None) -> None:
        self.requests += 1
        self.sum_ns += dt
        if dt > self.max_ns:  # noqa: PLR1730 - a compare is cheaper than max() per request
            self.max_ns = dt
        if tick is not None and tick.skipped:
            self.late += 1
            # Skipped periods are not steps: bounded by its step count alone, a loop that falls
            # behind would run many times --duration. Only late steps need the clock read.
            if self.loop is not None and _now() >= self._end_ns:
                self.loop.stop()

    def _drain(self, *, quiet: bool) -> None:
        inflight = self._inflight
        while inflight:
            pending = inflight.popleft()
            try:
                pending.result()
            except Exception:
                if not quiet:
                    inflight.clear()
                    raise
