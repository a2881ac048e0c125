"""DeviceBuffer: GPU memory owned by one object, with copies and zero-copy export."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from edgert import _reaper
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError
from edgert.memory._allocation import Allocation, MemoryKind, refcount
from edgert.memory._copy import PageablePolicy, copy_impl
from edgert.memory._interop import DeviceView, cai_stream, check_view, sync_consumer

if TYPE_CHECKING:
    from edgert.cuda import StreamLike

__all__ = ["DeviceBuffer"]


def _noop() -> None:
    return None


def _free_stream_ordered(ptr: int, stream: Any) -> None:
    from edgert.cuda import _memapi as api

    if stream.closed:  # the stream is gone: cudaFree waits for the device instead
        api.device_free(ptr)
    else:
        api.free_async(ptr, stream.raw)


class DeviceBuffer(Owner):
    """GPU memory: ``cudaMalloc``, or stream-ordered ``cudaMallocAsync`` on ``stream``.

    Exports (:meth:`view`, DLPack) keep the memory alive, so ``close()`` frees it at once when
    none is alive and otherwise when the last one dies. Reading ``__cuda_array_interface__``
    hands the consumer this object rather than the memory, so after that ``close()`` leaves the
    memory to be freed when this object is collected. Prefer :meth:`view` or DLPack.

    Args:
        nbytes: Size in bytes (> 0).
        device: The CUDA device.
        stream: Allocate stream-ordered on this :class:`edgert.cuda.Stream` where the device
            supports memory pools (the memory is then usable in stream order on ``stream``, and
            freed on it); elsewhere, or with None, plain ``cudaMalloc``.

    Raises:
        InvalidArgumentError: ``nbytes`` is invalid.
        NotSupportedError: No usable CUDA device.
        CudaError: The allocation failed.
    """

    def __init__(self, nbytes: int, *, device: int = 0, stream: Any = None) -> None:
        from edgert.cuda import _memapi as api
        from edgert.cuda import device_properties, require

        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
            raise InvalidArgumentError(f"nbytes must be a positive int, not {nbytes!r}")
        require(device)
        if stream is not None and device_properties(device).memory_pools_supported:
            ptr = api.malloc_async(nbytes, stream.raw, device)
            alloc = Allocation(ptr, nbytes, MemoryKind.DEVICE,
                               lambda: _free_stream_ordered(ptr, stream), device_ptr=ptr,
                               device=device)
            self._alloc_stream: Any = stream
        else:
            ptr = api.device_malloc(nbytes, device)
            alloc = Allocation(ptr, nbytes, MemoryKind.DEVICE, lambda: api.device_free(ptr),
                               device_ptr=ptr, device=device)
            self._alloc_stream = None
        self._alloc: Allocation | None = alloc
        self._ptr = ptr
        self._nbytes = nbytes
        self._device = device
        self._last_stream: Any = self._alloc_stream
        self._event: list[Any] = [None]
        self._cai_exported = False
        del alloc  # the baseline below must count only this object's reference
        self._alloc_refs = refcount(self._alloc)
        self._own(_noop, f"DeviceBuffer of {nbytes:,} bytes at 0x{ptr:x} on device {device}")

    # -- properties ------------------------------------------------------------------------

    @property
    def ptr(self) -> int:
        """Device address of the first byte.

        Raises:
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        return self._ptr

    @property
    def device_ptr(self) -> int:
        """Same as :attr:`ptr` (for symmetry with mapped host buffers and leases).

        Raises:
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        return self._ptr

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self._nbytes

    @property
    def device(self) -> int:
        """The CUDA device ordinal."""
        return self._device

    @property
    def kind(self) -> MemoryKind:
        """Always ``MemoryKind.DEVICE``."""
        return MemoryKind.DEVICE

    @property
    def stream(self) -> Any:
        """The stream of the last asynchronous copy (or the allocation stream), or None."""
        return self._last_stream

    @property
    def export_count(self) -> int:
        """Live device views and DLPack exports of this buffer (0 once closed)."""
        if self._alloc is None or self.closed:
            return 0
        return refcount(self._alloc) - self._alloc_refs

    def _memory_operand(self) -> tuple[int, int, MemoryKind]:
        self._check_open()
        return self._ptr, self._nbytes, MemoryKind.DEVICE

    def _note_stream(self, stream: Any) -> None:
        self._last_stream = stream if hasattr(stream, "handle") else None

    # -- copies ----------------------------------------------------------------------------

    def copy_from(self, src: Any, *, stream: StreamLike | None = None, nbytes: int | None = None,
                  pageable: PageablePolicy | str = PageablePolicy.ERROR) -> None:
        """Copy into this buffer from a host buffer, lease, array or device buffer.

        Args:
            src: The source; ``nbytes`` defaults to its size.
            stream: Enqueue on this stream and return at once (pinned host side), or None for a
                synchronous copy.
            nbytes: Bytes to copy.
            pageable: With a stream and a pageable host side: ``"error"`` (default),
                ``"warn"`` or ``"sync"``; see :class:`PageablePolicy`.

        Raises:
            InvalidArgumentError: Sizes do not fit, or a pageable source under "error".
            ResourceClosedError: This buffer or the source is closed.
            CudaError: The copy failed.
        """
        copy_impl(self, src, nbytes, stream, pageable, 3)

    def copy_to(self, dst: Any, *, stream: StreamLike | None = None, nbytes: int | None = None,
                pageable: PageablePolicy | str = PageablePolicy.ERROR) -> None:
        """Copy from this buffer into a host buffer, lease, array or device buffer.

        Args:
            dst: The destination; ``nbytes`` defaults to this buffer's size.
            stream: Enqueue on this stream and return at once (pinned host side), or None for a
                synchronous copy.
            nbytes: Bytes to copy.
            pageable: With a stream and a pageable host side: ``"error"`` (default),
                ``"warn"`` or ``"sync"``.

        Raises:
            InvalidArgumentError: Sizes do not fit, or a pageable destination under "error".
            ResourceClosedError: This buffer or the destination is closed.
            CudaError: The copy failed.
        """
        copy_impl(dst, self, nbytes, stream, pageable, 3)

    def fill(self, value: int, *, stream: StreamLike | None = None,
             nbytes: int | None = None) -> None:
        """Set every byte (or the first ``nbytes``) to ``value`` (``cudaMemsetAsync``).

        With ``stream=None`` the call waits for the fill to finish.

        Raises:
            InvalidArgumentError: ``value`` is not a byte or ``nbytes`` too large.
            ResourceClosedError: The buffer is closed.
            CudaError: The runtime refused.
        """
        from edgert.cuda import _memapi as api
        from edgert.memory._copy import _raw_stream

        self._check_open()
        n = self._nbytes if nbytes is None else nbytes
        if not 0 <= value <= 255 or not 0 <= n <= self._nbytes:
            raise InvalidArgumentError(f"fill({value}, nbytes={n}) does not fit a byte value "
                                       f"into {self._nbytes:,} bytes")
        raw = 0 if stream is None else _raw_stream(stream)
        api.memset_async(self._ptr, value, n, raw)
        if stream is None:
            api.stream_synchronize(0)
        else:
            self._note_stream(stream)

    # -- export ----------------------------------------------------------------------------

    def view(self, dtype: DTypeLike = np.uint8, shape: int | tuple[int, ...] | None = None, *,
             offset: int = 0, stream: Any = None, readonly: bool = False) -> DeviceView:
        """A typed device view (CAI v3 + DLPack) for torch, cupy or jax; no copy.

        Args:
            dtype: Element type.
            shape: Element shape; None for as many elements as fit after ``offset``.
            offset: Byte offset of the first element.
            stream: The stream the data is produced on (consumers wait on it); default the
                stream of this buffer's last asynchronous copy.
            readonly: Tell consumers not to write (CAI ``data[1]``; the DLPack 1.x flag, and a
                refused export for a consumer that cannot see it).

        Raises:
            InvalidArgumentError: The view does not fit or is misaligned.
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        dt, shp = check_view(dtype, shape, offset, self._nbytes)
        return DeviceView(self._alloc, self._ptr, offset=offset, dtype=dt, shape=shp,
                          device=self._device,
                          stream=self._last_stream if stream is None else stream,
                          readonly=readonly)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        if self.closed:
            raise AttributeError("a closed DeviceBuffer exports nothing")
        self._cai_exported = True
        return {"shape": (self._nbytes,), "typestr": "|u1", "data": (self._ptr, False),
                "strides": None, "mask": None, "version": 3,
                "stream": cai_stream(self._last_stream)}

    def __dlpack__(self, *, stream: int | None = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """Export the bytes (uint8, 1-D) as a ``kDLCUDA`` DLPack capsule.

        Raises:
            BufferError: A copy or another device was asked for.
            ResourceClosedError: The buffer is closed.
            CudaError: Making the consumer's stream wait failed.
        """
        from edgert.memory._dlpack import KDL_CUDA, to_dlpack

        self._check_open()
        if copy:
            raise BufferError("DeviceBuffer exports without copying; copy=True is not supported")
        if dl_device is not None and tuple(dl_device) != (KDL_CUDA, self._device):
            raise BufferError(f"DeviceBuffer lives on CUDA device {self._device}, not {dl_device}")
        sync_consumer(self._last_stream, stream, self._event)
        return to_dlpack(self._ptr, 0, (self._nbytes,), np.dtype(np.uint8),
                         device_type=KDL_CUDA, device_id=self._device, owner=self._alloc,
                         max_version=max_version)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, self._device)

    def close(self) -> None:
        """Release the buffer; the memory goes now, or when its last export dies."""
        if self.closed:
            return
        with _reaper.inline():  # without live exports the memory goes now, on this thread
            super().close()
            if not self._cai_exported:
                self._alloc = None
        ev = self._event[0]
        if ev is not None:
            ev.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return (f"<edgert.memory.DeviceBuffer {self._nbytes:,} bytes at 0x{self._ptr:x} "
                f"device={self._device}{state}>")
