"""Latency under load: a control model's latency idle and beside a background load on its GPU.

:func:`run_under_load` is what ``edgert bench --load gemm|conv|MODEL`` runs: the load alone (its
solo throughput), the control model alone (idle latency), then both at once (latency under load,
and what throughput the load kept). With ``reserve_sms`` the control model gets a partition of
that many SMs (a green context) and the load the rest; the report says which partition and stream
priority each had.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert._latency import LatencySummary
from edgert.bench._load import GpuLoad, LoadThroughput, SessionLoad
from edgert.bench._load_kernels import LoadKind
from edgert.errors import InvalidArgumentError
from edgert.stats import LatencyStats

__all__ = ["LoadReport", "ModelPlacement", "control_latency", "paced_latency", "run_under_load",
           "sleep_until"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelPlacement:
    """Where a model ran.

    Attributes:
        role: ``control`` or ``load``.
        what: The model or load.
        partition: ``whole GPU``, ``partition 0``, ``rest``...
        sm_count: SMs its kernels could use.
        priority: Its stream's priority (numerically lower is more urgent).
    """

    role: str
    what: str
    partition: str
    sm_count: int
    priority: int

    def describe(self) -> str:
        """One line for the report."""
        return (f"{self.role}: {self.what} on {self.partition} ({self.sm_count} SMs), "
                f"stream priority {self.priority}")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadReport:
    """A control model's latency idle and under a load, and the load's throughput.

    Attributes:
        control: Where the control model ran.
        load: Where the load ran.
        rate_hz: Requests per second the control model was asked for.
        idle: Control latency with the GPU otherwise idle.
        loaded: Control latency while the load ran.
        load_solo: The load's throughput alone.
        load_shared: The load's throughput beside the control model.
    """

    control: ModelPlacement
    load: ModelPlacement
    rate_hz: float
    idle: LatencySummary
    loaded: LatencySummary
    load_solo: LoadThroughput
    load_shared: LoadThroughput

    @property
    def p50_ratio(self) -> float | None:
        """Control p50 under load over idle p50."""
        return _ratio(self.loaded.p50_ns, self.idle.p50_ns)

    @property
    def p99_ratio(self) -> float | None:
        """Control p99 under load over idle p99."""
        return _ratio(self.loaded.p99_ns, self.idle.p99_ns)

    @property
    def load_kept(self) -> float | None:
        """The load's throughput beside the control model over its solo throughput."""
        return _ratio(self.load_shared.rate_per_s, self.load_solo.rate_per_s)

    def render(self) -> str:
        """A small text report."""
        def us(v: float | None) -> str:
            return "-" if v is None else f"{v:8.1f}"

        def x(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}x"

        unit = "GFLOP/s" if self.load_solo.gflops is not None else "inferences/s"

        def rate(t: LoadThroughput) -> str:
            return f"{t.gflops:,.0f}" if t.gflops is not None else f"{t.rate_per_s:,.1f}"

        lines = [self.control.describe(), self.load.describe(),
                 f"control requests: {self.rate_hz:g} Hz",
                 "", "control latency   p50 us    p99 us    max us   samples",
                 f"  idle          {us(self.idle.p50_us)}  {us(self.idle.p99_us)}  "
                 f"{us(self.idle.max_us)}  {self.idle.count:8d}",
                 f"  under load    {us(self.loaded.p50_us)}  {us(self.loaded.p99_us)}  "
                 f"{us(self.loaded.max_us)}  {self.loaded.count:8d}",
                 f"  ratio         {x(self.p50_ratio):>8}  {x(self.p99_ratio):>8}",
                 "", f"load throughput ({unit}): alone {rate(self.load_solo)}, beside control "
                 f"{rate(self.load_shared)} ({x(self.load_kept)})"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        def place(p: ModelPlacement) -> dict[str, Any]:
            return {"role": p.role, "what": p.what, "partition": p.partition,
                    "sm_count": p.sm_count, "priority": p.priority}

        return {"control": place(self.control), "load": place(self.load),
                "rate_hz": self.rate_hz, "idle": self.idle.to_dict(),
                "loaded": self.loaded.to_dict(), "load_solo": self.load_solo.to_dict(),
                "load_shared": self.load_shared.to_dict(), "p50_ratio": self.p50_ratio,
                "p99_ratio": self.p99_ratio, "load_kept": self.load_kept}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# Sleep (releasing the GIL to a load thread in this process) until this close to a request,
# then spin: time.sleep overshoots by tens of microseconds.
_SPIN_NS = 150_000


def sleep_until(deadline_ns: int) -> None:
    """Sleep, then spin, until ``time.perf_counter_ns() >= deadline_ns``."""
    now = time.perf_counter_ns
    left = deadline_ns - now()
    if left > _SPIN_NS:
        time.sleep((left - _SPIN_NS) / 1e9)
    while now() < deadline_ns:
        pass


def control_latency(session: Any, inputs: Any, *, rate_hz: float, count: int,
                    warmup: int = 200) -> LatencySummary:
    """Run ``session.infer(inputs)`` every ``1/rate_hz`` s and time each request on the host.

    Between requests the thread sleeps (so a load thread in the same process gets the GIL) and
    spins for the last 150 µs, so each request starts on time.

    Raises:
        InvalidArgumentError: A non-positive rate or count.
        InferenceError: A request failed.
    """
    return paced_latency(session, inputs, rate_hz=rate_hz, count=count,
                         warmup=warmup).summary()


def paced_latency(session: Any, inputs: Any, *, rate_hz: float, count: int,
                  warmup: int = 200) -> LatencyStats:
    """What :func:`control_latency` measures, as the recorder itself (rounds can be merged).

    Raises:
        InvalidArgumentError: A non-positive rate or count.
        InferenceError: A request failed.
    """
    if rate_hz <= 0 or count <= 0:
        raise InvalidArgumentError(f"rate_hz and count must be positive, not {rate_hz}, {count}")
    now = time.perf_counter_ns
    for _ in range(warmup):
        session.infer(inputs)
    stats = LatencyStats(count)
    period = int(1e9 / rate_hz)
    deadline = now()
    for _ in range(count):
        deadline += period
        sleep_until(deadline)
        t0 = now()
        session.infer(inputs)
        stats.record(now() - t0)
    return stats


def run_under_load(model: Any = None, *, load: str = "gemm", device: int = 0,
                   reserve_sms: int | None = None, priority: int | str | None = "highest",
                   rate_hz: float = 2000.0, duration_s: float = 2.0,
                   runtime: str = "auto") -> LoadReport:
    """Measure a control model's latency idle and beside a background load on the same GPU.

    Args:
        model: The control model: None or ``"bundled"`` (the bundled MLP as CUDA kernels), a
            model path, an Engine or an Executable.
        load: ``"gemm"``, ``"conv"`` (built-in NVRTC kernels) or a model path run back to back.
        device: The CUDA device.
        reserve_sms: Reserve a partition of this many SMs (rounded up to a size the device
            accepts) for the control model and confine the load to the rest; None shares all SMs.
        priority: The control stream's priority (the load's is the lowest).
        rate_hz: Control requests per second.
        duration_s: Seconds per phase (load alone, control idle, both).
        runtime: For model paths: ``auto``, ``full``, ``lean``, ``dispatch``.

    Raises:
        NotSupportedError: No CUDA device; or ``reserve_sms`` where green contexts are missing.
        InvalidArgumentError: A bad argument, or a partition size the device refuses.
        EngineLoadError: A model could not be loaded.
        CudaError: The GPU failed.
    """
    from edgert.bench._backend import open_backend
    from edgert.bench._run import input_arrays
    from edgert.cuda import device_properties, partition_sms, require, sm_layout
    from edgert.session import InferenceSession

    if reserve_sms is not None:
        from edgert.cuda._green import check_sm_count

        check_sm_count(reserve_sms, "reserve_sms")
    require(device)
    if duration_s <= 0:
        raise InvalidArgumentError(f"duration_s must be positive, not {duration_s}")
    props = device_properties(device)
    with contextlib.ExitStack() as stack:
        ctrl_part = load_part = None
        if reserve_sms is not None:
            size = sm_layout(device).legal_size(reserve_sms)
            parts = stack.enter_context(partition_sms([size], device=device))
            ctrl_part, load_part = parts[0], parts.rest
            # Sessions and loads close before the partitions (ExitStack unwinds in reverse).
        backend = open_backend(model, runtime=runtime, device=device)
        stack.callback(backend.close)
        zero_copy = props.can_map_host_memory
        session = stack.enter_context(InferenceSession(
            backend.model, device=device, partition=ctrl_part, priority=priority,
            io="zero_copy" if zero_copy else "copy", slots=1, sync="spin", timing="off",
            outputs="view"))
        inputs = input_arrays(session.executable.tensors, 1)
        bg = _open_load(load, device, load_part, runtime, stack)
        solo = bg.measure(duration_s)
        count = max(100, int(duration_s * rate_hz))
        idle = control_latency(session, inputs, rate_hz=rate_hz, count=count)
        bg.start()
        try:
            loaded = control_latency(session, inputs, rate_hz=rate_hz, count=count)
        finally:
            shared = bg.stop()
        all_sms = props.multiprocessor_count
        control_stream = session.stream
        assert control_stream is not None  # the control session runs on the CUDA device
        control = ModelPlacement(
            role="control", what=backend.info.model,
            partition=ctrl_part.name if ctrl_part is not None else "whole GPU",
            sm_count=ctrl_part.sm_count if ctrl_part is not None else all_sms,
            priority=control_stream.priority)
        stream = bg.stream
        placed = ModelPlacement(
            role="load", what=bg.what,
            partition=load_part.name if load_part is not None else "whole GPU",
            sm_count=load_part.sm_count if load_part is not None else all_sms,
            priority=stream.priority)
        return LoadReport(control=control, load=placed, rate_hz=rate_hz, idle=idle,
                          loaded=loaded, load_solo=solo, load_shared=shared)
    raise AssertionError("unreachable")  # pragma: no cover


def _open_load(load: str, device: int, partition: Any, runtime: str,
               stack: contextlib.ExitStack) -> GpuLoad | SessionLoad:
    from edgert.bench._run import input_arrays
    from edgert.engine import Engine, Placement
    from edgert.session import InferenceSession

    if load in {k.value for k in LoadKind}:
        return stack.enter_context(GpuLoad(load, device=device, partition=partition,
                                           priority="lowest"))
    path = Path(load)
    if not path.exists():
        raise InvalidArgumentError(f"no load {load!r}: not 'gemm', 'conv' or a model file",
                                   hint="pass --load gemm, --load conv or a model path")
    engine = stack.enter_context(Engine.load(path, runtime=runtime))
    if engine.placement is Placement.HOST:
        raise InvalidArgumentError(
            f"the load model {path.name} runs on the host ({engine.flavour}), so it does not "
            "load the GPU", hint="give a TensorRT plan as the load, or 'gemm' / 'conv'")
    session = stack.enter_context(InferenceSession(engine, device=device, partition=partition,
                                                   priority="lowest", outputs="view"))
    bg = stack.enter_context(SessionLoad(session, input_arrays(session.executable.tensors, 1),
                                         description=f"{path.name} back to back"))
    return bg
