"""BufferPool: a hard-budget pool of size-classed blocks, so the hot path never allocates.

Threads. Serving a prewarmed size touches only deques: ``acquire`` pops a block from its class's
free list and a lease object from the spare list, ``release`` pops the block from the lease's
token and appends it back. Each of those deque operations is atomic in CPython (under the GIL,
and under per-object locks in free-threaded builds), and between them the block is reachable by
one thread only, so the hot path needs no lock: it costs a few hundred nanoseconds instead of
two lock round trips. The release side never takes a lock at all (it wakes waiters through
a lock-free bell), so it may run anywhere, finalizers included; everything else runs in
:class:`~edgert.memory._poolcore.PoolCore` under the pool's one lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Literal

from typing_extensions import Unpack

from edgert._options import check_or_create_options
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError
from edgert.memory._allocation import MemoryKind
from edgert.memory._lease import Lease
from edgert.memory._poolcore import PoolCore, as_request, check_timeout
from edgert.memory._pooltypes import (
    Allocator,
    EventLike,
    PoolOptions,
    PoolOverrides,
    PoolStats,
    free_blocks,
)

__all__ = ["BufferPool"]


class BufferPool(Owner):
    """Blocks of host or device memory under a hard budget, handed out as leases.

    Requests are rounded to size classes (:class:`SizeClasses`); released blocks go to their
    class's free list and serve the next request of that class without allocating. ``prewarm``
    allocates up front, so a real-time loop that acquires and releases only prewarmed sizes
    never calls the allocator, takes no lock and allocates no Python object.

    Args:
        allocator: Where blocks come from (see :meth:`for_host`, :meth:`for_device`, or inject
            a fake for tests).
        options: Budget and behaviour.
        event_factory: Makes the events of stream-ordered release (default for CUDA pools:
            ``edgert.cuda.Event``). Events are made with each block, so the first stream
            release of a prewarmed block allocates nothing.

    Raises:
        InvalidArgumentError: ``options`` is not a PoolOptions.
    """

    def __init__(self, allocator: Allocator, options: PoolOptions, *,
                 event_factory: Callable[[], EventLike] | None = None) -> None:
        if not isinstance(options, PoolOptions):
            raise InvalidArgumentError("options must be a PoolOptions",
                                       hint="BufferPool(allocator, PoolOptions(max_bytes=...))")
        core = self._core = PoolCore(allocator, options, event_factory)
        # Bound methods and objects the hot path uses, one attribute lookup cheaper each.
        self._class_of = core.by_request.get
        self._take_lease = core.leases.popleft
        # A leaked pool's blocks are freed on the reaper thread: freeing waits for fenced
        # blocks' events and calls cudaFreeHost/cudaFree, which must not land on whichever
        # (possibly real-time) thread drops the pool.
        self._own(partial(free_blocks, core.blocks),
                  f"BufferPool of {core.kind} memory ({core.budget:,}-byte budget)", reap=True)

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def for_host(cls, options: PoolOptions | None = None, *, mapped: bool = False,
                 write_combined: bool = False, portable: bool = False,
                 device: int | Literal["host"] = 0,
                 **overrides: Unpack[PoolOverrides]) -> BufferPool:
        """A pool of :class:`HostBuffer` blocks: pinned with CUDA, OS-locked without.

        Args:
            options: A :class:`PoolOptions`; keyword overrides of its fields (``max_bytes``,
                ``size_classes``, ...) win over it. ``max_bytes`` is required one way or the
                other.
            mapped: Map the blocks into the device's address space (zero-copy).
            write_combined: Write-combined pinned memory (fast host writes, slow host reads).
            portable: Pinned for every CUDA context, not only the current one.
            device: The CUDA device, or ``"host"`` for OS-locked memory without CUDA.

        Raises:
            InvalidArgumentError: A value is out of range, or an unknown option.
            NotSupportedError: ``mapped``/``write_combined`` without CUDA.
        """
        from edgert.memory._allocators import HostAllocator

        o = check_or_create_options(PoolOptions, options, overrides,
                                    what="BufferPool.for_host")
        alloc = HostAllocator(mapped=mapped, write_combined=write_combined, portable=portable,
                              device=device)
        return cls(alloc, o, event_factory=alloc.event_factory())

    @classmethod
    def for_device(cls, options: PoolOptions | None = None, *, device: int = 0,
                   **overrides: Unpack[PoolOverrides]) -> BufferPool:
        """A pool of :class:`DeviceBuffer` blocks on ``device``.

        Args:
            options: A :class:`PoolOptions`; keyword overrides of its fields win over it.
            device: The CUDA device.

        Raises:
            InvalidArgumentError: A value is out of range, or an unknown option.
            NotSupportedError: No usable CUDA device.
        """
        from edgert.memory._allocators import DeviceAllocator

        o = check_or_create_options(PoolOptions, options, overrides,
                                    what="BufferPool.for_device")
        alloc = DeviceAllocator(device=device)
        return cls(alloc, o, event_factory=alloc.event_factory())

    # -- properties ------------------------------------------------------------------------

    @property
    def options(self) -> PoolOptions:
        """The options the pool was made with."""
        return self._core.options

    @property
    def kind(self) -> MemoryKind:
        """What the blocks are (``PINNED``, ``OS_LOCKED``, ``DEVICE``, ...)."""
        return self._core.kind

    @property
    def max_bytes(self) -> int:
        """The hard budget."""
        return self._core.budget

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._core.closed

    def capacity_for(self, nbytes: int) -> int:
        """The block size that a request of ``nbytes`` gets.

        Raises:
            InvalidArgumentError: ``nbytes`` is negative or not an int.
        """
        return self._core.sizes.capacity_for(as_request(nbytes))

    # -- the hot path ----------------------------------------------------------------------

    def acquire(self, nbytes: int, *, timeout: float | None = None) -> Lease:
        """Lease a block of at least ``nbytes`` bytes.

        Args:
            nbytes: Bytes needed (0 is allowed and gets the smallest class).
            timeout: How long to wait, in seconds, for a release when the budget is full.
                None (default) does not wait: a real-time loop should fail fast and loudly.
                ``math.inf`` waits for ever. A failure without waiting counts in
                ``stats().refusals``; one that waited and gave up in ``stats().timeouts``.

        Returns:
            A :class:`Lease`; release it (or use it as a context manager).

        Raises:
            PoolExhausted: The budget is full and nothing was released in time (or the request
                can never fit the budget); the message gives budget and usage.
            InvalidArgumentError: ``nbytes`` or ``timeout`` is invalid.
            ResourceClosedError: The pool is closed.
            CudaError: The allocator failed.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        if type(nbytes) is not int:  # a float would find its int's class: check it first
            nbytes = as_request(nbytes)
        cls = self._class_of(nbytes)
        if cls is not None:
            free = cls.free
            try:
                blk = free.pop()
            except IndexError:
                pass
            else:
                try:
                    lease = self._take_lease()
                except IndexError:  # no spare lease object: the slow path makes one
                    free.append(blk)
                else:
                    lease._tok.append(blk)
                    lease._nbytes = nbytes
                    lease._uses += 1
                    out = cls.total - len(free)
                    if out > cls.peak:  # noqa: PLR1730 - a compare is cheaper than max()
                        cls.peak = out
                    core = self._core
                    if core.closed:  # close() ran while we took the block
                        lease._tok.clear()
                        core.check_open_locked()
                    return lease
            return self._core.acquire_slow(cls, nbytes, timeout)
        core = self._core
        return core.acquire_slow(core.class_for(nbytes), nbytes, timeout)

    # -- warm-up, statistics, shutdown -----------------------------------------------------

    def prewarm(self, sizes: Mapping[int, int] | Iterable[int]) -> None:
        """Allocate up front so that these requests are served without allocating.

        Args:
            sizes: ``{nbytes: count}`` (``count`` leases of that size at the same time), or an
                iterable of request sizes (repeat a size to ask for several). Sizes in the same
                class add up. Classes that already hold enough blocks get none.

        Raises:
            PoolExhausted: The blocks would exceed the budget (nothing is allocated then).
            InvalidArgumentError: A size or count is invalid.
            ResourceClosedError: The pool is closed.
            CudaError: The allocator failed (blocks allocated before the failure stay).
        """
        self._core.prewarm(sizes)

    def trim(self) -> int:
        """Give every free block back to the allocator; returns the bytes freed.

        Raises:
            ResourceClosedError: The pool is closed.
        """
        return self._core.trim()

    def stats(self) -> PoolStats:
        """A snapshot of budget, usage and counters (see :class:`PoolStats`).

        Released blocks whose event has completed (and whose views have died) are moved to
        their free lists first, so ``pending_bytes`` counts only what really still waits.
        """
        return self._core.stats()

    def close(self, *, force: bool = False) -> None:
        """Free every block. Calling it again does nothing.

        Blocks released with a stream are waited for first. Views taken from leases stay valid
        (their memory is freed when they die).

        Args:
            force: Close even with leases outstanding; they become released (using them raises
                ResourceClosedError) and their raw pointers dangle.

        Raises:
            ResourceBusyError: Leases are outstanding and ``force`` is False (the pool stays
                open): the pool is in use, not called wrongly.
        """
        core = self._core
        with core.lock:
            if not core.close_locked(force=force):
                return
            self._owner_closed = True
            fin = self._finalizer
            if fin is not None:
                fin.detach()
        free_blocks(core.blocks)

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else f"reserved={core.reserved:,}"
        return f"<edgert.memory.BufferPool {core.kind} budget={core.budget:,} {state}>"
