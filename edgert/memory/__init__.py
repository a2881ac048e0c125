"""Memory that never allocates on the hot path: pinned host buffers, device buffers, pools.

* :class:`HostBuffer` — page-locked host memory (``cudaHostAlloc``: pinned, mapped zero-copy,
  write-combined; or OS-locked mmap + mlock on machines without CUDA), and
  :meth:`HostBuffer.register` for memory you already have.
* :class:`DeviceBuffer` — GPU memory with ``copy_from``/``copy_to`` and zero-copy export
  (``__cuda_array_interface__`` v3, DLPack) through :class:`DeviceView`.
* :class:`BufferPool` — a hard-budget pool of size-classed blocks handed out as
  :class:`Lease` objects; prewarm it and the real-time loop allocates nothing.
* :func:`copy` — any of the above (or a numpy array) to any other, on a stream or not.

Importing this package loads numpy but not CUDA.
"""

from edgert._protocols import SupportsCudaArrayInterface, SupportsDLPack
from edgert.memory._allocation import MemoryKind
from edgert.memory._allocators import DeviceAllocator, HostAllocator
from edgert.memory._copy import PageableCopyWarning, PageablePolicy, copy
from edgert.memory._device_buffer import DeviceBuffer
from edgert.memory._host import HostBuffer
from edgert.memory._interop import DeviceView
from edgert.memory._lease import Lease
from edgert.memory._oslocked import locked_bytes, memlock_limit
from edgert.memory._pool import BufferPool
from edgert.memory._pooltypes import (
    Allocator,
    ClassStats,
    EventLike,
    PoolMemory,
    PoolOptions,
    PoolStats,
)
from edgert.memory._sizeclass import SizeClasses

__all__ = [
    "Allocator",
    "BufferPool",
    "ClassStats",
    "DeviceAllocator",
    "DeviceBuffer",
    "DeviceView",
    "EventLike",
    "HostAllocator",
    "HostBuffer",
    "Lease",
    "MemoryKind",
    "PageableCopyWarning",
    "PageablePolicy",
    "PoolMemory",
    "PoolOptions",
    "PoolStats",
    "SizeClasses",
    "SupportsCudaArrayInterface",
    "SupportsDLPack",
    "copy",
    "locked_bytes",
    "memlock_limit",
]
