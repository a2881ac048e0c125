"""The activation gate: a candidate model must agree with a reference and be fast enough.

Agreement: on sample inputs (yours, or seeded random ones at each input's profile opt shape),
every output of the candidate must have the reference's shape and satisfy
``|candidate - reference| <= atol + rtol * |reference|`` element by element (numpy's
``isclose``; a NaN or infinity where the reference has a finite value fails). Speed: the p99 of
the candidate's request latency (``InferenceSession.infer``, wall clock, after warm-up) must be
within ``p99_budget_ms``. Both are measured on this machine, by the runtime that will serve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert.engine import Engine
from edgert.errors import EdgeRTError, InferenceError, InputError, InvalidArgumentError

__all__ = ["HealthPolicy", "HealthReport", "check_health", "sample_inputs"]

Inputs = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True, kw_only=True)
class HealthPolicy:
    """What a candidate must pass to become active.

    Args:
        atol: Absolute tolerance of output agreement.
        rtol: Relative tolerance of output agreement.
        samples: Random sample inputs to compare on (when ``inputs`` is not given).
        inputs: Your own sample inputs (recorded sensor frames are best).
        p99_budget_ms: Largest acceptable p99 request latency (None: not checked).
        latency_runs: Requests timed for the p99.
        warmup_runs: Requests run before timing.
        seed: Seed of the random sample inputs.
        reference: ``"auto"`` (the version's ONNX on ONNX Runtime if it has one, else the active
            version), ``"onnx"``, ``"current"`` or ``"none"`` (latency only).

    Raises:
        InvalidArgumentError: A value is out of range.
    """

    atol: float = 1e-3
    rtol: float = 1e-3
    samples: int = 8
    inputs: Sequence[Inputs] | None = None
    p99_budget_ms: float | None = None
    latency_runs: int = 200
    warmup_runs: int = 20
    seed: int = 0
    reference: str = "auto"

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidArgumentError(f"{name} must be >= 0, got {value!r}")
        for name in ("samples", "latency_runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.warmup_runs, bool) or not isinstance(self.warmup_runs, int) or \
                self.warmup_runs < 0:
            raise InvalidArgumentError(f"warmup_runs must be >= 0, got {self.warmup_runs!r}")
        budget = self.p99_budget_ms
        if budget is not None and (not isinstance(budget, (int, float)) or not budget > 0):
            raise InvalidArgumentError(f"p99_budget_ms must be > 0, got {budget!r}")
        if self.reference not in ("auto", "onnx", "current", "none"):
            raise InvalidArgumentError(f"unknown reference {self.reference!r}",
                                       hint="use auto, onnx, current or none")
        if self.inputs is not None and not self.inputs:
            raise InvalidArgumentError("inputs is empty", hint="give samples, or inputs=None")


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    """What the gate measured.

    Attributes:
        passed: Whether the candidate may become active.
        reasons: Why not (empty when it passed).
        reference: What it was compared with (``None``: not compared).
        samples: Inputs compared.
        max_abs_error: Largest ``|candidate - reference|`` over every output and sample.
        worst_output: The output where that was.
        mismatched_fraction: Of the worst sample's worst output, the share of elements outside
            the tolerance.
        p50_ms: Median request latency.
        p99_ms: 99th percentile request latency.
        p99_budget_ms: The budget it was held to.
        not_compared: Why the outputs were not compared with a reference (``None`` when they
            were, or when the gate stopped before running): ``reference="none"`` was asked,
            or there was nothing to compare with (no other active version and no ONNX model
            of this version to run on ONNX Runtime).
    """

    passed: bool
    reasons: tuple[str, ...] = ()
    reference: str | None = None
    samples: int = 0
    max_abs_error: float | None = None
    worst_output: str | None = None
    mismatched_fraction: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p99_budget_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    not_compared: str | None = None

    def summary(self) -> str:
        """One line: verdict, error (or why outputs were not compared) and latency."""
        parts = ["passed" if self.passed else "FAILED: " + "; ".join(self.reasons)]
        if self.max_abs_error is not None:
            parts.append(f"max |error| {self.max_abs_error:.3g} vs {self.reference}")
        elif self.not_compared is not None:
            parts.append(f"outputs not compared: {self.not_compared}")
        if self.p99_ms is not None:
            budget = f" (budget {self.p99_budget_ms} ms)" if self.p99_budget_ms else ""
            parts.append(f"p50 {self.p50_ms:.3f} ms, p99 {self.p99_ms:.3f} ms{budget}")
        return ", ".join(parts)


def sample_inputs(engine: Engine, count: int, seed: int) -> list[dict[str, npt.NDArray[Any]]]:
    """Seeded random inputs at each input's profile-0 opt shape (or its static shape)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        arrays: dict[str, npt.NDArray[Any]] = {}
        for spec in engine.inputs:
            shape = spec.profiles[0].opt if spec.profiles else tuple(
                1 if d < 0 else d for d in spec.shape)
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind == "b":
                arrays[spec.name] = rng.random(shape) > 0.5
            else:
                arrays[spec.name] = rng.integers(0, 8, shape).astype(dtype)
        out.append(arrays)
    return out


def _run(engine: Engine, inputs: Sequence[Inputs]) -> list[dict[str, npt.NDArray[Any]]]:
    from edgert.session import InferenceSession

    with InferenceSession(engine, outputs="copy") as session:
        return [{k: np.asarray(v) for k, v in session.infer(dict(x)).items()} for x in inputs]


def _latency_ms(engine: Engine, sample: Inputs, policy: HealthPolicy) -> tuple[float, float]:
    from edgert.session import InferenceSession

    times = np.empty(policy.latency_runs, dtype=np.int64)
    with InferenceSession(engine, timing="off") as session:
        for _ in range(policy.warmup_runs):
            session.infer(dict(sample))
        for i in range(policy.latency_runs):
            start = time.perf_counter_ns()
            session.infer(dict(sample))
            times[i] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(times, [50, 99]) / 1e6
    return float(p50), float(p99)


def _compare(candidate: list[dict[str, npt.NDArray[Any]]],
             reference: list[dict[str, npt.NDArray[Any]]], policy: HealthPolicy,
             reasons: list[str]) -> tuple[float, str | None, float | None]:
    worst, worst_name, worst_fraction = 0.0, None, None
    for index, (got, want) in enumerate(zip(candidate, reference, strict=True)):
        missing = sorted(set(want) - set(got))
        if missing:
            reasons.append(f"outputs {missing} are missing from the candidate")
            return math.inf, missing[0], 1.0
        for name, ref in want.items():
            out = got[name]
            if out.shape != ref.shape:
                reasons.append(f"output {name!r} has shape {out.shape}, the reference "
                               f"{ref.shape} (sample {index})")
                return math.inf, name, 1.0
            a, b = out.astype(np.float64), ref.astype(np.float64)
            close = np.isclose(a, b, atol=policy.atol, rtol=policy.rtol, equal_nan=True)
            with np.errstate(invalid="ignore"):
                diff = np.abs(a - b)
            error = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else 0.0
            if not np.all(np.isfinite(a) == np.isfinite(b)):
                error = math.inf
            if error > worst or (worst_name is None and diff.size):
                worst, worst_name = error, name
                worst_fraction = float(1.0 - close.mean()) if close.size else 0.0
            if not close.all():
                reasons.append(
                    f"output {name!r} disagrees with the reference on sample {index}: "
                    f"{int((~close).sum())} of {close.size} elements outside atol={policy.atol} "
                    f"rtol={policy.rtol} (max |error| {error:.3g})")
                return max(error, worst), name, float(1.0 - close.mean())
    return worst, worst_name, worst_fraction


def _interface_mismatch(candidate: Engine, reference: Engine) -> str | None:
    """How the candidate's inputs differ from the reference's (names, dtypes), or None."""
    def inputs(engine: Engine) -> dict[str, str]:
        return {s.name: np.dtype(s.dtype).name for s in engine.inputs}

    def spell(named: dict[str, str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(named.items())) or "none"

    got, want = inputs(candidate), inputs(reference)
    if got == want:
        return None
    return (f"its inputs ({spell(got)}) are not the reference's ({spell(want)}): a caller "
            "that feeds the reference could not run it")


def _cannot_run(who: str, err: EdgeRTError, inputs: Sequence[Inputs], *, given: bool) -> str:
    shapes = ", ".join(f"{k} {'x'.join(map(str, np.shape(v))) or 'scalar'}"
                       for k, v in inputs[0].items())
    if given:
        return f"{who} does not run on the given sample inputs ({shapes}): {err.message}"
    return (f"{who} does not run on the random sample inputs ({shapes}; floats from a normal "
            f"distribution, integers 0-7, at each input's opt shape): {err.message}; give it "
            "inputs the robot sees (HealthPolicy(inputs=[...]); edgert store activate "
            "--inputs FILE.npz)")


def check_health(candidate: Engine, reference: Engine | None, policy: HealthPolicy, *,
                 reference_label: str | None = None) -> HealthReport:
    """Run the gate (see the module documentation); never raises for a failing candidate: a
    candidate (or reference) that cannot run on the sample inputs fails it, saying so."""
    inputs: Sequence[Inputs] = policy.inputs if policy.inputs is not None else \
        sample_inputs(candidate, policy.samples, policy.seed)
    reasons: list[str] = []
    error = name = fraction = None
    mismatch = _interface_mismatch(candidate, reference) if reference is not None else None
    who = "the candidate"
    try:
        if mismatch is not None:
            # The reference cannot run the candidate's samples, and a robot feeding the active
            # version's inputs could not run the candidate: a refusal, not an input error.
            reasons.append(mismatch)
        elif reference is not None:
            got = _run(candidate, inputs)
            who = f"the reference ({reference_label})"
            want = _run(reference, inputs)
            error, name, fraction = _compare(got, want, policy, reasons)
        who = "the candidate"
        p50, p99 = _latency_ms(candidate, inputs[0], policy)
    except (InputError, InferenceError) as err:
        # Not activatable as it stands: a refusal with the way out, recorded in the history
        # (a third-party model run on made-up inputs was an unexplained error: a new user's
        # trial, Silero VAD at a 1x1 input and a zero sample rate).
        reasons.append(_cannot_run(who, err, inputs, given=policy.inputs is not None))
        return HealthReport(passed=False, reasons=tuple(reasons),
                            reference=reference_label if reference is not None else None,
                            samples=len(inputs), p99_budget_ms=policy.p99_budget_ms)
    budget = policy.p99_budget_ms
    if budget is not None and p99 > budget:
        reasons.append(f"p99 latency {p99:.3f} ms exceeds the budget of {budget} ms "
                       f"({policy.latency_runs} requests, p50 {p50:.3f} ms)")
    return HealthReport(passed=not reasons, reasons=tuple(reasons),
                        reference=reference_label if reference is not None else None,
                        samples=len(inputs), max_abs_error=error, worst_output=name,
                        mismatched_fraction=fraction, p50_ms=p50, p99_ms=p99,
                        p99_budget_ms=budget, not_compared=_not_compared(reference, policy))


def _not_compared(reference: Engine | None, policy: HealthPolicy) -> str | None:
    """Why a gate that ran compared no outputs, for the summary (None: they were compared)."""
    if reference is not None:
        return None
    if policy.reference == "none":
        return "reference='none' was asked (latency only)"
    return "no other active version to compare with"
