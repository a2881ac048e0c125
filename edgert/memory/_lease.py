"""Lease: the right to use one pool block until release."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from edgert.errors import NotSupportedError, ResourceClosedError
from edgert.memory._allocation import MemoryKind
from edgert.memory._copy import PageablePolicy, copy_impl
from edgert.memory._interop import DeviceView, check_view, sync_consumer
from edgert.memory._pooltypes import Block, LeaseHome, Span

if TYPE_CHECKING:
    from edgert.cuda import StreamLike

__all__ = ["Lease"]


def _released() -> ResourceClosedError:
    return ResourceClosedError(
        "this lease has been released (or its pool was closed)",
        hint="acquire a new lease; do not keep a lease or its raw pointer past release()")


class Lease:
    """One block of a :class:`BufferPool`, yours until :meth:`release`.

    A lease is a context manager (leaving the block releases it, unless you already did). It is
    owned by one thread at a time. Lease objects are recycled by the pool so that ``acquire``
    allocates nothing; a released lease raises :class:`~edgert.ResourceClosedError` on use until
    the pool hands the same object out again, so never keep one past :meth:`release`. Code
    that must keep a lease beyond one acquisition keeps its :attr:`generation` too and passes
    it to :meth:`release`: a stale reference is then refused even after the object was
    recycled. Numpy views, DLPack exports and device views taken from a lease keep its block
    out of circulation until they die; the raw :attr:`ptr` does not.
    """

    __slots__ = ("__weakref__", "_bell", "_entered", "_nbytes", "_pool", "_stream", "_tok",
                 "_uses")

    def __init__(self, pool: LeaseHome) -> None:
        self._pool = pool
        self._bell = pool.bell
        # Holds the block while leased. Releasing pops it: one atomic deque operation, so of two
        # threads racing to release the same lease exactly one wins and the other is told.
        self._tok: deque[Block] = deque()
        self._nbytes = 0
        self._uses = 0  # acquisitions of this object: the pool's hit count, and a generation
        self._entered = -1
        self._stream: Any = None

    def _block(self) -> Block:
        try:
            return self._tok[0]
        except IndexError:
            raise _released() from None

    # -- what the lease holds --------------------------------------------------------------

    @property
    def ptr(self) -> int:
        """Address of the block: a host address for host pools, a device one for device pools.

        Raises:
            ResourceClosedError: The lease was released.
        """
        blk = self._block()
        return blk.ptr

    @property
    def device_ptr(self) -> int:
        """The block's device address (device pools and mapped host pools).

        Raises:
            NotSupportedError: The block has no device address.
            ResourceClosedError: The lease was released.
        """
        blk = self._block()
        if blk.device_ptr is None:
            raise NotSupportedError("this pool's blocks have no device address",
                                    hint="use BufferPool.for_host(mapped=True) or for_device()")
        return blk.device_ptr

    @property
    def nbytes(self) -> int:
        """Bytes asked for in :meth:`BufferPool.acquire`."""
        return self._nbytes

    @property
    def capacity(self) -> int:
        """Bytes actually usable (the size class, >= :attr:`nbytes`).

        Raises:
            ResourceClosedError: The lease was released.
        """
        blk = self._block()
        return blk.capacity

    @property
    def kind(self) -> MemoryKind:
        """What the block is (``PINNED``, ``OS_LOCKED``, ``DEVICE``, ...).

        Raises:
            ResourceClosedError: The lease was released.
        """
        blk = self._block()
        return blk.kind

    @property
    def generation(self) -> int:
        """Which acquisition of this (recycled) lease object is the current one.

        Keep it with the lease and pass it to :meth:`release` when a reference may outlive its
        acquisition: the pool hands lease objects out again, and the generation is what tells
        the current holder from a stale reference.
        """
        return self._uses

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has run for this acquisition."""
        return not self._tok

    def _memory_operand(self) -> tuple[int, int, MemoryKind]:
        blk = self._block()
        return blk.ptr, self._nbytes, blk.kind

    def _anchor(self, blk: Block) -> Any:
        """What this acquisition's views hang from: made with the first view, watched weakly.

        A fresh object per acquisition (views of an earlier one cannot keep this one's block
        back, and no refcount baseline is needed). A host block's anchor is a uint8 array whose
        ``base`` is a Span, not an array: numpy shortens a view's base chain only through
        arrays, so every view of it, and every view of those, names the anchor as its base.
        A device block's anchor is the Span itself.
        """
        ref = blk.anchor
        anchor = ref() if ref is not None else None
        if anchor is None:
            span = Span(blk.ptr, blk.capacity, blk.root)
            anchor = span if blk.kind is MemoryKind.DEVICE else np.asarray(span)
            self._pool.watch_views(blk, anchor)
        return anchor

    def _note_stream(self, stream: Any) -> None:
        self._stream = stream if hasattr(stream, "handle") else None

    # -- views and copies ------------------------------------------------------------------

    def view(self, dtype: DTypeLike = np.uint8, shape: int | tuple[int, ...] | None = None, *,
             offset: int = 0) -> NDArray[Any]:
        """A numpy array over the first :attr:`nbytes` bytes (host pools), without copying.

        Raises:
            NotSupportedError: The pool holds device memory.
            InvalidArgumentError: The view does not fit in :attr:`nbytes` or is misaligned.
            ResourceClosedError: The lease was released.
        """
        blk = self._block()
        if blk.kind is MemoryKind.DEVICE:
            raise NotSupportedError("a device-memory lease has no host view",
                                    hint="use device_view(), or copy_to() a host lease")
        dt, shp = check_view(dtype, shape, offset, self._nbytes)
        out: NDArray[Any] = np.ndarray(shp, dt, buffer=self._anchor(blk), offset=offset)
        return out

    def device_view(self, dtype: DTypeLike = np.uint8,
                    shape: int | tuple[int, ...] | None = None, *, offset: int = 0,
                    stream: Any = None, readonly: bool = False) -> DeviceView:
        """A typed device view (CAI + DLPack) of the block, for device or mapped host pools.

        ``readonly`` tells consumers not to write (CAI ``data[1]``, the DLPack 1.x flag).

        Raises:
            NotSupportedError: The block has no device address.
            InvalidArgumentError: The view does not fit or is misaligned.
            ResourceClosedError: The lease was released.
        """
        dptr = self.device_ptr
        blk = self._block()
        dt, shp = check_view(dtype, shape, offset, self._nbytes)
        device = self._pool.device
        return DeviceView(self._anchor(blk), dptr, offset=offset, dtype=dt, shape=shp,
                          device=0 if device is None else device,
                          stream=self._stream if stream is None else stream,
                          readonly=readonly)

    def __dlpack__(self, *, stream: int | None = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """Export the requested bytes (uint8, 1-D): ``kDLCPU`` for host pools, ``kDLCUDA`` for
        device pools. The export keeps the block out of circulation until the consumer frees it.

        Raises:
            BufferError: A copy or another device was asked for.
            ResourceClosedError: The lease was released.
        """
        from edgert.memory._dlpack import to_dlpack

        blk = self._block()
        if copy:
            raise BufferError("a lease exports without copying; copy=True is not supported")
        dev = self.__dlpack_device__()
        if dl_device is not None and tuple(dl_device) != dev:
            raise BufferError(f"this lease lives on DLPack device {dev}, not {dl_device}")
        if blk.kind is MemoryKind.DEVICE:
            sync_consumer(self._stream, stream, None)
        return to_dlpack(blk.ptr, 0, (self._nbytes,), np.dtype(np.uint8), device_type=dev[0],
                         device_id=dev[1], owner=self._anchor(blk), max_version=max_version)

    def __dlpack_device__(self) -> tuple[int, int]:
        tok = self._tok
        if tok and tok[0].kind is MemoryKind.DEVICE:
            device = self._pool.device
            return (2, 0 if device is None else device)
        return (1, 0)

    def copy_from(self, src: Any, *, stream: StreamLike | None = None, nbytes: int | None = None,
                  pageable: PageablePolicy | str = PageablePolicy.ERROR) -> None:
        """Copy into the block (see :func:`edgert.memory.copy`).

        Raises:
            InvalidArgumentError: Sizes do not fit, or a pageable side under "error".
            ResourceClosedError: The lease was released.
            CudaError: The copy failed.
        """
        copy_impl(self, src, nbytes, stream, pageable, 3)

    def copy_to(self, dst: Any, *, stream: StreamLike | None = None, nbytes: int | None = None,
                pageable: PageablePolicy | str = PageablePolicy.ERROR) -> None:
        """Copy out of the block (see :func:`edgert.memory.copy`).

        Raises:
            InvalidArgumentError: Sizes do not fit, or a pageable side under "error".
            ResourceClosedError: The lease was released.
            CudaError: The copy failed.
        """
        copy_impl(dst, self, nbytes, stream, pageable, 3)

    # -- release ---------------------------------------------------------------------------

    def release(self, *, stream: Any = None, generation: int | None = None) -> None:
        """Give the block back to the pool. Never blocks: safe in finalizers and RT loops.

        Args:
            stream: If work that uses the block is still enqueued, the stream it is on: an event
                is recorded there and the block is not handed out again before it completes.
            generation: The :attr:`generation` read when this acquisition was made; if the
                lease object has been released and handed out again since, the call is refused
                instead of releasing someone else's block.

        Raises:
            ResourceClosedError: Already released (double release), the pool was closed, or
                ``generation`` names an earlier acquisition.
            NotSupportedError: ``stream`` given but the pool has no event factory (no CUDA).
            CudaError: Recording the event failed (the lease stays held).
        """
        # Lock-free: the token pop and the deque appends are each atomic, and the block is
        # reachable by no one else between them (see PoolCore's notes on threads).
        tok = self._tok
        pool = self._pool
        if generation is not None and generation != self._uses:
            raise ResourceClosedError(
                f"stale lease: acquisition {generation} of this lease object was released "
                f"already (it is now at acquisition {self._uses})",
                hint="release each acquisition exactly once, through its own reference")
        if stream is not None and tok:
            blk = tok[0]
            ev = blk.event
            if ev is None:
                ev = blk.event = pool.make_event()
            ev.record(stream)
        try:
            blk = tok.pop()
        except IndexError:
            raise ResourceClosedError(
                "double release: this lease was already released (or its pool was closed)",
                hint="release each acquisition exactly once; a `with` block releases for you",
            ) from None
        if stream is not None:
            blk.fenced = True
        self._stream = None
        anchor = blk.anchor
        if anchor is None and not blk.fenced:  # the common case first: no views, no stream
            blk.put_back(blk)
        elif blk.fenced or (anchor is not None and anchor() is not None):
            pool.pending.append(blk)
        else:  # its views have died already
            blk.anchor = None
            blk.put_back(blk)
        pool.give_lease(self)
        bell = self._bell
        if bell.parked:
            bell.ring()

    def __enter__(self) -> Lease:
        if not self._tok:
            raise _released()
        self._entered = self._uses
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Released already inside the block (e.g. with a stream): nothing left to do, and the
        # generation check keeps us from releasing someone else's later acquisition.
        if self._tok and self._uses == self._entered:
            self.release()

    def __repr__(self) -> str:
        tok = self._tok
        if not tok:
            return "<edgert.memory.Lease released>"
        blk = tok[0]
        return (f"<edgert.memory.Lease {self._nbytes:,} of {blk.capacity:,} bytes {blk.kind} at "
                f"0x{blk.ptr:x}>")
