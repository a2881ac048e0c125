"""BenchOptions: everything one benchmark run is asked to do, validated once."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from edgert.errors import InvalidArgumentError
from edgert.session._options import GraphMode, GraphName, IoMode, IoName, SyncMode, SyncName

__all__ = ["MAX_RATE_HZ", "BenchOptions", "BenchOverrides"]

#: Highest loop rate accepted: beyond it a Python step cannot keep up on any machine.
MAX_RATE_HZ = 100_000.0
MAX_DURATION_S = 86_400.0  # one day
_MAX_CAPACITY = 1 << 18  # samples per recorder: 2 MiB each, ~18 MiB for all of them
_MIN_CAPACITY = 4096


def _number(value: Any, what: str, *, minimum: float, maximum: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{what} must be a number, not {value!r}")
    v = float(value)
    low_ok = v >= minimum if inclusive else v > minimum
    if not math.isfinite(v) or not low_ok or v > maximum:
        bound = ">=" if inclusive else ">"
        raise InvalidArgumentError(f"{what} must be {bound} {minimum:g} and <= {maximum:g}, "
                                   f"not {value!r}")
    return v


ShapePairs = tuple[tuple[str, tuple[int, ...]], ...]


def _size(d: Any) -> int:
    if isinstance(d, bool):
        raise TypeError
    n = operator.index(d)  # ints and numpy integers
    if n < 0:
        raise ValueError
    return n


def _shapes(value: Any) -> ShapePairs | None:
    """``shapes`` as ``((name, shape), ...)``, immutable (a trtexec-style string is parsed)."""
    if value is None:
        return None
    if isinstance(value, str):
        from edgert.store._options import parse_input_shapes

        return tuple(parse_input_shapes(value).items())
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(name, shape) for name, shape in items]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"shapes must be a mapping of input name to shape, or a "
                                   f"string like 'images:1x3x320x320', not {value!r}") from None
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        try:
            if not isinstance(name, str) or isinstance(shape, (str, bytes)):
                raise TypeError
            out[name] = tuple(_size(d) for d in shape)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"shapes[{name!r}] must be a sequence of sizes >= 0, "
                                       f"not {shape!r}") from None
    return tuple(out.items())


def _check_whole_periods(rate_hz: float, duration_s: float) -> None:
    """A periodic run measures whole periods: refuse a duration that is not (nearly) that many.

    ``rate_hz=0.5, duration_s=1`` would run one period of 2 s and report it as 1 s; a duration
    whose whole number of periods runs within 10 % of it is accepted (12.5 Hz for the default
    3 s runs 38 periods, 3.04 s: a review found such ordinary rates refused at 1 %).
    """
    if rate_hz <= 0:
        return
    if _whole(rate_hz, duration_s):
        return
    periods = duration_s * rate_hz
    whole = max(1, math.floor(periods + 0.5))  # halves up, as said in the message
    period = 1.0 / rate_hz
    what = "shorter than one period" if periods < 1 else f"{periods:.3g} periods"
    low = max(1, math.floor(periods))
    # only durations the option itself accepts (a trial was told to give --duration 1e+09)
    fit = [f"duration_s={_short(n * period, lambda d: _whole(rate_hz, d))}"
           for n in (low, low + 1) if n * period < MAX_DURATION_S]
    one = _short(1.0 / duration_s, lambda r: _whole(r, duration_s))
    at_least = f"rate_hz={one} runs one whole period, and a whole multiple of it as many"
    raise InvalidArgumentError(
        f"duration_s={duration_s:g} is {what} at rate_hz={rate_hz:g} (one period is "
        f"{period:,.4g} s), and the loop measures whole periods: it would run {whole} "
        f"period{'s' if whole > 1 else ''}, {whole * period:,.4g} s",
        hint=(f"give {' or '.join(fit)} (whole periods), or a higher rate" if fit else
              f"give a higher rate: at duration_s={duration_s:g}, {at_least}"))


def _whole(rate_hz: float, duration_s: float) -> bool:
    periods = duration_s * rate_hz
    return periods >= 1 and abs(max(1, math.floor(periods + 0.5)) - periods) <= 0.1 * periods


def _short(value: float, ok: Callable[[float], bool]) -> str:
    """``value`` with as few significant digits as ``ok`` accepts, rounded up (1/3 Hz written
    0.3333 runs 0.9999 periods, and a period of 3.0003 s written 3 is refused: found by
    review)."""
    for digits in (4, 6, 8, 12):
        scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
        up = math.ceil(value * scale) / scale
        if ok(up):
            return f"{up:.{digits}g}"
    return repr(value)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be an int from {low} to {high}, not {value!r}")
    return value


def _mode(enum: Any, value: Any, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise InvalidArgumentError(f"{what} must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchOptions:
    """How :func:`edgert.bench.run` measures.

    Attributes:
        rate_hz: Requests per second, one per period of a :class:`~edgert.realtime.PeriodicLoop`
            (a control loop's view). ``0`` runs requests back to back with up to ``slots`` in
            flight (a throughput view, as trtexec does); there is no wake-up jitter then.
        duration_s: Length of the measured phase.
        warmup_s: Requests run (and discarded) before it, under the same conditions.
        rt: Apply a real-time policy to the loop thread: SCHED_FIFO ``priority``, ``cpus``,
            locked memory and a frozen garbage collector. What the OS refuses is reported, not
            raised.
        priority: SCHED_FIFO priority (1-99) when ``rt``.
        cpus: Pin the loop thread to these CPUs (needs ``rt``). CPUs that do not exist here, or
            lie outside this process's cpuset, make :func:`~edgert.bench.run` raise
            :class:`~edgert.errors.InvalidArgumentError` before anything runs.
        io: Session I/O mode (``auto``, ``copy``, ``zero_copy``).
        cuda_graph: Session graph mode (``auto``, ``on``, ``off``, or a bool).
        slots: Requests in flight at once (1: each request is waited for in its period).
        batch: Batch size of every request (the model's first dimension when it is dynamic).
        shapes: Input shapes to run, like trtexec's ``--shapes``: ``{name: shape}`` or
            ``"images:1x3x320x320,state:2x1x128"``. They replace the profile's opt shape (or 1
            per dynamic dimension, for a model without a profile) of the inputs they name.
        sync: ``adaptive`` (default), ``blocking`` or ``spin`` waits for the device.
        runtime: How a model path is loaded (see :meth:`edgert.engine.Engine.load`).
        device: CUDA ordinal, ``"host"``, or None (the session decides).
        root: Where thermal zones and power rails are read (a fake tree in tests).
        sample_interval_s: Period of the sensor sampler (and of progress callbacks).
        environment: Include the doctor's summary in the report (costs about half a second).

    Raises:
        InvalidArgumentError: A value is out of range or not one of its mode's values, or
            ``cpus`` without ``rt``.
    """

    rate_hz: float = 1000.0
    duration_s: float = 3.0
    warmup_s: float = 0.2
    rt: bool = True
    priority: int = 80
    cpus: Collection[int] | None = None
    io: IoMode | IoName = IoMode.AUTO
    cuda_graph: GraphMode | GraphName | bool = GraphMode.AUTO
    slots: int = 1
    batch: int = 1
    shapes: Mapping[str, Sequence[int]] | str | ShapePairs | None = None
    sync: SyncMode | SyncName = SyncMode.ADAPTIVE
    runtime: str = "auto"
    device: int | str | None = None
    root: Path | str = Path("/")
    sample_interval_s: float = 0.5
    environment: bool = True

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "rate_hz", _number(self.rate_hz, "rate_hz", minimum=0.0, maximum=MAX_RATE_HZ,
                                   inclusive=True))
        s(self, "duration_s", _number(self.duration_s, "duration_s", minimum=0.0,
                                      maximum=MAX_DURATION_S, inclusive=False))
        s(self, "warmup_s", _number(self.warmup_s, "warmup_s", minimum=0.0, maximum=3600.0,
                                    inclusive=True))
        s(self, "sample_interval_s", _number(self.sample_interval_s, "sample_interval_s",
                                             minimum=0.01, maximum=60.0, inclusive=True))
        _check_whole_periods(self.rate_hz, self.duration_s)
        for name in ("rt", "environment"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be a bool, not {getattr(self, name)!r}")
        _int(self.priority, "priority", 1, 99)
        _int(self.slots, "slots", 1, 64)
        _int(self.batch, "batch", 1, 1 << 20)
        s(self, "shapes", _shapes(self.shapes))
        if self.cpus is not None:
            cpus = frozenset(self.cpus)
            if not cpus or any(isinstance(c, bool) or not isinstance(c, int) or c < 0
                               for c in cpus):
                raise InvalidArgumentError(
                    f"cpus must be a non-empty set of CPU numbers, not {self.cpus!r}")
            if not self.rt:
                # Pinning is part of the real-time policy; without it the CPUs would be ignored.
                raise InvalidArgumentError("cpus needs rt=True: the loop thread is pinned as "
                                           "part of its real-time policy",
                                           hint="drop rt=False, or leave cpus unset")
            s(self, "cpus", cpus)
        graph: Any = self.cuda_graph
        if isinstance(graph, bool):
            graph = GraphMode.ON if graph else GraphMode.OFF
        s(self, "io", _mode(IoMode, self.io, "io"))
        s(self, "cuda_graph", _mode(GraphMode, graph, "cuda_graph"))
        s(self, "sync", _mode(SyncMode, self.sync, "sync"))
        if not isinstance(self.runtime, str):
            raise InvalidArgumentError(f"runtime must be a str, not {self.runtime!r}")
        device = self.device
        if device is not None and device != "host" and (
                isinstance(device, bool) or not isinstance(device, int) or device < 0):
            raise InvalidArgumentError(
                f"device must be a CUDA ordinal, 'host' or None, not {device!r}")
        s(self, "root", Path(self.root))

    @property
    def periodic(self) -> bool:
        """Whether requests run in a periodic loop (``rate_hz > 0``)."""
        return self.rate_hz > 0

    @property
    def period_ns(self) -> int | None:
        """The loop period, or None when requests run back to back."""
        return round(1e9 / self.rate_hz) if self.rate_hz > 0 else None

    def capacity(self) -> int:
        """Samples each recorder keeps: every request of the run where that fits."""
        if not self.periodic:
            return _MAX_CAPACITY
        expected = int(self.rate_hz * self.duration_s * 1.1) + 64
        return max(_MIN_CAPACITY, min(_MAX_CAPACITY, 1 << (expected - 1).bit_length()))

    @property
    def shape_map(self) -> dict[str, tuple[int, ...]]:
        """``shapes`` as ``{name: shape}`` (empty when none were given)."""
        return dict(self.shapes) if isinstance(self.shapes, tuple) else {}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "rate_hz": self.rate_hz, "duration_s": self.duration_s, "warmup_s": self.warmup_s,
            "rt": self.rt, "priority": self.priority,
            "cpus": sorted(self.cpus) if self.cpus is not None else None,
            "io": str(self.io), "cuda_graph": str(self.cuda_graph), "slots": self.slots,
            "batch": self.batch,
            "shapes": {k: list(v) for k, v in self.shape_map.items()} or None,
            "sync": str(self.sync), "runtime": self.runtime,
            "device": self.device, "root": str(self.root),
            "sample_interval_s": self.sample_interval_s, "environment": self.environment,
        }


class BenchOverrides(TypedDict, total=False):
    """The :class:`BenchOptions` fields as keyword arguments of :func:`~edgert.bench.run`."""

    rate_hz: float
    duration_s: float
    warmup_s: float
    rt: bool
    priority: int
    cpus: Collection[int] | None
    io: IoMode | IoName
    cuda_graph: GraphMode | GraphName | bool
    slots: int
    batch: int
    shapes: Mapping[str, Sequence[int]] | str | ShapePairs | None
    sync: SyncMode | SyncName
    runtime: str
    device: int | str | None
    root: Path | str
    sample_interval_s: float
    environment: bool
