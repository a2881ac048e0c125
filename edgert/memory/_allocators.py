"""The allocators behind :meth:`BufferPool.for_host` and :meth:`BufferPool.for_device`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from edgert.errors import InvalidArgumentError
from edgert.memory._allocation import MemoryKind
from edgert.memory._device_buffer import DeviceBuffer
from edgert.memory._host import HostBuffer, _host_only_refusal, _use_cuda
from edgert.memory._pooltypes import EventLike

__all__ = ["DeviceAllocator", "HostAllocator"]


class HostAllocator:
    """Allocates :class:`HostBuffer` blocks: pinned with CUDA, OS-locked without.

    Args:
        mapped: Zero-copy blocks with a device address.
        write_combined: Write-combined blocks (CPU writes only).
        portable: Pinned for every CUDA context.
        device: The CUDA device, or ``"host"`` for OS-locked memory even where CUDA exists.

    Raises:
        InvalidArgumentError: ``device`` is invalid.
        NotSupportedError: ``mapped``/``write_combined`` without CUDA.
    """

    def __init__(self, *, mapped: bool = False, write_combined: bool = False,
                 portable: bool = False, device: int | Literal["host"] = 0) -> None:
        cuda = _use_cuda(device)
        if not cuda and mapped:
            raise _host_only_refusal("mapped (zero-copy)")
        if not cuda and write_combined:
            raise _host_only_refusal("write-combined")
        self._cuda = cuda
        self._mapped = mapped
        self._write_combined = write_combined
        self._portable = portable
        self._device_arg = device
        self._device = device if cuda and isinstance(device, int) else None

    @property
    def kind(self) -> MemoryKind:
        """``PINNED`` with CUDA, ``OS_LOCKED`` without."""
        return MemoryKind.PINNED if self._cuda else MemoryKind.OS_LOCKED

    @property
    def device(self) -> int | None:
        """The CUDA device, or None for OS-locked memory."""
        return self._device

    @property
    def mapped(self) -> bool:
        """Blocks are mapped into the device address space."""
        return self._mapped

    def allocate(self, nbytes: int) -> HostBuffer:
        """Allocate one block.

        Raises:
            PermissionDeniedError: The OS refused to lock the memory.
            CudaError: ``cudaHostAlloc`` failed.
        """
        return HostBuffer(nbytes, mapped=self._mapped, write_combined=self._write_combined,
                          portable=self._portable, device=self._device_arg)

    def event_factory(self) -> Callable[[], EventLike] | None:
        """CUDA events on the device for stream-ordered release, or None without CUDA."""
        if self._device is None:
            return None
        from edgert.cuda import Event

        return partial(Event, device=self._device)


class DeviceAllocator:
    """Allocates :class:`DeviceBuffer` blocks (``cudaMalloc``) on one device.

    Raises:
        InvalidArgumentError: ``device`` is out of range.
        NotSupportedError: No usable CUDA device.
    """

    def __init__(self, *, device: int = 0) -> None:
        from edgert.cuda import require

        if isinstance(device, bool) or not isinstance(device, int):
            raise InvalidArgumentError(f"device must be a CUDA ordinal, not {device!r}")
        require(device)
        self._device = device

    @property
    def kind(self) -> MemoryKind:
        """Always ``DEVICE``."""
        return MemoryKind.DEVICE

    @property
    def device(self) -> int:
        """The CUDA device."""
        return self._device

    @property
    def mapped(self) -> bool:
        """Always False (device memory has only a device address)."""
        return False

    def allocate(self, nbytes: int) -> DeviceBuffer:
        """Allocate one block.

        Raises:
            CudaError: ``cudaMalloc`` failed.
        """
        return DeviceBuffer(nbytes, device=self._device)

    def event_factory(self) -> Callable[[], EventLike]:
        """CUDA events on the device for stream-ordered release."""
        from edgert.cuda import Event

        return partial(Event, device=self._device)
