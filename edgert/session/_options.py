"""Session modes, and the frozen options an :class:`~edgert.session.InferenceSession` runs with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar

from edgert._compat import StrEnum
from edgert.errors import InvalidArgumentError

__all__ = [
    "BusyMode",
    "ContiguityMode",
    "GraphMode",
    "IoMode",
    "OutputMode",
    "SessionOptions",
    "SessionOverrides",
    "SyncMode",
    "TimingMode",
]


class IoMode(StrEnum):
    """How request data reaches the executable.

    Attributes:
        AUTO: ``zero_copy`` on integrated GPUs (Jetson), on the host device, and on a discrete
            GPU when a request's inputs and outputs at the profile's largest shapes take at most
            64 KiB (``edgert.session._setup.ZERO_COPY_AUTO_MAX_BYTES``); else ``copy``.
        COPY: Pinned host staging buffers and device buffers, copied on the session's stream.
        ZERO_COPY: Mapped pinned host memory bound directly to the executable; no memcpy. On the
            host device: contiguous numpy inputs are bound where they are, not even staged.
    """

    AUTO = "auto"
    COPY = "copy"
    ZERO_COPY = "zero_copy"


class GraphMode(StrEnum):
    """Whether requests are captured into CUDA graphs and replayed.

    Attributes:
        AUTO: Capture when the device is a GPU and the executable allows it.
        ON: Like ``auto``, but refuse to build the session where graphs cannot be used.
        OFF: Always enqueue plainly.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class SyncMode(StrEnum):
    """How a thread waits for the device.

    Attributes:
        ADAPTIVE: Busy-wait for about as long as recent requests took to complete after their
            enqueue (learned per session), then sleep on a blocking-sync event. Requests that
            finish when expected get spin latency; a slow one does not burn the core for long.
            The spin is capped at ``ADAPTIVE_SPIN_MAX_NS``.
        BLOCKING: Sleep until the GPU signals completion (blocking-sync events): frees the CPU
            core, costs some wake-up latency (15-40 us measured on an H200).
        SPIN: Busy-wait (lowest latency; burns the core while waiting).
    """

    ADAPTIVE = "adaptive"
    BLOCKING = "blocking"
    SPIN = "spin"


class OutputMode(StrEnum):
    """What ``infer``/``result`` return for each output.

    Attributes:
        VIEW: numpy views of the slot's reused pinned buffers, valid until that slot is reused
            (``slots`` requests later): the zero-copy latency recipe. A kept view changes under
            the caller when its slot is reused.
        COPY: fresh numpy arrays the caller owns (the default: a small output costs a fraction
            of a microsecond to copy, and a result the caller keeps never changes).
        DEVICE: :class:`~edgert.memory.DeviceView` objects over the slot's device buffers
            (``__cuda_array_interface__`` and DLPack), for torch/cupy without a round trip.
    """

    VIEW = "view"
    COPY = "copy"
    DEVICE = "device"


class BusyMode(StrEnum):
    """What ``submit`` does when every slot holds a request in flight.

    Attributes:
        WAIT: Wait for the oldest request to finish, then reuse its slot.
        RAISE: Raise :class:`~edgert.RequestTimeoutError` at once.
    """

    WAIT = "wait"
    RAISE = "raise"


class TimingMode(StrEnum):
    """What each request records into the session's latency statistics.

    Attributes:
        STAGES: CUDA events around H2D, compute and D2H, plus the host figures (several
            microseconds per request on a GPU: opt in, as ``edgert bench`` does).
        HOST: Only host figures: enqueue time and round-trip latency (the default; about a
            microsecond).
        OFF: Nothing is recorded.
    """

    STAGES = "stages"
    HOST = "host"
    OFF = "off"


class ContiguityMode(StrEnum):
    """What happens to non-contiguous numpy inputs.

    Attributes:
        COPY: Staged with a strided copy (the staging copy happens anyway in ``copy`` I/O).
        REFUSE: Rejected with :class:`~edgert.InputError`.
    """

    COPY = "copy"
    REFUSE = "refuse"


#: The modes' names, as accepted wherever a mode is (the fields hold the enums once validated).
IoName = Literal["auto", "copy", "zero_copy"]
GraphName = Literal["auto", "on", "off"]
SyncName = Literal["adaptive", "blocking", "spin"]
OutputName = Literal["view", "copy", "device"]
BusyName = Literal["wait", "raise"]
TimingName = Literal["stages", "host", "off"]
ContiguityName = Literal["copy", "refuse"]

_E = TypeVar("_E", bound=StrEnum)


def _mode(enum: type[_E], value: Any, what: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise InvalidArgumentError(f"{what} must be one of {choices}, not {value!r}") from None


def _positive_int(value: Any, what: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{what} must be an int >= {minimum}, not {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionOptions:
    """Everything a session decides per request, validated once.

    Attributes:
        io: See :class:`IoMode`.
        slots: Requests that may be in flight at once, each with its own buffers and events.
        cuda_graph: See :class:`GraphMode` (``True``/``False`` mean ``on``/``off``).
        sync: See :class:`SyncMode`.
        outputs: See :class:`OutputMode`.
        when_busy: See :class:`BusyMode`.
        timing: See :class:`TimingMode`.
        cast: Convert inputs of another dtype (``same_kind`` casting) instead of refusing them;
            values that do not fit the model's dtype are refused, never wrapped.
        contiguous: See :class:`ContiguityMode`.
        profile: The optimization profile of contexts the session creates from an Engine.
        max_graphs: CUDA graphs kept per slot (one per input-shape signature and external
            buffer set); the least recently captured goes first.
        stats_capacity: Samples each :class:`~edgert.stats.LatencyStats` keeps for percentiles.

    Raises:
        InvalidArgumentError: A value is out of range or not one of its mode's values.
    """

    io: IoMode | IoName = IoMode.AUTO
    slots: int = 2
    cuda_graph: GraphMode | GraphName | bool = GraphMode.AUTO
    sync: SyncMode | SyncName = SyncMode.ADAPTIVE
    outputs: OutputMode | OutputName = OutputMode.COPY
    when_busy: BusyMode | BusyName = BusyMode.WAIT
    timing: TimingMode | TimingName = TimingMode.HOST
    cast: bool = False
    contiguous: ContiguityMode | ContiguityName = ContiguityMode.COPY
    profile: int = 0
    max_graphs: int = 8
    stats_capacity: int = 4096

    def __post_init__(self) -> None:
        graph: Any = self.cuda_graph
        if graph is True:
            graph = GraphMode.ON
        elif graph is False:
            graph = GraphMode.OFF
        object.__setattr__(self, "io", _mode(IoMode, self.io, "io"))
        object.__setattr__(self, "cuda_graph", _mode(GraphMode, graph, "cuda_graph"))
        object.__setattr__(self, "sync", _mode(SyncMode, self.sync, "sync"))
        object.__setattr__(self, "outputs", _mode(OutputMode, self.outputs, "outputs"))
        object.__setattr__(self, "when_busy", _mode(BusyMode, self.when_busy, "when_busy"))
        object.__setattr__(self, "timing", _mode(TimingMode, self.timing, "timing"))
        object.__setattr__(self, "contiguous",
                           _mode(ContiguityMode, self.contiguous, "contiguous"))
        _positive_int(self.slots, "slots")
        if self.slots > 64:
            raise InvalidArgumentError(f"slots must be at most 64, not {self.slots}",
                                       hint="a few slots already hide copies behind compute")
        _positive_int(self.max_graphs, "max_graphs")
        _positive_int(self.stats_capacity, "stats_capacity")
        _positive_int(self.profile, "profile", minimum=0)
        if not isinstance(self.cast, bool):
            raise InvalidArgumentError(f"cast must be a bool, not {self.cast!r}")


class SessionOverrides(TypedDict, total=False):
    """The :class:`SessionOptions` fields as keyword arguments (each mode as its enum or name)."""

    io: IoMode | IoName
    slots: int
    cuda_graph: GraphMode | GraphName | bool
    sync: SyncMode | SyncName
    outputs: OutputMode | OutputName
    when_busy: BusyMode | BusyName
    timing: TimingMode | TimingName
    cast: bool
    contiguous: ContiguityMode | ContiguityName
    profile: int
    max_graphs: int
    stats_capacity: int
