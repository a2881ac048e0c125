"""The state of a :class:`~edgert.memory.BufferPool` and its locked half.

:class:`PoolCore` holds everything a pool and its leases share: the size classes and their free
lists, the blocks, the spare lease objects, the blocks waiting for an event or for views, the
counters, the lock and the :class:`~edgert.memory._pooltypes.Bell` that waiters park on. The
pool object is a thin facade over it (constructors, the lock-free hot path) and leases refer to
the core, not to the pool, so the modules form a chain without a cycle:
``_pooltypes`` <- ``_lease`` <- ``_poolcore`` <- ``_pool``.

Threads. Nothing here runs on the free path: ``Lease.release`` only appends to deques and rings
the bell, so a release never waits for this lock (not even one that the garbage collector runs
inside a finalizer while this thread holds the lock). Everything else — allocation, eviction,
waiting, prewarm, statistics, shutdown — runs under the one lock. A waiter lists its parker
before it looks at the free lists, so a release either lands before the look or rings it.
"""

from __future__ import annotations

import math
import operator
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from edgert.errors import (
    InvalidArgumentError,
    NotSupportedError,
    PoolExhausted,
    ResourceBusyError,
    ResourceClosedError,
)
from edgert.memory._allocation import MemoryKind
from edgert.memory._lease import Lease
from edgert.memory._pooltypes import (
    Allocator,
    Bell,
    Block,
    ClassStats,
    EventLike,
    PoolOptions,
    PoolStats,
    SizeClass,
    Span,
    free_blocks,
    views_alive,
)

__all__ = ["PoolCore", "as_request", "check_timeout"]


def _orphaned(tok: deque[Block], core: PoolCore) -> None:
    """A lease object died: if it still held a block, give the block back as ``release``
    would (lock-free, so safe wherever the collector runs it) and say so."""
    try:
        blk = tok.pop()
    except IndexError:
        return  # released properly
    if core.closed:
        return
    anchor = blk.anchor
    if not blk.fenced and (anchor is None or anchor() is None):
        blk.anchor = None
        blk.put_back(blk)
    else:
        core.pending.append(blk)
    if core.bell.parked:
        core.bell.ring()
    warnings.warn("a pool Lease was dropped without release(): its block went back to the "
                  "pool now (release it, or use `with pool.acquire(n) as lease:`)",
                  ResourceWarning, stacklevel=1)

_MEMO_LIMIT = 4096  # distinct request sizes remembered; beyond this the class is computed
_PENDING_POLL_S = 0.0005  # how often a waiter re-checks blocks fenced by stream events
# How often a waiter looks again without a ring: a ring can be lost when a signal handler's
# exception (Ctrl-C's KeyboardInterrupt) lands inside Bell.ring run as a finalizer, where Python
# can only report it as unraisable; the GPU tier's interrupt sweep provokes it (tests/
# test_session_gpu.py). Without this, a waiter with no timeout would wait forever.
_LOST_RING_POLL_S = 0.05


def _drop_lease(lease: Lease) -> None:
    """Where released leases go when the pool does not recycle them: nowhere."""


def check_timeout(timeout: object) -> float:
    """``acquire``'s timeout as a float, or InvalidArgumentError."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidArgumentError(
            f"timeout must be None or a number of seconds >= 0, not {timeout!r}",
            hint="None fails at once when the budget is full; math.inf waits for ever")
    # Past what a lock can wait for, it is a wait for ever (1e10 s raised OverflowError from
    # inside the wait: found by a hostile trial).
    return math.inf if timeout > threading.TIMEOUT_MAX else float(timeout)


def as_request(nbytes: object) -> int:
    """A request size as an int (numpy ints welcome), or InvalidArgumentError."""
    if not isinstance(nbytes, bool):
        try:
            n = operator.index(nbytes)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            if n >= 0:
                return int(n)
    raise InvalidArgumentError(f"a request must be a non-negative int of bytes, not {nbytes!r}")


class PoolCore:
    """What a pool and its leases share (see the module notes). Not public."""

    def __init__(self, allocator: Allocator, options: PoolOptions,
                 event_factory: Callable[[], EventLike] | None) -> None:
        self.allocator = allocator
        self.options = options
        self.sizes = options.size_classes
        self.budget = options.max_bytes
        self.recycle = options.recycle_leases
        self.kind = allocator.kind
        self.device = allocator.device
        self.mapped = allocator.mapped
        self.event_factory = event_factory
        self.closed = False
        self.lock = threading.Lock()
        self.bell = Bell()
        self.classes: dict[int, SizeClass] = {}
        self.by_request: dict[int, SizeClass] = {}
        self.blocks: set[Block] = set()
        self.pending: deque[Block] = deque()
        self.leases: deque[Lease] = deque()
        self.give_lease: Callable[[Lease], None] = (
            self.leases.append if self.recycle else _drop_lease)
        # Every lease object made: statistics, and close(force=True) revoking outstanding ones.
        self.all_leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self.reserved = self.reserved_peak = 0
        self.slow_hits = self.slow_uses = 0
        self.misses = self.waits = self.timeouts = self.refusals = self.evictions = 0

    # -- pieces the leases use -------------------------------------------------------------

    def make_event(self) -> EventLike:
        if self.event_factory is None:
            raise NotSupportedError(
                "stream-ordered release needs CUDA events, and this pool has no event factory",
                hint="release() without a stream after synchronizing, or pass event_factory=")
        return self.event_factory()

    def watch_views(self, blk: Block, anchor: object) -> None:
        """Hold ``blk`` back from reuse while ``anchor`` lives, and wake waiters when it dies."""
        blk.anchor = weakref.ref(anchor, self.bell.ring)

    # -- classes, blocks, leases -----------------------------------------------------------

    def class_for(self, nbytes: object) -> SizeClass:
        n = as_request(nbytes)
        cap = self.sizes.capacity_for(n)
        cls = self.classes.get(cap)
        if cls is None:
            cls = self.classes.setdefault(cap, SizeClass(cap))
        if len(self.by_request) < _MEMO_LIMIT:
            self.by_request[n] = cls
        return cls

    def new_block(self, cls: SizeClass) -> Block:
        memory = self.allocator.allocate(cls.capacity)
        try:
            device_ptr: int | None
            root: Any
            if self.kind is MemoryKind.DEVICE:
                device_ptr = int(memory.ptr)
                root = Span(device_ptr, cls.capacity, memory.view())
            else:
                device_ptr = int(memory.device_ptr) if self.mapped else None
                root = np.asarray(Span(int(memory.ptr), cls.capacity, memory.view()))
            event = self.event_factory() if self.event_factory is not None else None
        except BaseException:
            memory.close()
            raise
        return Block(memory, cls, kind=self.kind, device_ptr=device_ptr, root=root, event=event)

    def new_lease(self) -> Lease:
        lease = Lease(self)
        self.all_leases.add(lease)
        # Once per lease object (they are recycled, so not per acquire): a lease dropped while
        # it holds a block gives the block back (found by a hostile trial: it was lost until the
        # pool closed, and the next acquire of a full pool failed).
        weakref.finalize(lease, _orphaned, lease._tok, self).atexit = False
        return lease

    def hand_out_locked(self, cls: SizeClass, blk: Block, nbytes: int) -> Lease:
        try:
            lease = self.leases.popleft()
        except IndexError:
            lease = self.new_lease()
        lease._tok.append(blk)
        lease._nbytes = nbytes
        lease._uses += 1
        if self.recycle:
            self.slow_uses += 1
        cls.peak = max(cls.peak, cls.total - len(cls.free))
        return lease

    def reclaim_locked(self) -> None:
        """Move pending blocks whose event completed and whose views died to their free lists."""
        pending = self.pending
        for _ in range(len(pending)):
            blk = pending.popleft()
            if (not blk.fenced or blk.event is None or blk.event.is_done()) and \
                    not views_alive(blk):
                blk.fenced = False
                blk.anchor = None
                blk.put_back(blk)
            else:
                pending.append(blk)

    def check_open_locked(self) -> None:
        if self.closed:
            raise ResourceClosedError("the BufferPool is closed",
                                      hint="create a new pool; a closed pool cannot be reopened")

    def outstanding(self) -> list[Lease]:
        """Leases holding a block now."""
        return [lease for lease in list(self.all_leases) if lease._tok]

    def in_use(self) -> int:
        """Capacity of the blocks leased out now."""
        total = 0
        for lease in list(self.all_leases):
            try:
                total += lease._tok[0].capacity
            except IndexError:
                pass
        return total

    def exhausted(self, nbytes: int, hint: str | None = None) -> PoolExhausted:
        pending = sum(b.capacity for b in tuple(self.pending))
        if hint is None and pending:
            hint = (f"{pending:,} bytes are released but wait for stream work or live views; "
                    f"synchronize, drop the views, or pass a timeout")
        return PoolExhausted(nbytes, budget_bytes=self.budget, reserved_bytes=self.reserved,
                             in_use_bytes=self.in_use(), hint=hint)

    # -- the slow acquire ------------------------------------------------------------------

    def acquire_slow(self, cls: SizeClass, nbytes: int, timeout: float | None) -> Lease:
        cap = cls.capacity
        parker: threading.Lock | None = None
        deadline: float | None = None
        try:
            while True:
                with self.lock:
                    self.check_open_locked()
                    if parker is not None:
                        parker.acquire(False)  # a ring from before this look is stale now
                    got = self._room_locked(cls, nbytes)
                    if isinstance(got, Lease):
                        return got
                    if got is not None:
                        self.reserved += cap
                        self.reserved_peak = max(self.reserved_peak, self.reserved)
                        self.misses += 1
                        victims = got
                        break
                    if not timeout:  # None or 0: fail at once, a refusal (not a timeout)
                        self.refusals += 1
                        raise self.exhausted(nbytes)
                    now = time.monotonic()
                    if deadline is None:
                        deadline = math.inf if timeout == math.inf else now + timeout
                    remaining = deadline - now
                    if remaining <= 0:
                        self.timeouts += 1
                        raise self.exhausted(nbytes)
                    if parker is None:
                        # Listed before the next look at the free lists, so a release after
                        # that look rings it; a release before it is seen by the look.
                        parker = threading.Lock()
                        parker.acquire()
                        self.bell.parked = (*self.bell.parked, parker)
                        self.waits += 1
                        continue
                    poll = bool(self.pending)  # fenced blocks complete without a ring
                parker.acquire(timeout=min(remaining,
                                           _PENDING_POLL_S if poll else _LOST_RING_POLL_S))
        finally:
            if parker is not None:
                with self.lock:
                    self.bell.parked = tuple(p for p in self.bell.parked if p is not parker)
        return self._allocate(cls, nbytes, victims)

    def _room_locked(self, cls: SizeClass, nbytes: int) -> Lease | list[Block] | None:
        """A lease from a free block; or the victims to free before allocating one (possibly
        none); or None: wait for a release."""
        if self.pending:
            self.reclaim_locked()
        try:
            blk = cls.free.pop()
        except IndexError:
            pass
        else:
            self.slow_hits += 1
            return self.hand_out_locked(cls, blk, nbytes)
        cap = cls.capacity
        if cap > self.budget:
            self.refusals += 1
            raise self.exhausted(nbytes, f"a {cap:,}-byte block can never fit this pool: "
                                         f"raise max_bytes to at least {cap:,}")
        over = self.reserved + cap - self.budget
        if over <= 0:
            return []
        victims = self._take_victims(cls, over)
        if victims is not None:
            for blk in victims:
                blk.cls.total -= 1
                self.reserved -= blk.capacity
                self.blocks.discard(blk)
                self.evictions += 1
        return victims

    def _allocate(self, cls: SizeClass, nbytes: int, victims: list[Block]) -> Lease:
        cap = cls.capacity
        try:
            free_blocks(victims)  # emptied in place: nothing else holds the victims after this
            blk = self.new_block(cls)
        except BaseException:
            with self.lock:
                self.reserved -= cap
                self.misses -= 1  # nothing was allocated: not a miss (a hostile trial)
            self.bell.ring()  # the budget it held may serve a waiter
            raise
        with self.lock:
            if self.closed:
                self.reserved -= cap
                free_blocks({blk})
                self.check_open_locked()
            cls.total += 1
            self.blocks.add(blk)
            return self.hand_out_locked(cls, blk, nbytes)

    def _take_victims(self, cls: SizeClass, need: int) -> list[Block] | None:
        """Pop free blocks of classes other than ``cls`` worth ``need`` bytes, or None if they
        cannot cover it (then nothing is taken). One block that covers the need is preferred,
        the smallest such; otherwise the largest go first."""
        others = sorted((c for c in self.classes.values() if c is not cls and c.free),
                        key=lambda c: c.capacity)
        if sum(c.capacity * len(c.free) for c in others) < need:
            return None
        order = [c for c in others if c.capacity >= need][:1] or list(reversed(others))
        victims: list[Block] = []
        for c in order:
            while need > 0:
                try:
                    blk = c.free.popleft()
                except IndexError:  # taken meanwhile by the lock-free hot path
                    break
                victims.append(blk)
                need -= blk.capacity
            if need <= 0:
                return victims
        for blk in victims:  # not enough after all: put them back
            blk.put_back(blk)
        return None

    # -- warm-up, statistics, shutdown -----------------------------------------------------

    def prewarm(self, sizes: Mapping[int, int] | Iterable[int]) -> None:
        items = sizes.items() if isinstance(sizes, Mapping) else ((s, 1) for s in sizes)
        want: dict[SizeClass, int] = {}
        for size, count in items:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InvalidArgumentError(f"prewarm count for {size} must be a non-negative "
                                           f"int, not {count!r}")
            cls = self.class_for(size)
            want[cls] = want.get(cls, 0) + count
        with self.lock:
            self.check_open_locked()
            plan = [(cls, n - cls.total) for cls, n in want.items() if n > cls.total]
            extra = sum(cls.capacity * k for cls, k in plan)
            if self.reserved + extra > self.budget:
                raise PoolExhausted(
                    extra, budget_bytes=self.budget, reserved_bytes=self.reserved,
                    in_use_bytes=self.in_use(),
                    hint=f"prewarm needs {self.reserved + extra:,} bytes in all (size classes "
                         f"included): raise max_bytes or prewarm less")
            self.reserved += extra
            self.reserved_peak = max(self.reserved_peak, self.reserved)
        try:
            for idx, (cls, k) in enumerate(plan):
                for made in range(k):
                    try:
                        blk = self.new_block(cls)
                    except BaseException:
                        unmade = (k - made) * cls.capacity + sum(
                            c.capacity * n for c, n in plan[idx + 1:])
                        with self.lock:
                            self.reserved -= unmade
                        raise
                    with self.lock:
                        cls.total += 1
                        self.blocks.add(blk)
                        cls.free.append(blk)
        finally:
            with self.lock:
                if self.recycle:
                    spare = len(self.blocks) + self.options.lease_slack
                    for _ in range(spare - len(self.leases) - len(self.outstanding())):
                        self.leases.append(self.new_lease())
            self.bell.ring()

    def trim(self) -> int:
        with self.lock:
            self.check_open_locked()
            if self.pending:  # blocks whose views died since: free too (a hostile trial)
                self.reclaim_locked()
            victims: set[Block] = set()
            for cls in self.classes.values():
                free = cls.free
                while True:
                    try:  # no local name for the block: free_blocks must hold the last reference
                        victims.add(free.pop())
                    except IndexError:
                        break
                    cls.total -= 1
            freed = sum(b.capacity for b in victims)
            self.reserved -= freed
            self.blocks -= victims
        free_blocks(victims)
        return freed

    def stats(self) -> PoolStats:
        with self.lock:
            if self.pending:
                self.reclaim_locked()
            classes = tuple(ClassStats(capacity_bytes=c.capacity, blocks=c.total,
                                       free_blocks=len(c.free), peak_leased=c.peak)
                            for _, c in sorted(self.classes.items()) if c.total or c.peak)
            leases = list(self.all_leases)
            uses = sum(lease._uses for lease in leases) - self.slow_uses if self.recycle else 0
            return PoolStats(
                budget_bytes=self.budget, reserved_bytes=self.reserved,
                in_use_bytes=self.in_use(),
                free_bytes=sum(c.capacity_bytes * c.free_blocks for c in classes),
                pending_bytes=sum(b.capacity for b in tuple(self.pending)),
                high_water_bytes=min(sum(c.capacity_bytes * c.peak_leased for c in classes),
                                     self.reserved_peak),
                leases=sum(1 for lease in leases if lease._tok), blocks=len(self.blocks),
                hits=uses + self.slow_hits, misses=self.misses, waits=self.waits,
                timeouts=self.timeouts, evictions=self.evictions, classes=classes,
                refusals=self.refusals)

    def close_locked(self, *, force: bool) -> bool:
        """Mark closed and empty every list (the caller frees :attr:`blocks` after unlocking);
        False if it was closed already.

        Raises:
            ResourceBusyError: Leases are outstanding and ``force`` is False.
        """
        if self.closed:
            return False
        held = self.outstanding()
        if held and not force:
            raise ResourceBusyError(
                f"cannot close the pool: {len(held)} lease(s) of {self.in_use():,} bytes are "
                f"outstanding",
                hint="release them first, or close(force=True) if nothing will touch them")
        self.closed = True
        for lease in held:
            lease._tok.clear()
            lease._stream = None
        for cls in self.classes.values():
            cls.free.clear()
            cls.total = 0
        self.pending.clear()
        self.leases.clear()
        self.reserved = 0
        self.bell.ring()
        return True
