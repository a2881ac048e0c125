"""BenchReport: every figure of one benchmark run, as a frozen value with JSON and text forms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert.bench._backend import BackendInfo
from edgert.bench._options import BenchOptions
from edgert.bench._sampler import SensorSample
from edgert.realtime import LoopReport, PolicyReport
from edgert.stats import LatencySummary

__all__ = [
    "SCHEMA",
    "STAGES",
    "BenchProgress",
    "BenchReport",
    "BenchWarning",
    "RealtimeOutcome",
    "ThermalSummary",
]

#: Identifies the JSON layout; bumped when a key changes meaning or goes away.
SCHEMA = "edgert-bench/1"
#: The latency figures a report carries, in report order. ``total`` is the host round trip
#: (inputs in, outputs out, synchronized); ``enqueue`` is host time to enqueue; ``h2d``,
#: ``compute`` and ``d2h`` are CUDA-event times of each stage (``compute`` is host time of the
#: synchronous run on the host); ``device`` spans a request's first event to its last.
STAGES = ("total", "enqueue", "h2d", "compute", "d2h", "device")


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchWarning:
    """Something in the figures that deserves attention (as trtexec warns).

    Attributes:
        code: ``enqueue_bound``, ``transfer_bound``, ``deadline_misses``, ``throttling``,
            ``realtime_refused``, ``multiple_slots`` or ``window``.
        message: What was seen, with the numbers.
        hint: What to try.
    """

    code: str
    message: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True, kw_only=True, slots=True)
class RealtimeOutcome:
    """The real-time policy of the loop thread.

    Attributes:
        requested: Whether a policy was asked for (``rt``).
        policy: What was applied and refused (None when not requested).
        summary: One line: what was applied, or what was refused and why.
    """

    requested: bool
    policy: PolicyReport | None
    summary: str

    @property
    def refused(self) -> tuple[str, ...]:
        """The settings the OS refused."""
        return tuple(o.setting for o in self.policy.refused) if self.policy else ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"requested": self.requested, "summary": self.summary,
                "refused": list(self.refused),
                "policy": self.policy.to_dict() if self.policy is not None else None}


@dataclass(frozen=True, kw_only=True, slots=True)
class ThermalSummary:
    """Sensor readings around and during the run.

    Attributes:
        start: Just before the measured phase.
        end: Just after it.
        samples: The timeline taken every ``sample_interval_s`` (start and end included).
        sources: What was read, e.g. ``("thermal zones (9)", "NVML GPU 0")``.
        sensor_errors: Reads that failed (the sampler carried on).
        last_error: The last failure, if any.
        nvml_unavailable: Why NVML was not read, when it was wanted.
    """

    start: SensorSample
    end: SensorSample
    samples: tuple[SensorSample, ...]
    sources: tuple[str, ...]
    sensor_errors: int = 0
    last_error: str | None = None
    nvml_unavailable: str | None = None

    @property
    def throttled(self) -> bool | None:
        """Whether anything throttled at any sample; None when no sensor could tell."""
        states = [s.throttled for s in self.samples if s.throttled is not None]
        return any(states) if states else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"start": self.start.to_dict(), "end": self.end.to_dict(),
                "throttled": self.throttled, "sources": list(self.sources),
                "sensor_errors": self.sensor_errors, "last_error": self.last_error,
                "nvml_unavailable": self.nvml_unavailable,
                "samples": [s.to_dict() for s in self.samples]}


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchProgress:
    """A live view of a run, passed to ``progress`` callbacks (from the sampler's thread).

    Attributes:
        phase: ``setup``, ``warmup``, ``measure`` or ``done``.
        elapsed_s: Seconds into the phase.
        duration_s: Length of the phase.
        requests: Requests completed in the phase.
        mean_us: Mean host time per step so far.
        max_us: Longest step so far.
        late: Periods that started late enough to skip others (0 when back to back).
        sample: The latest sensor sample.
    """

    phase: str
    elapsed_s: float
    duration_s: float
    requests: int
    mean_us: float | None
    max_us: float | None
    late: int
    sample: SensorSample | None


def _summary(s: LatencySummary | None) -> dict[str, Any] | None:
    return None if s is None else s.to_dict()


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchReport:
    """What :func:`edgert.bench.run` measured.

    Attributes:
        edgert_version: The edgert that ran it.
        started_at: UTC start time, ISO 8601.
        options: The options it ran with.
        backend: What it ran on (model, runtime, device, resolved session modes).
        elapsed_s: Length of the measured phase.
        requests: Requests completed in it.
        stopped_by: ``duration``, or ``interrupted`` (stopped early; figures cover what ran).
        latency: Per :data:`STAGES` name, the summary of that figure, or None where the stage
            does not exist on this backend (no copies in zero-copy I/O or on the host).
        loop: The periodic loop's report (wake-up latency, step time, misses, skipped periods,
            faults); None when requests ran back to back.
        realtime: The real-time policy applied and refused.
        thermal: Sensor readings at the start, the end and in between.
        warnings: What the figures suggest looking at.
        notes: Other facts about the run (fallbacks, truncated windows).
        environment: The doctor's summary (:meth:`edgert.doctor.DoctorReport.to_dict`), or None.
        cpu_s: Host CPU time the process used during the measured phase (user + system, every
            thread: the loop, the sensor sampler, runtime threads), or None where not measured.
            With ``sync="spin"`` a waiting request burns it; ``blocking`` sleeps instead.
        samples: Per-request figures in request order, in nanoseconds: ``t`` (start of the
            request since the start of the phase) and each recorded stage. Not part of
            :meth:`to_dict` unless asked for; used by :meth:`plot`.
    """

    edgert_version: str
    started_at: str
    options: BenchOptions
    backend: BackendInfo
    elapsed_s: float
    requests: int
    stopped_by: str
    latency: Mapping[str, LatencySummary | None]
    loop: LoopReport | None
    realtime: RealtimeOutcome
    thermal: ThermalSummary
    warnings: tuple[BenchWarning, ...] = ()
    notes: tuple[str, ...] = ()
    environment: Mapping[str, Any] | None = None
    cpu_s: float | None = None
    samples: Mapping[str, npt.NDArray[np.int64]] = field(default_factory=dict, compare=False,
                                                          repr=False)

    @property
    def throughput_qps(self) -> float:
        """Requests per second over the measured phase."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        """Host CPU time per request in microseconds (``cpu_s / requests``), or None."""
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s * 1e6 / self.requests

    @property
    def samples_per_s(self) -> float:
        """Batch items per second (``throughput_qps * batch``)."""
        return self.throughput_qps * self.backend.batch

    @property
    def deadline_misses(self) -> int:
        """Periods whose step ended after the next deadline (0 when back to back)."""
        return self.loop.deadline_misses if self.loop is not None else 0

    @property
    def skipped_periods(self) -> int:
        """Periods dropped after overruns (0 when back to back)."""
        return self.loop.skipped_periods if self.loop is not None else 0

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """Every figure as a JSON-ready dict (nanoseconds for latencies).

        Args:
            samples: Also include the per-request samples (large for long runs).
        """
        loop = None
        if self.loop is not None:
            loop = self.loop.to_dict()
            loop.pop("policy", None)  # reported once, under "realtime"
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "edgert_version": self.edgert_version,
            "started_at": self.started_at,
            "options": self.options.to_dict(),
            "backend": self.backend.to_dict(),
            "result": {"elapsed_s": self.elapsed_s, "requests": self.requests,
                       "throughput_qps": self.throughput_qps,
                       "samples_per_s": self.samples_per_s, "cpu_s": self.cpu_s,
                       "cpu_us_per_request": self.cpu_us_per_request,
                       "stopped_by": self.stopped_by,
                       "deadline_misses": self.deadline_misses,
                       "skipped_periods": self.skipped_periods},
            "latency": {name: _summary(self.latency.get(name)) for name in STAGES},
            "loop": loop,
            "realtime": self.realtime.to_dict(),
            "thermal": self.thermal.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "notes": list(self.notes),
            "environment": dict(self.environment) if self.environment is not None else None,
        }
        if samples:
            out["samples"] = {k: v.tolist() for k, v in self.samples.items()}
        return out

    def to_json(self, *, samples: bool = False, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON text; other keyword arguments go to :func:`json.dumps`."""
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(samples=samples), **kwargs)

    def render(self) -> str:
        """The trtexec-style text report."""
        from edgert.bench._render import render

        return render(self)

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: latency histogram and a timeline (with temperatures when sampled).

        Raises:
            NotSupportedError: matplotlib is not installed (``pip install matplotlib``).
            EdgeRTError: The file could not be written.
        """
        from edgert.bench._plot import write_plot

        return write_plot(self, Path(path))

    def __str__(self) -> str:
        return self.render()
