"""The slow, locked side of :class:`BufferPool`: prewarm, trim, statistics and shutdown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from edgert.errors import InvalidArgumentError, PoolExhausted, ResourceBusyError
from edgert.memory._allocation import refcount
from edgert.memory._pooltypes import Block, ClassStats, PoolStats, SizeClass, free_blocks

if TYPE_CHECKING:
    from edgert.memory._lease import Lease
    from edgert.memory._pool import BufferPool

__all__ = ["close", "in_use", "outstanding", "prewarm", "reclaim", "stats", "take_victims", "trim"]


def outstanding(pool: BufferPool) -> list[Lease]:
    """Leases holding a block now."""
    return [lease for lease in list(pool._all_leases) if lease._tok]


def in_use(pool: BufferPool) -> int:
    """Capacity of the blocks leased out now."""
    total = 0
    for lease in list(pool._all_leases):
        try:
            total += lease._tok[0].capacity
        except IndexError:
            pass
    return total


def prewarm(pool: BufferPool, sizes: Mapping[int, int] | Iterable[int]) -> None:
    """See :meth:`BufferPool.prewarm`."""
    items = sizes.items() if isinstance(sizes, Mapping) else ((s, 1) for s in sizes)
    want: dict[SizeClass, int] = {}
    for size, count in items:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidArgumentError(f"prewarm count for {size} must be a non-negative int, "
                                       f"not {count!r}")
        cls = pool._class_for(size)
        want[cls] = want.get(cls, 0) + count
    with pool._lock:
        pool._check_open_locked()
        plan = [(cls, n - cls.total) for cls, n in want.items() if n > cls.total]
        extra = sum(cls.capacity * k for cls, k in plan)
        if pool._reserved + extra > pool._budget:
            raise PoolExhausted(
                extra, budget_bytes=pool._budget, reserved_bytes=pool._reserved,
                in_use_bytes=in_use(pool),
                hint=f"prewarm needs {pool._reserved + extra:,} bytes in all (size classes "
                     f"included): raise max_bytes or prewarm less")
        pool._reserved += extra
        pool._reserved_peak = max(pool._reserved_peak, pool._reserved)
    try:
        for idx, (cls, k) in enumerate(plan):
            for made in range(k):
                try:
                    blk = pool._new_block(cls)
                except BaseException:
                    unmade = (k - made) * cls.capacity + sum(
                        c.capacity * n for c, n in plan[idx + 1:])
                    with pool._lock:
                        pool._reserved -= unmade
                    raise
                with pool._lock:
                    cls.total += 1
                    pool._blocks.add(blk)
                    cls.free.append(blk)
    finally:
        with pool._lock:
            if pool._recycle:
                spare = len(pool._blocks) + pool._options.lease_slack
                for _ in range(spare - len(pool._leases) - len(outstanding(pool))):
                    pool._leases.append(pool._new_lease())
            pool._cond.notify_all()


def trim(pool: BufferPool) -> int:
    """See :meth:`BufferPool.trim`."""
    with pool._lock:
        pool._check_open_locked()
        victims: set[Block] = set()
        for cls in pool._classes.values():
            while True:
                try:
                    blk = cls.free.pop()
                except IndexError:
                    break
                cls.total -= 1
                victims.add(blk)
        freed = sum(b.capacity for b in victims)
        pool._reserved -= freed
        pool._blocks -= victims
    free_blocks(victims)
    return freed


def stats(pool: BufferPool) -> PoolStats:
    """See :meth:`BufferPool.stats`."""
    with pool._lock:
        if pool._pending:
            pool._reclaim_locked()
        classes = tuple(ClassStats(capacity_bytes=c.capacity, blocks=c.total,
                                   free_blocks=len(c.free), peak_leased=c.peak)
                        for _, c in sorted(pool._classes.items()) if c.total or c.peak)
        leases = list(pool._all_leases)
        uses = sum(lease._uses for lease in leases) - pool._slow_uses if pool._recycle else 0
        return PoolStats(
            budget_bytes=pool._budget, reserved_bytes=pool._reserved,
            in_use_bytes=in_use(pool),
            free_bytes=sum(c.capacity_bytes * c.free_blocks for c in classes),
            pending_bytes=sum(b.capacity for b in tuple(pool._pending)),
            high_water_bytes=min(sum(c.capacity_bytes * c.peak_leased for c in classes),
                                 pool._reserved_peak),
            leases=sum(1 for lease in leases if lease._tok), blocks=len(pool._blocks),
            hits=uses + pool._slow_hits, misses=pool._misses, waits=pool._waits,
            timeouts=pool._timeouts, evictions=pool._evictions, classes=classes)


def close(pool: BufferPool, *, force: bool) -> None:
    """See :meth:`BufferPool.close`."""
    with pool._lock:
        if pool._owner_closed:
            return
        held = outstanding(pool)
        if held and not force:
            raise ResourceBusyError(
                f"cannot close the pool: {len(held)} lease(s) of {in_use(pool):,} bytes are "
                f"outstanding",
                hint="release them first, or close(force=True) if nothing will touch them")
        pool._owner_closed = True
        for lease in held:
            lease._tok.clear()
            lease._stream = None
        for cls in pool._classes.values():
            cls.free.clear()
            cls.total = 0
        pool._pending.clear()
        pool._leases.clear()
        pool._reserved = 0
        fin = pool._finalizer
        detached = fin.detach() if fin is not None else None
        pool._cond.notify_all()
    if detached is not None:
        detached[2][0]()


def reclaim(pool: BufferPool) -> None:
    """Move pending blocks whose event completed and whose views died to their free lists."""
    pending = pool._pending
    for _ in range(len(pending)):
        blk = pending.popleft()
        if (not blk.fenced or blk.event is None or blk.event.is_done()) and \
                refcount(blk.root) <= blk.root_refs:
            blk.fenced = False
            blk.put_back(blk)
        else:
            pending.append(blk)


def take_victims(pool: BufferPool, cls: SizeClass, need: int) -> list[Block] | None:
    """Pop free blocks of classes other than ``cls`` worth ``need`` bytes, or None if they
    cannot cover it (then nothing is taken). One block that covers the need is preferred, the
    smallest such; otherwise the largest go first."""
    others = sorted((c for c in pool._classes.values() if c is not cls and c.free),
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
