"""BufferPool: a hard-budget pool of size-classed blocks, so the hot path never allocates.

Threads. Serving a prewarmed size touches only deques: ``acquire`` pops a block from its class's
free list and a lease object from the spare list, ``release`` pops the block from the lease's
token and appends it back. Each of those deque operations is atomic in CPython (under the GIL,
and under per-object locks in free-threaded builds), and between them the block is reachable by
one thread only, so the hot path needs no lock: it costs a few hundred nanoseconds instead of
two lock round trips. Everything else — allocation, eviction, waiting, prewarm, statistics,
shutdown — runs under the pool's one lock, and waiters sleep on its condition. A release wakes
them when ``_waiters`` says someone is in the slow path; that count is raised before the slow
path looks at the free lists, so a release either lands before the look or sees the count.
"""

from __future__ import annotations

import math
import operator
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import numpy as np

from edgert._owner import Owner
from edgert.errors import (
    InvalidArgumentError,
    NotSupportedError,
    PoolExhausted,
    ResourceClosedError,
)
from edgert.memory import _pooladmin as admin
from edgert.memory._allocation import MemoryKind, refcount
from edgert.memory._lease import Lease
from edgert.memory._pooltypes import (
    Allocator,
    Block,
    EventLike,
    PoolOptions,
    PoolStats,
    SizeClass,
    Span,
    free_blocks,
)
from edgert.memory._sizeclass import SizeClasses

__all__ = ["BufferPool"]

_MEMO_LIMIT = 4096  # distinct request sizes remembered; beyond this the class is computed
_PENDING_POLL_S = 0.0005  # how often a waiter re-checks blocks fenced by stream events


def _drop_lease(lease: Lease) -> None:
    """Where released leases go when the pool does not recycle them: nowhere."""


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
        self._allocator = allocator
        self._options = options
        self._sizes = options.size_classes
        self._budget = options.max_bytes
        self._recycle = options.recycle_leases
        self._kind = allocator.kind
        self._device = allocator.device
        self._mapped = allocator.mapped
        self._event_factory = event_factory
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._classes: dict[int, SizeClass] = {}
        self._by_request: dict[int, SizeClass] = {}
        self._blocks: set[Block] = set()
        self._pending: deque[Block] = deque()
        self._leases: deque[Lease] = deque()
        # Bound methods the hot path calls, one attribute lookup cheaper each.
        self._class_of = self._by_request.get
        self._take_lease = self._leases.popleft
        self._give_lease: Callable[[Lease], None] = (
            self._leases.append if self._recycle else _drop_lease)
        # Every lease object made: statistics, and close(force=True) revoking outstanding ones.
        self._all_leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._reserved = self._reserved_peak = 0
        self._slow_hits = self._slow_uses = 0
        self._misses = self._waits = self._timeouts = self._evictions = 0
        self._waiters = 0
        self._own(partial(free_blocks, self._blocks),
                  f"BufferPool of {self._kind} memory ({self._budget:,}-byte budget)")

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def for_host(cls, *, max_bytes: int, mapped: bool = False, write_combined: bool = False,
                 portable: bool = False, device: int | str = 0,
                 size_classes: SizeClasses | None = None) -> BufferPool:
        """A pool of :class:`HostBuffer` blocks: pinned with CUDA, OS-locked without.

        Raises:
            InvalidArgumentError: A value is out of range.
            NotSupportedError: ``mapped``/``write_combined`` without CUDA.
        """
        from edgert.memory._allocators import HostAllocator

        alloc = HostAllocator(mapped=mapped, write_combined=write_combined, portable=portable,
                              device=device)  # type: ignore[arg-type]
        return cls(alloc, PoolOptions(max_bytes=max_bytes,
                                      size_classes=size_classes or SizeClasses()),
                   event_factory=alloc.event_factory())

    @classmethod
    def for_device(cls, *, max_bytes: int, device: int = 0,
                   size_classes: SizeClasses | None = None) -> BufferPool:
        """A pool of :class:`DeviceBuffer` blocks on ``device``.

        Raises:
            InvalidArgumentError: A value is out of range.
            NotSupportedError: No usable CUDA device.
        """
        from edgert.memory._allocators import DeviceAllocator

        alloc = DeviceAllocator(device=device)
        return cls(alloc, PoolOptions(max_bytes=max_bytes,
                                      size_classes=size_classes or SizeClasses()),
                   event_factory=alloc.event_factory())

    # -- properties ------------------------------------------------------------------------

    @property
    def options(self) -> PoolOptions:
        """The options the pool was made with."""
        return self._options

    @property
    def kind(self) -> MemoryKind:
        """What the blocks are (``PINNED``, ``OS_LOCKED``, ``DEVICE``, ...)."""
        return self._kind

    @property
    def max_bytes(self) -> int:
        """The hard budget."""
        return self._budget

    def capacity_for(self, nbytes: int) -> int:
        """The block size that a request of ``nbytes`` gets.

        Raises:
            InvalidArgumentError: ``nbytes`` is negative or not an int.
        """
        return self._sizes.capacity_for(operator.index(nbytes))

    # -- the hot path ----------------------------------------------------------------------

    def acquire(self, nbytes: int, *, timeout: float | None = None) -> Lease:
        """Lease a block of at least ``nbytes`` bytes.

        Args:
            nbytes: Bytes needed (0 is allowed and gets the smallest class).
            timeout: How long to wait, in seconds, for a release when the budget is full.
                None (default) does not wait: a real-time loop should fail fast and loudly.
                ``math.inf`` waits for ever.

        Returns:
            A :class:`Lease`; release it (or use it as a context manager).

        Raises:
            PoolExhausted: The budget is full and nothing was released in time (or the request
                can never fit the budget); the message gives budget and usage.
            InvalidArgumentError: ``nbytes`` or ``timeout`` is invalid.
            ResourceClosedError: The pool is closed.
            CudaError: The allocator failed.
        """
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
                    if self._owner_closed:  # close() ran while we took the block
                        lease._tok.clear()
                        self._check_open_locked()
                    return lease
            return self._acquire_slow(cls, nbytes, timeout)
        return self._acquire_slow(self._class_for(nbytes), nbytes, timeout)

    def _wake(self) -> None:
        with self._lock:
            self._cond.notify_all()

    # -- slow paths ------------------------------------------------------------------------

    def _class_for(self, nbytes: int) -> SizeClass:
        n = operator.index(nbytes)
        cap = self._sizes.capacity_for(n)
        cls = self._classes.get(cap)
        if cls is None:
            cls = self._classes.setdefault(cap, SizeClass(cap))
        if len(self._by_request) < _MEMO_LIMIT:
            self._by_request[n] = cls
        return cls

    def _make_event(self) -> EventLike:
        if self._event_factory is None:
            raise NotSupportedError(
                "stream-ordered release needs CUDA events, and this pool has no event factory",
                hint="release() without a stream after synchronizing, or pass event_factory=")
        return self._event_factory()

    def _new_lease(self) -> Lease:
        lease = Lease(self)
        self._all_leases.add(lease)
        return lease

    def _hand_out_locked(self, cls: SizeClass, blk: Block, nbytes: int) -> Lease:
        try:
            lease = self._leases.popleft()
        except IndexError:
            lease = self._new_lease()
        lease._tok.append(blk)
        lease._nbytes = nbytes
        lease._uses += 1
        if self._recycle:
            self._slow_uses += 1
        cls.peak = max(cls.peak, cls.total - len(cls.free))
        return lease

    def _reclaim_locked(self) -> None:
        admin.reclaim(self)

    def _check_open_locked(self) -> None:
        if self._owner_closed:
            raise ResourceClosedError("the BufferPool is closed",
                                      hint="create a new pool; a closed pool cannot be reopened")

    def _exhausted(self, nbytes: int, hint: str | None = None) -> PoolExhausted:
        pending = sum(b.capacity for b in tuple(self._pending))
        if hint is None and pending:
            hint = (f"{pending:,} bytes are released but wait for stream work or live views; "
                    f"synchronize, drop the views, or pass a timeout")
        return PoolExhausted(nbytes, budget_bytes=self._budget, reserved_bytes=self._reserved,
                             in_use_bytes=self._in_use_locked(), hint=hint)

    def _acquire_slow(self, cls: SizeClass, nbytes: int, timeout: float | None) -> Lease:
        if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
            raise InvalidArgumentError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
        cap = cls.capacity
        deadline: float | None = None
        with self._lock:
            self._waiters += 1  # before looking, so no release can slip by unseen
            try:
                victims = self._wait_for_room_locked(cls, nbytes, timeout, deadline)
            except BaseException:
                self._waiters -= 1
                raise
            if isinstance(victims, Lease):
                self._waiters -= 1
                return victims
            self._reserved += cap
            self._reserved_peak = max(self._reserved_peak, self._reserved)
            self._misses += 1
        try:
            free_blocks(set(victims))
            blk = self._new_block(cls)
        except BaseException:
            with self._lock:
                self._reserved -= cap
                self._waiters -= 1
                self._cond.notify_all()
            raise
        with self._lock:
            self._waiters -= 1
            if self._owner_closed:
                self._reserved -= cap
                free_blocks({blk})
                self._check_open_locked()
            cls.total += 1
            self._blocks.add(blk)
            return self._hand_out_locked(cls, blk, nbytes)

    def _wait_for_room_locked(self, cls: SizeClass, nbytes: int, timeout: float | None,
                              deadline: float | None) -> Lease | list[Block]:
        """A lease from a free block, or the victims to free before allocating one."""
        cap = cls.capacity
        waited = False
        while True:
            self._check_open_locked()
            if self._pending:
                self._reclaim_locked()
            try:
                blk = cls.free.pop()
            except IndexError:
                pass
            else:
                self._slow_hits += 1
                return self._hand_out_locked(cls, blk, nbytes)
            if cap > self._budget:
                raise self._exhausted(nbytes, f"a {cap:,}-byte block can never fit this pool: "
                                              f"raise max_bytes to at least {cap:,}")
            over = self._reserved + cap - self._budget
            if over <= 0:
                return []
            victims = admin.take_victims(self, cls, over)
            if victims is not None:
                for blk in victims:
                    blk.cls.total -= 1
                    self._reserved -= blk.capacity
                    self._blocks.discard(blk)
                    self._evictions += 1
                return victims
            if not timeout:
                self._timeouts += 1
                raise self._exhausted(nbytes)
            now = time.monotonic()
            if deadline is None:
                deadline = math.inf if timeout == math.inf else now + timeout
            remaining = deadline - now
            if remaining <= 0:
                self._timeouts += 1
                raise self._exhausted(nbytes)
            if not waited:
                self._waits += 1
                waited = True
            self._cond.wait(min(remaining, _PENDING_POLL_S) if self._pending
                            else (None if remaining == math.inf else remaining))

    def _new_block(self, cls: SizeClass) -> Block:
        memory = self._allocator.allocate(cls.capacity)
        try:
            device_ptr: int | None
            root: Any
            if self._kind is MemoryKind.DEVICE:
                device_ptr = int(memory.ptr)
                root = Span(device_ptr, cls.capacity, memory.view())
            else:
                device_ptr = int(memory.device_ptr) if self._mapped else None
                root = np.asarray(Span(int(memory.ptr), cls.capacity, memory.view()))
            event = self._event_factory() if self._event_factory is not None else None
        except BaseException:
            memory.close()
            raise
        blk = Block(memory, cls, kind=self._kind, device_ptr=device_ptr, root=root, event=event)
        del root  # the baseline below must count only the block's own reference
        blk.root_refs = refcount(blk.root)
        return blk

    def _in_use_locked(self) -> int:
        return admin.in_use(self)

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
        admin.prewarm(self, sizes)

    def trim(self) -> int:
        """Give every free block back to the allocator; returns the bytes freed.

        Raises:
            ResourceClosedError: The pool is closed.
        """
        return admin.trim(self)

    def stats(self) -> PoolStats:
        """A snapshot of budget, usage and counters (see :class:`PoolStats`).

        Released blocks whose event has completed (and whose views have died) are moved to
        their free lists first, so ``pending_bytes`` counts only what really still waits.
        """
        return admin.stats(self)

    def close(self, *, force: bool = False) -> None:
        """Free every block. Calling it again does nothing.

        Blocks released with a stream are waited for first. Views taken from leases stay valid
        (their memory is freed when they die).

        Args:
            force: Close even with leases outstanding; they become released (using them raises
                ResourceClosedError) and their raw pointers dangle.

        Raises:
            InvalidArgumentError: Leases are outstanding and ``force`` is False (the pool stays
                open).
        """
        admin.close(self, force=force)

    def __repr__(self) -> str:
        state = "closed" if self._owner_closed else f"reserved={self._reserved:,}"
        return f"<edgert.memory.BufferPool {self._kind} budget={self._budget:,} {state}>"
