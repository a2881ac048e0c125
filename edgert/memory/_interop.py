"""Zero-copy hand-off to other libraries: ``__cuda_array_interface__`` v3, DLPack, typed views.

Stream semantics follow the two specifications:

* ``__cuda_array_interface__["stream"]`` names the stream on which the data was last written
  (the consumer makes its own work wait on it); None means no synchronization is needed. The
  legacy default stream is reported as 1, never 0 (which the specification forbids).
* ``__dlpack__(stream=s)`` is the consumer's stream: the producer makes ``s`` wait for the
  producing stream with an event (no host block). ``None`` means the legacy default stream
  (1), and ``-1`` asks for no synchronization at all.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from edgert.errors import InvalidArgumentError

__all__ = ["DeviceView", "cai_stream", "check_view", "sync_consumer"]


def check_view(dtype: DTypeLike, shape: int | tuple[int, ...] | None, offset: int,
               nbytes: int) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Validate a typed view of ``nbytes`` bytes; returns the dtype and shape.

    Raises:
        InvalidArgumentError: The view does not fit, the offset is misaligned or negative.
    """
    dt = np.dtype(dtype)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidArgumentError(f"offset must be a non-negative int, not {offset!r}")
    if dt.itemsize == 0:
        raise InvalidArgumentError(f"cannot view memory as {dt} (zero-sized items)")
    if dt.hasobject:  # bytes read as PyObject pointers crashed the interpreter (hostile trial)
        raise InvalidArgumentError(f"cannot view raw memory as {dt}: it holds Python objects",
                                   hint="view it as a numeric dtype")
    if offset % dt.alignment:
        raise InvalidArgumentError(
            f"offset {offset} is not aligned for {dt} (needs a multiple of {dt.alignment})",
            hint="place tensors at offsets that are multiples of their item size")
    if shape is None:
        shp: tuple[int, ...] = ((nbytes - offset) // dt.itemsize,) if nbytes > offset else (0,)
    elif isinstance(shape, int) and not isinstance(shape, bool):
        shp = (shape,)
    else:
        given: Any = shape  # whatever the caller passed, checked here
        try:  # operator.index: 2.7 became 2 and "12" became (1, 2) (found by a hostile trial)
            if isinstance(given, (str, bytes)) or any(isinstance(s, bool) for s in given):
                raise TypeError
            shp = tuple(operator.index(s) for s in given)
        except TypeError:
            raise InvalidArgumentError(f"shape must be an int or a sequence of ints, not "
                                       f"{shape!r}") from None
    count = 1
    for extent in shp:
        if extent < 0:
            raise InvalidArgumentError(f"negative extent in shape {shp}")
        count *= extent
    need = count * dt.itemsize
    if offset + need > nbytes:
        raise InvalidArgumentError(
            f"a {dt} view of shape {shp} at offset {offset} needs {offset + need:,} bytes; "
            f"the buffer has {nbytes:,}",
            hint="allocate (or acquire) a larger buffer, or view fewer elements")
    return dt, shp


def cai_stream(stream: Any) -> int | None:
    """The ``stream`` entry of ``__cuda_array_interface__`` for a producing stream (or None)."""
    if stream is None:
        return None
    handle = int(stream.handle)
    return handle if handle else 1


def sync_consumer(producer: Any, consumer: int | None, event_slot: list[Any] | None) -> None:
    """Make the DLPack consumer's stream wait for ``producer`` (an edgert Stream or None).

    Args:
        producer: The stream the data was last written on, or None when nothing is pending.
        consumer: The ``stream`` argument of ``__dlpack__``.
        event_slot: A one-element list caching the event used for the wait, or None to use a
            throwaway event (CUDA defers its destruction until the wait is satisfied).

    Raises:
        BufferError: ``consumer`` is 0 or below -1 (forbidden by the specification).
        CudaError: Recording the event or the wait failed.
    """
    target = 1 if consumer is None else int(consumer)
    if target == -1 or producer is None:
        return
    if target == 0 or target < -1:
        raise BufferError(f"__dlpack__ stream {target} is not allowed for CUDA (use None, 1, 2 "
                          f"or a stream handle)")
    own = int(producer.handle) or 1
    if target == own:
        return
    from edgert.cuda import Event
    from edgert.cuda._memapi import stream_wait_event

    if event_slot is None:
        with Event(device=producer.device) as ev:
            ev.record(producer)
            stream_wait_event(target, ev.raw)
        return
    ev = event_slot[0]
    if ev is None:
        ev = event_slot[0] = Event(device=producer.device)
    ev.record(producer)
    stream_wait_event(target, ev.raw)


class DeviceView:
    """A typed, device-side view of CUDA-visible memory for torch, cupy, jax and the like.

    It exposes ``__cuda_array_interface__`` (v3) and DLPack (``kDLCUDA``), holds the memory
    alive for as long as it (or anything that imported it) lives, and copies nothing. Make one
    with :meth:`DeviceBuffer.view`, :meth:`HostBuffer.device_view` (mapped memory) or
    :meth:`Lease.device_view`.
    """

    __slots__ = ("__weakref__", "_device", "_dtype", "_keep", "_offset", "_ptr", "_readonly",
                 "_shape", "_stream")

    def __init__(self, keep: object, base_ptr: int, *, offset: int, dtype: np.dtype[Any],
                 shape: tuple[int, ...], device: int, stream: Any = None,
                 readonly: bool = False) -> None:
        self._keep = keep
        self._ptr = base_ptr
        self._offset = offset
        self._dtype = dtype
        self._shape = shape
        self._device = device
        self._stream = stream
        self._readonly = bool(readonly)

    @property
    def readonly(self) -> bool:
        """Consumers are told not to write (CAI ``data[1]``, the DLPack 1.x read-only flag)."""
        return self._readonly

    @property
    def ptr(self) -> int:
        """Device address of the first element."""
        return self._ptr + self._offset

    @property
    def shape(self) -> tuple[int, ...]:
        """Element shape (C order)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type."""
        return self._dtype

    @property
    def nbytes(self) -> int:
        """Bytes covered by the view."""
        return int(np.prod(self._shape, dtype=np.int64)) * self._dtype.itemsize

    @property
    def device(self) -> int:
        """The CUDA device ordinal."""
        return self._device

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self._shape, "typestr": self._dtype.str, "descr": [("", self._dtype.str)],
                "data": (self._ptr + self._offset, self._readonly), "strides": None,
                "mask": None, "version": 3, "stream": cai_stream(self._stream)}

    def __dlpack__(self, *, stream: int | None = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """Export as a DLPack capsule on ``kDLCUDA`` (see the module notes on ``stream``).

        Raises:
            BufferError: A copy or another device was asked for, the dtype has no DLPack
                code, or the view is read-only and the consumer did not ask for DLPack 1.x
                (only a versioned capsule carries the read-only flag).
        """
        from edgert.memory._dlpack import KDL_CUDA, to_dlpack, wants_versioned

        if self._readonly and not wants_versioned(max_version):
            # Refused before the stream wait below, which would otherwise be enqueued for nothing.
            raise BufferError("this view is read-only, and only a DLPack 1.x consumer "
                              "(__dlpack__(max_version=(1, 0))) can be told so")
        if copy:
            raise BufferError("DeviceView exports without copying; copy=True is not supported")
        if dl_device is not None and tuple(dl_device) != (KDL_CUDA, self._device):
            raise BufferError(f"DeviceView lives on CUDA device {self._device}, not {dl_device}")
        sync_consumer(self._stream, stream, None)
        return to_dlpack(self._ptr, self._offset, self._shape, self._dtype,
                         device_type=KDL_CUDA, device_id=self._device, owner=self._keep,
                         max_version=max_version, readonly=self._readonly)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, self._device)

    def __repr__(self) -> str:
        ro = " readonly" if self._readonly else ""
        return (f"<edgert.memory.DeviceView {self._dtype}{list(self._shape)} at 0x{self.ptr:x} "
                f"device={self._device}{ro}>")
