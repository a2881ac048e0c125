"""BufferPool: a hard-budget pool of size-classed blocks, so the hot path never allocates."""

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
from edgert.memory._allocation import MemoryKind, refcount
from edgert.memory._lease import Lease
from edgert.memory._pooltypes import (
    Allocator,
    Block,
    ClassStats,
    EventLike,
    PoolOptions,
    PoolStats,
    SizeClass,
)
from edgert.memory._sizeclass import SizeClasses

__all__ = ["BufferPool"]

_MEMO_LIMIT = 4096  # distinct request sizes remembered; beyond this the class is computed
_PENDING_POLL_S = 0.0005  # how often a waiter re-checks blocks fenced by stream events


class _Span:
    """The anchor of a block's exports: a host block's uint8 root array hangs from it."""

    __slots__ = ("__weakref__", "keep", "nbytes", "ptr")

    def __init__(self, ptr: int, nbytes: int, keep: object) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        self.keep = keep

    @property
    def base(self) -> object:
        """What keeps the bytes alive; following ``.base`` from a view leads to the Allocation."""
        return self.keep

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {"data": (self.ptr, False), "shape": (self.nbytes,), "typestr": "|u1",
                "version": 3}


def _free_blocks(blocks: set[Block]) -> None:
    for blk in list(blocks):
        ev = blk.event
        try:
            if ev is not None:
                if blk.fenced:
                    ev.synchronize()  # the device may still be reading or writing the block
                ev.close()
        finally:
            blk.memory.close()
    blocks.clear()


class BufferPool(Owner):
    """Blocks of host or device memory under a hard budget, handed out as leases.

    Requests are rounded to size classes (:class:`SizeClasses`); released blocks go to their
    class's free list and serve the next request of that class without allocating. ``prewarm``
    allocates up front, so a real-time loop that acquires and releases only prewarmed sizes
    never calls the allocator. One lock guards the pool; waiters sleep on a condition.

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
        self._reserved = self._in_use = self._pending_bytes = self._high = 0
        self._hits = self._misses = self._waits = self._timeouts = self._evictions = 0
        self._waiters = 0
        # Every lease object made, so close(force=True) can revoke the outstanding ones.
        self._all_leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._own(partial(_free_blocks, self._blocks),
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
        cls = self._by_request.get(nbytes)
        if cls is None:
            cls = self._class_for(nbytes)
        # acquire()/release() with try/finally: measurably cheaper than `with` on 3.11.
        lock = self._lock
        lock.acquire()
        try:
            free = cls.free
            if free and not self._owner_closed:
                blk = free.pop()
                leases = self._leases
                lease = leases.popleft() if leases else self._new_lease()
                lease._blk = blk
                lease._nbytes = nbytes
                lease._gen = (lease._gen + 1) & 0xFF  # stays a cached small int: no allocation
                self._hits += 1
                in_use = self._in_use + blk.capacity
                self._in_use = in_use
                if in_use > self._high:  # noqa: PLR1730 - a compare is cheaper than max()
                    self._high = in_use
                return lease
        finally:
            lock.release()
        return self._acquire_slow(cls, nbytes, timeout)

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

    def _outstanding(self) -> list[Lease]:
        return [lease for lease in self._all_leases if lease._blk is not None]

    def _hand_out(self, blk: Block, nbytes: int) -> Lease:
        lease = self._leases.popleft() if self._leases else self._new_lease()
        lease._blk = blk
        lease._nbytes = nbytes
        lease._gen = (lease._gen + 1) & 0xFF
        self._in_use += blk.capacity
        self._high = max(self._high, self._in_use)
        return lease

    def _reclaim_locked(self) -> None:
        pending = self._pending
        for _ in range(len(pending)):
            blk = pending.popleft()
            if (not blk.fenced or blk.event is None or blk.event.is_done()) and \
                    refcount(blk.root) <= blk.root_refs:
                blk.fenced = False
                self._pending_bytes -= blk.capacity
                blk.cls.free.append(blk)
            else:
                pending.append(blk)

    def _check_open_locked(self) -> None:
        if self._owner_closed:
            raise ResourceClosedError("the BufferPool is closed",
                                      hint="create a new pool; a closed pool cannot be reopened")

    def _exhausted(self, nbytes: int, hint: str | None = None) -> PoolExhausted:
        if hint is None and self._pending_bytes:
            hint = (f"{self._pending_bytes:,} bytes are released but wait for stream work or "
                    f"live views; synchronize, drop the views, or pass a timeout")
        return PoolExhausted(nbytes, budget_bytes=self._budget, reserved_bytes=self._reserved,
                             in_use_bytes=self._in_use, hint=hint)

    def _pick_victims(self, cls: SizeClass, need: int) -> list[Block] | None:
        """Free blocks of other classes worth ``need`` bytes, or None if they cannot cover it."""
        others = sorted((c for c in self._classes.values() if c is not cls and c.free),
                        key=lambda c: c.capacity)
        if sum(c.capacity * len(c.free) for c in others) < need:
            return None
        for c in others:  # one block that covers the need, the smallest such
            if c.capacity >= need:
                return [c.free.popleft()]
        victims: list[Block] = []
        for c in reversed(others):
            while c.free and need > 0:
                victims.append(c.free.popleft())
                need -= c.capacity
        return victims

    def _acquire_slow(self, cls: SizeClass, nbytes: int, timeout: float | None) -> Lease:
        if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
            raise InvalidArgumentError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
        cap = cls.capacity
        deadline: float | None = None
        waited = False
        victims: list[Block] = []
        with self._lock:
            while True:
                self._check_open_locked()
                if self._pending:
                    self._reclaim_locked()
                if cls.free:
                    self._hits += 1
                    return self._hand_out(cls.free.pop(), nbytes)
                if cap > self._budget:
                    raise self._exhausted(nbytes, f"a {cap:,}-byte block can never fit this "
                                                  f"pool: raise max_bytes to at least {cap:,}")
                over = self._reserved + cap - self._budget
                if over <= 0:
                    break
                picked = self._pick_victims(cls, over)
                if picked is not None:
                    for blk in picked:
                        blk.cls.total -= 1
                        self._reserved -= blk.capacity
                        self._blocks.discard(blk)
                        self._evictions += 1
                    victims = picked
                    break
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
                self._waiters += 1
                try:
                    self._cond.wait(min(remaining, _PENDING_POLL_S) if self._pending
                                    else (None if remaining == math.inf else remaining))
                finally:
                    self._waiters -= 1
            self._reserved += cap
            self._misses += 1
        _free_blocks(set(victims))
        try:
            blk = self._new_block(cls)
        except BaseException:
            with self._lock:
                self._reserved -= cap
                if self._waiters:
                    self._cond.notify_all()
            raise
        with self._lock:
            if self._owner_closed:
                self._reserved -= cap
                _free_blocks({blk})
                self._check_open_locked()
            cls.total += 1
            self._blocks.add(blk)
            return self._hand_out(blk, nbytes)

    def _new_block(self, cls: SizeClass) -> Block:
        memory = self._allocator.allocate(cls.capacity)
        try:
            device_ptr: int | None
            root: Any
            if self._kind is MemoryKind.DEVICE:
                device_ptr = int(memory.ptr)
                root = _Span(device_ptr, cls.capacity, memory.view())
            else:
                device_ptr = int(memory.device_ptr) if self._mapped else None
                root = np.asarray(_Span(int(memory.ptr), cls.capacity, memory.view()))
            event = self._event_factory() if self._event_factory is not None else None
        except BaseException:
            memory.close()
            raise
        blk = Block(memory, cls, kind=self._kind, device_ptr=device_ptr, root=root, event=event)
        del root  # the baseline below must count only the block's own reference
        blk.root_refs = refcount(blk.root)
        return blk

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
        items = sizes.items() if isinstance(sizes, Mapping) else ((s, 1) for s in sizes)
        want: dict[SizeClass, int] = {}
        for size, count in items:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InvalidArgumentError(f"prewarm count for {size} must be a non-negative "
                                           f"int, not {count!r}")
            cls = self._class_for(size)
            want[cls] = want.get(cls, 0) + count
        with self._lock:
            self._check_open_locked()
            plan = [(cls, n - cls.total) for cls, n in want.items() if n > cls.total]
            extra = sum(cls.capacity * k for cls, k in plan)
            if self._reserved + extra > self._budget:
                raise PoolExhausted(
                    extra, budget_bytes=self._budget, reserved_bytes=self._reserved,
                    in_use_bytes=self._in_use,
                    hint=f"prewarm needs {self._reserved + extra:,} bytes in all (size classes "
                         f"included): raise max_bytes or prewarm less")
            self._reserved += extra
        try:
            for idx, (cls, k) in enumerate(plan):
                for made in range(k):
                    try:
                        blk = self._new_block(cls)
                    except BaseException:
                        unmade = (k - made) * cls.capacity + sum(
                            c.capacity * n for c, n in plan[idx + 1:])
                        with self._lock:
                            self._reserved -= unmade
                        raise
                    with self._lock:
                        cls.total += 1
                        self._blocks.add(blk)
                        cls.free.append(blk)
        finally:
            with self._lock:
                if self._recycle:
                    spare = len(self._blocks) + self._options.lease_slack
                    for _ in range(spare - len(self._leases) - len(self._outstanding())):
                        self._leases.append(self._new_lease())
                if self._waiters:
                    self._cond.notify_all()

    def trim(self) -> int:
        """Give every free block back to the allocator; returns the bytes freed.

        Raises:
            ResourceClosedError: The pool is closed.
        """
        with self._lock:
            self._check_open_locked()
            victims: set[Block] = set()
            for cls in self._classes.values():
                while cls.free:
                    blk = cls.free.pop()
                    cls.total -= 1
                    victims.add(blk)
            freed = sum(b.capacity for b in victims)
            self._reserved -= freed
            self._blocks -= victims
        _free_blocks(victims)
        return freed

    def stats(self) -> PoolStats:
        """A consistent snapshot of budget, usage and counters.

        Released blocks whose event has completed (and whose views have died) are moved to
        their free lists first, so ``pending_bytes`` counts only what really still waits.
        """
        with self._lock:
            if self._pending:
                self._reclaim_locked()
            classes = tuple(ClassStats(capacity_bytes=c.capacity, blocks=c.total,
                                       free_blocks=len(c.free))
                            for _, c in sorted(self._classes.items()) if c.total)
            return PoolStats(
                budget_bytes=self._budget, reserved_bytes=self._reserved,
                in_use_bytes=self._in_use,
                free_bytes=sum(c.capacity_bytes * c.free_blocks for c in classes),
                pending_bytes=self._pending_bytes, high_water_bytes=self._high,
                leases=len(self._outstanding()), blocks=len(self._blocks), hits=self._hits,
                misses=self._misses, waits=self._waits, timeouts=self._timeouts,
                evictions=self._evictions, classes=classes)

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
        with self._lock:
            if self._owner_closed:
                return
            outstanding = self._outstanding()
            if outstanding and not force:
                raise InvalidArgumentError(
                    f"cannot close the pool: {len(outstanding)} lease(s) of {self._in_use:,} "
                    f"bytes are outstanding",
                    hint="release them first, or close(force=True) if nothing will touch them")
            for lease in outstanding:
                lease._blk = None
                lease._stream = None
            for cls in self._classes.values():
                cls.free.clear()
                cls.total = 0
            self._pending.clear()
            self._leases.clear()
            self._reserved = self._in_use = self._pending_bytes = 0
            self._owner_closed = True
            fin = self._finalizer
            detached = fin.detach() if fin is not None else None
            self._cond.notify_all()
        if detached is not None:
            detached[2][0]()

    def __repr__(self) -> str:
        state = "closed" if self._owner_closed else (
            f"reserved={self._reserved:,} in_use={self._in_use:,}")
        return f"<edgert.memory.BufferPool {self._kind} budget={self._budget:,} {state}>"
