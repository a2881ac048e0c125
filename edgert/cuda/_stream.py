"""CUDA streams and events, each owned by exactly one object."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from edgert._owner import Owner
from edgert.cuda._api import check, raise_cuda, runtime
from edgert.cuda._device import device_properties, require
from edgert.errors import CudaError, InvalidArgumentError

if TYPE_CHECKING:
    from edgert._protocols import SupportsCudaStream

__all__ = ["Event", "Stream", "as_stream_handle"]

PriorityArg = int | Literal["highest", "lowest"] | None


class _OnDevice:
    """Run a block with ``device`` current on this thread, restoring the previous one."""

    __slots__ = ("_device", "_prev", "_rt")

    def __init__(self, device: int) -> None:
        self._device = device
        self._rt = runtime()
        self._prev = -1

    def __enter__(self) -> None:
        self._prev = int(check(self._rt.cudaGetDevice(), call="cudaGetDevice"))
        if self._prev != self._device:
            check(self._rt.cudaSetDevice(self._device), call="cudaSetDevice")

    def __exit__(self, *exc: object) -> None:
        if self._prev != self._device:
            self._rt.cudaSetDevice(self._prev)


def resolve_priority(priority: PriorityArg, priority_range: tuple[int, int], *,
                     device: int) -> int:
    """Turn ``priority`` into a number within ``priority_range`` = ``(lowest, highest)``.

    Raises:
        InvalidArgumentError: The priority is outside the range, or not an int/'highest'/'lowest'.
    """
    lowest, highest = priority_range
    if priority == "highest":
        return highest
    if priority == "lowest" or priority is None:
        return lowest
    if isinstance(priority, int) and not isinstance(priority, bool):
        if not highest <= priority <= lowest:
            raise InvalidArgumentError(
                f"stream priority {priority} is outside device {device}'s range "
                f"{highest} (highest) .. {lowest} (lowest)",
                hint="use 'highest', 'lowest' or a value in that range",
            )
        return priority
    raise InvalidArgumentError(f"stream priority must be an int, 'highest' or 'lowest', "
                               f"not {priority!r}")


def _destroy_stream(raw: Any) -> None:
    runtime().cudaStreamDestroy(raw)


class Stream(Owner):
    """A CUDA stream owned by this object.

    Streams are created non-blocking by default, so they never serialise with the legacy default
    stream (which would also break thread-local graph capture). Work is never put on a hidden
    "current" stream: every edgert call that enqueues takes ``stream=`` explicitly.

    Args:
        device: The CUDA device (default 0).
        priority: An integer within the device's range (see
            :attr:`DeviceProperties.stream_priority_range`; numerically lower is more urgent),
            or ``"highest"`` / ``"lowest"``. None gives the default (lowest) priority.
        nonblocking: Create with ``cudaStreamNonBlocking`` (default True).

    Raises:
        NotSupportedError: No usable CUDA device.
        InvalidArgumentError: The priority is outside the device's range.
        CudaError: Stream creation failed.
    """

    def __init__(self, *, device: int = 0, priority: PriorityArg = None,
                 nonblocking: bool = True) -> None:
        require(device)
        rt = runtime()
        prio = resolve_priority(priority, device_properties(device).stream_priority_range,
                                device=device)
        flags = rt.cudaStreamNonBlocking if nonblocking else rt.cudaStreamDefault
        with _OnDevice(device):
            raw = check(rt.cudaStreamCreateWithPriority(flags, prio),
                        call="cudaStreamCreateWithPriority")
        self._raw = raw
        self._handle = int(raw)
        self._device = device
        self._priority: int | None = prio
        self._owned = True
        self._keepalive: object = None
        self._own(functools.partial(_destroy_stream, raw), f"CUDA stream 0x{self._handle:x}")

    @classmethod
    def from_handle(cls, handle: int | SupportsCudaStream, *, device: int = 0,
                    owner: object = None) -> Stream:
        """Adopt an existing stream without owning it (``close()`` will not destroy it).

        Args:
            handle: A raw ``cudaStream_t`` as an int, or any object with ``__cuda_stream__``
                (a torch/cupy/cuda.core stream).
            device: The device the stream belongs to.
            owner: An object to keep alive as long as this wrapper lives (e.g. the torch stream).

        Raises:
            InvalidArgumentError: ``handle`` is neither an int nor a ``__cuda_stream__`` object.
        """
        value = as_stream_handle(handle)
        self = cls.__new__(cls)
        self._raw = runtime().cudaStream_t(init_value=value)
        self._handle = value
        self._device = device
        self._priority = None
        self._owned = False
        self._keepalive = owner if owner is not None else handle
        return self

    @property
    def handle(self) -> int:
        """The raw ``cudaStream_t`` as an int (0 is the legacy default stream)."""
        return self._handle

    @property
    def raw(self) -> Any:
        """The cuda-python ``cudaStream_t`` object, for calls into cuda.bindings."""
        return self._raw

    @property
    def device(self) -> int:
        """The device this stream runs on."""
        return self._device

    @property
    def owned(self) -> bool:
        """Whether ``close()`` destroys the stream (False for adopted handles)."""
        return self._owned

    @property
    def priority(self) -> int:
        """The stream's priority as CUDA reports it.

        Raises:
            CudaError: The query failed.
        """
        self._check_open()
        if self._priority is None:
            self._priority = int(check(runtime().cudaStreamGetPriority(self._raw),
                                       call="cudaStreamGetPriority"))
        return self._priority

    def __cuda_stream__(self) -> tuple[int, int]:
        """The CUDA stream protocol (version 0, handle), understood by cuda.core and others."""
        return (0, self._handle)

    def synchronize(self) -> None:
        """Block until all work enqueued on the stream has finished.

        Raises:
            CudaError: The stream or earlier work on it failed.
        """
        self._check_open()
        check(runtime().cudaStreamSynchronize(self._raw), call="cudaStreamSynchronize")

    def is_done(self) -> bool:
        """Whether all work enqueued so far has finished (non-blocking).

        Raises:
            CudaError: Work on the stream failed.
        """
        self._check_open()
        err = runtime().cudaStreamQuery(self._raw)[0]
        if int(err) == 0:
            return True
        if getattr(err, "name", "") == "cudaErrorNotReady":
            return False
        raise_cuda(err, call="cudaStreamQuery")

    def wait(self, event: Event) -> None:
        """Make later work on this stream wait until ``event`` has completed (no host block).

        Raises:
            CudaError: The runtime refused.
        """
        self._check_open()
        check(runtime().cudaStreamWaitEvent(self._raw, event.raw, 0), call="cudaStreamWaitEvent")

    def record(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new non-timing one if None) on this stream and return it.

        Raises:
            CudaError: The runtime refused.
        """
        ev = event if event is not None else Event(device=self._device)
        ev.record(self)
        return ev

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"priority={self._priority}"
        kind = "" if self._owned else " borrowed"
        return f"<edgert.cuda.Stream{kind} 0x{self._handle:x} device={self._device} {state}>"


#: What edgert takes wherever it takes a stream: an edgert Stream, a raw ``cudaStream_t`` as an
#: int, or any object with ``__cuda_stream__`` (torch, CuPy, cuda.core streams).
StreamLike: TypeAlias = "Stream | int | SupportsCudaStream"


def as_stream_handle(stream: StreamLike) -> int:
    """Return the raw handle of an edgert Stream, an int, or a ``__cuda_stream__`` object.

    Raises:
        InvalidArgumentError: ``stream`` is none of those.
    """
    if isinstance(stream, Stream):
        return stream.handle
    if isinstance(stream, int) and not isinstance(stream, bool):
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        value = proto() if callable(proto) else proto
        return int(value[1])
    raise InvalidArgumentError(
        f"not a CUDA stream: {stream!r}",
        hint="pass an edgert.cuda.Stream, a raw handle (int), or an object with __cuda_stream__",
    )


def _destroy_event(raw: Any) -> None:
    runtime().cudaEventDestroy(raw)


class Event(Owner):
    """A CUDA event owned by this object.

    Args:
        timing: Record timestamps so :meth:`elapsed_ms` works (slightly costlier to record).
        blocking_sync: :meth:`synchronize` sleeps instead of spinning (saves a CPU core; adds
            wake-up latency).
        device: The CUDA device.

    Raises:
        NotSupportedError: No usable CUDA device.
        CudaError: Event creation failed.
    """

    def __init__(self, *, timing: bool = False, blocking_sync: bool = False,
                 device: int = 0) -> None:
        require(device)
        rt = runtime()
        flags = 0 if timing else rt.cudaEventDisableTiming
        if blocking_sync:
            flags |= rt.cudaEventBlockingSync
        with _OnDevice(device):
            raw = check(rt.cudaEventCreateWithFlags(flags), call="cudaEventCreateWithFlags")
        self._raw = raw
        self._timing = timing
        self._device = device
        self._own(functools.partial(_destroy_event, raw), f"CUDA event 0x{int(raw):x}")

    @property
    def raw(self) -> Any:
        """The cuda-python ``cudaEvent_t`` object."""
        return self._raw

    @property
    def timing_enabled(self) -> bool:
        """Whether this event records timestamps."""
        return self._timing

    def record(self, stream: Stream) -> None:
        """Record the event on ``stream``.

        Raises:
            CudaError: The runtime refused.
        """
        self._check_open()
        check(runtime().cudaEventRecord(self._raw, stream.raw), call="cudaEventRecord")

    def synchronize(self) -> None:
        """Block until the work before the event's last record has finished.

        Raises:
            CudaError: That work failed.
        """
        self._check_open()
        check(runtime().cudaEventSynchronize(self._raw), call="cudaEventSynchronize")

    def is_done(self) -> bool:
        """Whether the recorded work has finished (non-blocking).

        Raises:
            CudaError: That work failed.
        """
        self._check_open()
        err = runtime().cudaEventQuery(self._raw)[0]
        if int(err) == 0:
            return True
        if getattr(err, "name", "") == "cudaErrorNotReady":
            return False
        raise_cuda(err, call="cudaEventQuery")

    @staticmethod
    def elapsed_ms(start: Event, end: Event) -> float:
        """Milliseconds of device time between two recorded timing events.

        Raises:
            InvalidArgumentError: Either event was created without ``timing=True``.
            CudaError: An event has not completed or was never recorded.
        """
        if not (start.timing_enabled and end.timing_enabled):
            raise InvalidArgumentError(
                "elapsed_ms needs two timing events",
                hint="create both with Event(timing=True)",
            )
        start._check_open()
        end._check_open()
        try:
            return float(check(runtime().cudaEventElapsedTime(start.raw, end.raw),
                               call="cudaEventElapsedTime"))
        except CudaError as err:
            if err.name == "cudaErrorNotReady":
                raise CudaError(err.code, err.name, err.description, call=err.call,
                                hint="call end.synchronize() before reading the time") from err
            raise
