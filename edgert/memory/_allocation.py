"""One block of memory and the rule that frees it: when nothing refers to it any more.

Buffers (:class:`HostBuffer`, :class:`DeviceBuffer`) own an :class:`Allocation`; every export —
a numpy view, a DLPack capsule or tensor, a :class:`DeviceView` — refers to it too, directly or
through numpy's base chain. ``close()`` drops the buffer's reference: with no exports alive the
memory is freed at once (CPython frees on the last reference); otherwise it is freed when the
last export dies. A view that outlives ``close()`` therefore reads valid memory, never a freed
page, and the process cannot crash on it. Freeing then happens on edgert's reaper thread, not on
whichever thread dropped the last view (``cudaFreeHost`` synchronizes the device: a real-time
loop must not pay for it); ``close()`` and the pools free inline (:func:`edgert._reaper.inline`).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from edgert import _reaper
from edgert._compat import StrEnum

__all__ = ["Allocation", "MemoryKind", "refcount"]

refcount = sys.getrefcount


class MemoryKind(StrEnum):
    """Where a buffer's bytes live and how they were locked.

    Attributes:
        PINNED: ``cudaHostAlloc`` host memory: page-locked, DMA-able, asynchronous copies.
        REGISTERED: existing host memory page-locked with ``cudaHostRegister``.
        OS_LOCKED: host memory locked by the kernel (``mlock``) on a machine without CUDA, or
            with ``device="host"``; CUDA treats it as pageable.
        DEVICE: GPU memory (``cudaMalloc`` / ``cudaMallocAsync``).
        PAGEABLE: ordinary host memory (numpy arrays and the like); never allocated by edgert.
    """

    PINNED = "pinned"
    REGISTERED = "registered"
    OS_LOCKED = "os_locked"
    DEVICE = "device"
    PAGEABLE = "pageable"


def _free_quietly(free: Callable[[], None]) -> None:
    try:
        free()
    except Exception:  # a dead driver or interpreter shutdown: nothing left to free into
        pass


def _free_when_dead(free: Callable[[], None]) -> None:
    _reaper.reap_unless_inline(partial(_free_quietly, free))


class Allocation:
    """A block of memory, freed by ``free`` when the last reference to this object goes.

    Host allocations expose ``__array_interface__`` so that ``np.asarray(allocation)`` is a
    uint8 array over the bytes whose base is this object.
    """

    __slots__ = ("__weakref__", "device", "device_ptr", "keep", "kind", "nbytes", "ptr")

    def __init__(self, ptr: int, nbytes: int, kind: MemoryKind, free: Callable[[], None], *,
                 device_ptr: int | None = None, device: int | None = None,
                 keep: object = None) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        self.kind = kind
        self.device_ptr = device_ptr
        self.device = device
        self.keep = keep  # e.g. the user's array behind a registered range
        _reaper.start()  # here, not in the finalizer that may need it
        fin = weakref.finalize(self, _free_when_dead, free)
        # At interpreter exit the process's memory goes anyway; calling into a CUDA runtime that
        # is being torn down only risks a crash.
        fin.atexit = False

    @property
    def __array_interface__(self) -> dict[str, Any]:
        if self.kind is MemoryKind.DEVICE:
            raise AttributeError("device memory has no __array_interface__")
        return {"data": (self.ptr, False), "shape": (self.nbytes,), "typestr": "|u1",
                "version": 3}
