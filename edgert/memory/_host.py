"""HostBuffer: page-locked host memory owned by one object."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

from edgert import _reaper
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.memory._allocation import Allocation, MemoryKind, refcount
from edgert.memory._interop import DeviceView, check_view

__all__ = ["HostBuffer"]

DeviceArg = int | Literal["host"]


def _noop() -> None:
    return None


def _check_nbytes(nbytes: object) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
        raise InvalidArgumentError(f"nbytes must be a positive int, not {nbytes!r}")
    return nbytes


def _use_cuda(device: DeviceArg) -> bool:
    if device == "host":
        return False
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise InvalidArgumentError(f"device must be a CUDA ordinal or 'host', not {device!r}")
    from edgert.cuda import is_available

    return is_available()


def _host_only_refusal(feature: str) -> NotSupportedError:
    from edgert.cuda import unavailable_reason

    why = unavailable_reason() or "device='host' was asked for"
    return NotSupportedError(
        f"{feature} host memory needs CUDA ({why})",
        hint="drop the flag: without a GPU, HostBuffer gives OS-locked memory (mmap + mlock)")


def _allocate(nbytes: int, mapped: bool, write_combined: bool, portable: bool,
              device: DeviceArg) -> Allocation:
    if not _use_cuda(device):
        if mapped:
            raise _host_only_refusal("mapped (zero-copy)")
        if write_combined:
            raise _host_only_refusal("write-combined")
        from edgert.memory._oslocked import map_locked, unmap_locked

        ptr, length = map_locked(nbytes)
        return Allocation(ptr, nbytes, MemoryKind.OS_LOCKED, partial(unmap_locked, ptr, length))
    from edgert.cuda import _memapi as api
    from edgert.cuda import device_properties, require

    assert isinstance(device, int)
    require(device)
    if mapped and not device_properties(device).can_map_host_memory:
        raise NotSupportedError(f"CUDA device {device} cannot map host memory",
                                hint="use mapped=False and copy with DeviceBuffer.copy_from")
    flags = ((api.HOST_ALLOC_MAPPED if mapped else 0)
             | (api.HOST_ALLOC_WRITE_COMBINED if write_combined else 0)
             | (api.HOST_ALLOC_PORTABLE if portable else 0))
    ptr = api.host_alloc(nbytes, flags, device)
    try:
        dptr = api.host_device_pointer(ptr, device) if mapped else None
    except BaseException:
        api.free_host(ptr)
        raise
    return Allocation(ptr, nbytes, MemoryKind.PINNED, partial(api.free_host, ptr),
                      device_ptr=dptr, device=device)


class HostBuffer(Owner):
    """Page-locked host memory: the staging area for copies, or zero-copy memory for the GPU.

    With CUDA, ``cudaHostAlloc`` with the flags asked for. Without CUDA (or with
    ``device="host"``), anonymous memory locked by the kernel (mmap + mlock), so that real-time
    code never page-faults on it either.

    Views (:meth:`view`, ``np.asarray(buf)``, DLPack, :meth:`device_view`) share the bytes and
    keep them alive: ``close()`` frees the memory at once when no view is alive, otherwise when
    the last one dies, so a view never reads freed memory. ``closed`` is True either way.

    Args:
        nbytes: Size in bytes (> 0).
        mapped: Map the memory into the device address space (zero copy: kernels read it over
            the bus; on Jetson, where CPU and GPU share DRAM, this is the fast path).
        write_combined: Write-combined memory: faster for the GPU to read across PCIe, very slow
            for the CPU to read. Only for buffers the CPU writes and never reads.
        portable: Pinned for every CUDA context, not only the device's.
        device: The CUDA device whose context owns the memory, or ``"host"`` for OS-locked
            memory even where CUDA exists.

    Raises:
        InvalidArgumentError: ``nbytes`` or ``device`` is invalid.
        NotSupportedError: ``mapped``/``write_combined`` without CUDA, or mapping unsupported.
        PermissionDeniedError: The OS refused to lock the memory (RLIMIT_MEMLOCK).
        CudaError: ``cudaHostAlloc`` failed.
    """

    def __init__(self, nbytes: int, *, mapped: bool = False, write_combined: bool = False,
                 portable: bool = False, device: DeviceArg = 0) -> None:
        alloc = _allocate(_check_nbytes(nbytes), mapped, write_combined, portable, device)
        self._init(alloc, mapped=mapped, write_combined=write_combined, portable=portable)

    def _init(self, alloc: Allocation, *, mapped: bool, write_combined: bool,
              portable: bool) -> None:
        self._alloc: Allocation | None = alloc
        self._ptr = alloc.ptr
        self._nbytes = alloc.nbytes
        self._kind = alloc.kind
        self._device_ptr = alloc.device_ptr
        self._device = alloc.device
        self._mapped = mapped
        self._write_combined = write_combined
        self._portable = portable
        self._cai_exported = False
        self._root: NDArray[np.uint8] | None = np.asarray(alloc)
        self._root_refs = refcount(self._root)
        self._own(_noop, f"HostBuffer of {alloc.nbytes:,} bytes at 0x{alloc.ptr:x}")

    @classmethod
    def register(cls, source: Any, *, mapped: bool = False, portable: bool = False,
                 device: DeviceArg = 0) -> HostBuffer:
        """Page-lock memory the caller already has (a numpy array, bytearray, mmap, ...).

        With CUDA, ``cudaHostRegister``; without, the pages are ``mlock``-ed. The buffer keeps
        ``source`` alive and unregisters (unlocks) when it is closed and no view is alive.

        Args:
            source: A writable, C-contiguous object supporting the buffer protocol.
            mapped: Also map it for the device (``cudaHostRegisterMapped``).
            portable: Register for every CUDA context.
            device: The CUDA device, or ``"host"`` to mlock even where CUDA exists.

        Raises:
            InvalidArgumentError: ``source`` is read-only, not contiguous or empty.
            NotSupportedError: ``mapped`` without CUDA.
            PermissionDeniedError: ``mlock`` was refused (RLIMIT_MEMLOCK).
            CudaError: ``cudaHostRegister`` failed (e.g. the range is already registered).
        """
        try:
            flat = np.frombuffer(memoryview(source), dtype=np.uint8)
        except (TypeError, BufferError, ValueError) as err:
            raise InvalidArgumentError(
                f"cannot register {type(source).__name__}: {err}",
                hint="pass a C-contiguous, writable numpy array, bytearray or mmap") from err
        if not flat.flags.writeable:
            raise InvalidArgumentError(
                f"cannot register read-only memory ({type(source).__name__})",
                hint="register a writable copy")
        nbytes = _check_nbytes(flat.nbytes)
        ptr = int(flat.ctypes.data)
        if not _use_cuda(device):
            if mapped:
                raise _host_only_refusal("mapped (zero-copy)")
            from edgert.memory._oslocked import lock_pages, unlock_pages

            start, length = lock_pages(ptr, nbytes)
            alloc = Allocation(ptr, nbytes, MemoryKind.OS_LOCKED,
                               partial(unlock_pages, start, length), keep=flat)
        else:
            from edgert.cuda import _memapi as api
            from edgert.cuda import require

            assert isinstance(device, int)
            require(device)
            flags = ((api.HOST_REGISTER_MAPPED if mapped else 0)
                     | (api.HOST_REGISTER_PORTABLE if portable else 0))
            api.host_register(ptr, nbytes, flags, device)
            try:
                dptr = api.host_device_pointer(ptr, device) if mapped else None
            except BaseException:
                api.host_unregister(ptr)
                raise
            alloc = Allocation(ptr, nbytes, MemoryKind.REGISTERED,
                               partial(api.host_unregister, ptr), device_ptr=dptr, device=device,
                               keep=flat)
        self = cls.__new__(cls)
        self._init(alloc, mapped=mapped, write_combined=False, portable=portable)
        return self

    # -- properties ------------------------------------------------------------------------

    @property
    def ptr(self) -> int:
        """Host address of the first byte.

        Raises:
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        return self._ptr

    @property
    def device_ptr(self) -> int:
        """Device address of the memory (mapped buffers only).

        Raises:
            NotSupportedError: The buffer is not mapped.
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        if self._device_ptr is None:
            raise NotSupportedError("this HostBuffer is not mapped into the device address space",
                                    hint="create it with mapped=True for zero-copy access")
        return self._device_ptr

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self._nbytes

    @property
    def kind(self) -> MemoryKind:
        """``PINNED``, ``REGISTERED`` or ``OS_LOCKED``."""
        return self._kind

    @property
    def device(self) -> int | None:
        """The CUDA device the memory is pinned for, or None for OS-locked memory."""
        return self._device

    @property
    def is_pinned(self) -> bool:
        """Page-locked by CUDA, so copies from and to it run asynchronously."""
        return self._kind is not MemoryKind.OS_LOCKED

    @property
    def is_mapped(self) -> bool:
        """Mapped into the device address space (zero copy)."""
        return self._mapped

    @property
    def is_write_combined(self) -> bool:
        """Write-combined (never read it from the CPU)."""
        return self._write_combined

    @property
    def is_portable(self) -> bool:
        """Pinned for all CUDA contexts."""
        return self._portable

    @property
    def export_count(self) -> int:
        """Live views and DLPack exports of this buffer (0 once closed)."""
        if self._root is None:
            return 0
        return refcount(self._root) - self._root_refs

    def _memory_operand(self) -> tuple[int, int, MemoryKind]:
        self._check_open()
        return self._ptr, self._nbytes, self._kind

    # -- views -----------------------------------------------------------------------------

    def view(self, dtype: DTypeLike = np.uint8, shape: int | tuple[int, ...] | None = None, *,
             offset: int = 0) -> NDArray[Any]:
        """A numpy array over the bytes, without copying; it keeps the memory alive.

        Args:
            dtype: Element type.
            shape: Element shape; None for as many elements as fit after ``offset``.
            offset: Byte offset of the first element (aligned for ``dtype``).

        Raises:
            InvalidArgumentError: The view does not fit or is misaligned.
            ResourceClosedError: The buffer is closed.
        """
        self._check_open()
        dt, shp = check_view(dtype, shape, offset, self._nbytes)
        out: NDArray[Any] = np.ndarray(shp, dt, buffer=self._root, offset=offset)
        return out

    def device_view(self, dtype: DTypeLike = np.uint8,
                    shape: int | tuple[int, ...] | None = None, *,
                    offset: int = 0, readonly: bool = False) -> DeviceView:
        """The same bytes as the device sees them (mapped buffers): CAI and DLPack on kDLCUDA.

        ``readonly`` tells consumers not to write (CAI ``data[1]``, the DLPack 1.x flag).

        Raises:
            NotSupportedError: The buffer is not mapped.
            InvalidArgumentError: The view does not fit or is misaligned.
            ResourceClosedError: The buffer is closed.
        """
        dptr = self.device_ptr
        dt, shp = check_view(dtype, shape, offset, self._nbytes)
        assert self._device is not None
        return DeviceView(self._root, dptr, offset=offset, dtype=dt, shape=shp,
                          device=self._device, readonly=readonly)

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NDArray[Any]:
        self._check_open()
        assert self._root is not None
        root = self._root
        if dtype is None or np.dtype(dtype) == root.dtype:
            return root.copy() if copy else root  # the buffer itself, as numpy asks
        # Another dtype is a conversion, so a copy: never one handed out as if it were the
        # buffer (found by a hostile trial: writes through np.asarray(buf, dtype=...) were lost).
        if copy is False:
            raise ValueError(f"a HostBuffer holds uint8; {np.dtype(dtype)} needs a copy "
                             "(view it with buffer.view(dtype, shape) instead)")
        return root.astype(dtype)

    def __dlpack__(self, *, stream: int | None = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """Export the bytes (uint8, 1-D) as a host (``kDLCPU``) DLPack capsule.

        Raises:
            BufferError: A copy or a non-CPU device was asked for.
            ResourceClosedError: The buffer is closed.
        """
        from edgert.memory._dlpack import KDL_CPU, to_dlpack

        self._check_open()
        if copy:
            raise BufferError("HostBuffer exports without copying; copy=True is not supported")
        if dl_device is not None and tuple(dl_device) != (KDL_CPU, 0):
            raise BufferError(f"HostBuffer is host memory; it cannot be exported to {dl_device} "
                              f"(use device_view() for the device side of mapped memory)")
        return to_dlpack(self._ptr, 0, (self._nbytes,), np.dtype(np.uint8), device_type=KDL_CPU,
                         device_id=0, owner=self._root, max_version=max_version)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Mapped buffers only: the device pointer as uint8[nbytes] (no stream to wait on).

        Once read, ``close()`` leaves the memory to be freed when this object is collected,
        since the consumer holds this object, not the memory.
        """
        if self._device_ptr is None or self.closed:
            raise AttributeError("only an open, mapped HostBuffer is visible to the device")
        self._cai_exported = True
        return {"shape": (self._nbytes,), "typestr": "|u1", "data": (self._device_ptr, False),
                "strides": None, "mask": None, "version": 3, "stream": None}

    def close(self) -> None:
        """Release the buffer; the memory goes now, or when its last view dies."""
        if self.closed:
            return
        with _reaper.inline():  # without live views the memory goes now, on this thread
            super().close()
            self._root = None
            if not self._cai_exported:
                self._alloc = None

    def __repr__(self) -> str:
        flags = "".join(f" {n}" for n, on in (("mapped", self._mapped),
                                               ("write_combined", self._write_combined),
                                               ("portable", self._portable)) if on)
        state = " closed" if self.closed else ""
        return (f"<edgert.memory.HostBuffer {self._kind} {self._nbytes:,} bytes at "
                f"0x{self._ptr:x}{flags}{state}>")
