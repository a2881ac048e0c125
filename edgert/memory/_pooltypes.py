"""The seams and records of :class:`~edgert.memory.BufferPool`: allocator and event protocols,
options, statistics, and the per-block bookkeeping."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, runtime_checkable

from edgert import _reaper
from edgert.errors import InvalidArgumentError
from edgert.memory._allocation import MemoryKind
from edgert.memory._sizeclass import SizeClasses

__all__ = [
    "Allocator",
    "ClassStats",
    "EventLike",
    "PoolMemory",
    "PoolOptions",
    "PoolOverrides",
    "PoolStats",
]


@runtime_checkable
class PoolMemory(Protocol):
    """One block handed out by an :class:`Allocator` (HostBuffer and DeviceBuffer fit)."""

    @property
    def ptr(self) -> int:
        """Address of the first byte (host address for host memory, device for device)."""
        ...

    @property
    def nbytes(self) -> int:
        """Size in bytes (at least what was asked for)."""
        ...

    @property
    def device_ptr(self) -> int:
        """Device address (read only for device memory and mapped host memory)."""
        ...

    def view(self) -> object:
        """Anything that keeps the bytes valid while it lives, even after :meth:`close`."""
        ...

    def close(self) -> None:
        """Give the memory back (it may outlive this call while a :meth:`view` lives)."""
        ...


@runtime_checkable
class Allocator(Protocol):
    """Where a pool gets its blocks: :class:`HostAllocator`, :class:`DeviceAllocator` or a fake
    (``edgert.testing.memory.FakeAllocator``)."""

    @property
    def kind(self) -> MemoryKind:
        """What the blocks are (``PINNED``, ``OS_LOCKED``, ``DEVICE``, ...)."""
        ...

    @property
    def device(self) -> int | None:
        """The CUDA device of the blocks, or None for host-only memory."""
        ...

    @property
    def mapped(self) -> bool:
        """Host blocks that also have a device address."""
        ...

    def allocate(self, nbytes: int) -> PoolMemory:
        """Allocate a block of at least ``nbytes``; raise on failure."""
        ...


@runtime_checkable
class EventLike(Protocol):
    """What stream-ordered release needs of an event (:class:`edgert.cuda.Event` fits)."""

    def record(self, stream: Any) -> None:
        """Capture the work enqueued on ``stream`` so far."""
        ...

    def is_done(self) -> bool:
        """Whether that work has finished (non-blocking)."""
        ...

    def synchronize(self) -> None:
        """Block until that work has finished."""
        ...

    def close(self) -> None:
        """Destroy the event."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolOptions:
    """How a :class:`BufferPool` behaves.

    Attributes:
        max_bytes: Hard budget: the pool never holds more than this from its allocator.
        size_classes: How requests are rounded (512-byte steps, then powers of two).
        recycle_leases: Reuse lease objects so ``acquire`` allocates nothing (default). With
            False every acquire makes a new lease, so a stale lease is always detected, at the
            cost of one small allocation per acquire (a debugging aid).
        lease_slack: Spare lease objects made by :meth:`BufferPool.prewarm` beyond one per
            block, so a lease released and re-acquired at once is a different object.

    Raises:
        InvalidArgumentError: A value is out of range.
    """

    max_bytes: int
    size_classes: SizeClasses = field(default_factory=SizeClasses)
    recycle_leases: bool = True
    lease_slack: int = 8

    def __post_init__(self) -> None:
        mb = self.max_bytes
        if isinstance(mb, bool) or not isinstance(mb, int) or mb <= 0:
            raise InvalidArgumentError(f"max_bytes must be a positive int, not {mb!r}",
                                       hint="size it from your largest tensors: see docs/memory.md")
        if not isinstance(self.size_classes, SizeClasses):
            raise InvalidArgumentError("size_classes must be a SizeClasses")
        if not isinstance(self.lease_slack, int) or self.lease_slack < 0:
            raise InvalidArgumentError(f"lease_slack must be a non-negative int, not "
                                       f"{self.lease_slack!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ClassStats:
    """One size class of a pool.

    Attributes:
        capacity_bytes: The class's block size.
        blocks: Blocks of this class the pool holds.
        free_blocks: Of those, ready to hand out.
        peak_leased: The most blocks of this class leased at the same time (what to prewarm).
    """

    capacity_bytes: int
    blocks: int
    free_blocks: int
    peak_leased: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolStats:
    """A snapshot of a pool, exact when no acquire or release runs at the same moment (the hot
    path takes no lock, so a snapshot taken during one may be off by that one lease).

    Attributes:
        budget_bytes: ``max_bytes``.
        reserved_bytes: Held from the allocator (all blocks, whatever their state).
        in_use_bytes: Capacity of the blocks leased out now.
        free_bytes: Capacity of the blocks ready to hand out.
        pending_bytes: Released blocks waiting for their stream's event or for views to die.
        high_water_bytes: An upper bound of the most bytes leased at once: the sum of each
            size class's peak (``classes[i].peak_leased``, which is what to prewarm), or the
            most ever reserved if that is less. Exact when the classes peak together, as in a
            steady loop; the hot path takes no lock, so a global peak is not tracked.
        leases: Leases outstanding.
        blocks: Blocks held.
        hits: Acquires served by a free block.
        misses: Acquires that had to allocate.
        waits: Acquires that had to wait for a release.
        timeouts: Acquires that waited for a release (a ``timeout`` above 0) and gave up
            (raised PoolExhausted when it expired).
        evictions: Free blocks given back to make room for another size class.
        classes: Per-size-class counts, smallest first.
        refusals: Acquires that raised PoolExhausted at once, without waiting: the budget was
            full and ``timeout`` was None (the default) or 0, or the request can never fit the
            budget.
    """

    budget_bytes: int
    reserved_bytes: int
    in_use_bytes: int
    free_bytes: int
    pending_bytes: int
    high_water_bytes: int
    leases: int
    blocks: int
    hits: int
    misses: int
    waits: int
    timeouts: int
    evictions: int
    classes: tuple[ClassStats, ...]
    refusals: int = 0


class SizeClass:
    """The free list of one capacity (LIFO: the most recently used block is warmest)."""

    __slots__ = ("capacity", "free", "peak", "total")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # deque, not list: its append/pop are atomic (the lock-free hot path relies on that),
        # and a list gives memory back as it shrinks and asks again as it grows, which would
        # allocate on the hot path; deque blocks come from a free list.
        self.free: deque[Block] = deque()
        self.total = 0  # blocks of this class the pool holds (changed under the pool's lock)
        self.peak = 0  # the most blocks of this class leased at once


class Block:
    """A pool block: its memory, its class, its event, and the anchor its views hang from.

    ``anchor`` is a weak reference to the object every view, DLPack export and device view of
    the current acquisition refers to (made with the first of them, None until then). The
    block may be handed out again once that object has died: liveness through a weak
    reference, not by comparing ``sys.getrefcount`` to a baseline, which CPython documents as
    unstable across versions and which free-threaded builds do not keep exactly.
    """

    __slots__ = ("anchor", "capacity", "cls", "device_ptr", "event", "fenced", "kind",
                 "memory", "ptr", "put_back", "root")

    def __init__(self, memory: PoolMemory, cls: SizeClass, *, kind: MemoryKind,
                 device_ptr: int | None, root: Any, event: EventLike | None) -> None:
        self.memory = memory
        self.cls = cls
        self.put_back = cls.free.append  # release's way home, one lookup cheaper
        self.capacity = cls.capacity
        self.ptr = int(memory.ptr)
        self.kind = kind
        self.device_ptr = device_ptr
        self.root = root
        self.anchor: weakref.ref[Any] | None = None
        self.event = event
        self.fenced = False


class Span:
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


def free_blocks(blocks: set[Block] | list[Block]) -> None:
    """Close the memory and events of ``blocks`` (waiting for fenced ones first); empty it.

    The blocks die in here, so their memory is freed on this thread unless a view still holds
    it (then on the reaper, when the view dies). Every block is freed even if one fails; the
    first failure is raised at the end.
    """
    first: BaseException | None = None
    with _reaper.inline():
        todo = list(blocks)
        blocks.clear()
        while todo:
            blk = todo.pop()
            try:
                ev = blk.event
                if ev is not None:
                    if blk.fenced:
                        ev.synchronize()  # the device may still be reading or writing the block
                    ev.close()
            except BaseException as err:
                first = first or err
            finally:
                blk.memory.close()
                del blk  # possibly the last reference: free inside the inline block
    if first is not None:
        raise first


class Bell:
    """How a release wakes the threads waiting in ``acquire``, without taking a lock.

    Each waiter parks on its own held ``threading.Lock`` listed in :attr:`parked`; ringing
    releases every listed lock, which never blocks (a lock already released raises
    RuntimeError, which is ignored). A release can therefore run anywhere — inside a finalizer
    that the garbage collector started while this very thread holds the pool's lock, or on a
    real-time thread — and never wait for the pool. Waiters replace :attr:`parked` with a new
    tuple under the pool's lock, so a ringer reads one consistent tuple without a lock.
    """

    __slots__ = ("parked",)

    def __init__(self) -> None:
        self.parked: tuple[threading.Lock, ...] = ()

    def ring(self, _ref: object = None) -> None:
        """Wake every waiter (also usable as a weakref callback)."""
        for parker in self.parked:
            try:
                parker.release()
            except RuntimeError:  # already rung and not yet taken: nothing to add
                pass


def views_alive(blk: Block) -> bool:
    """Whether a view, export or device view of the block's current acquisition is alive."""
    anchor = blk.anchor
    return anchor is not None and anchor() is not None


class LeaseHome(Protocol):
    """What a :class:`~edgert.memory.Lease` needs of its pool's state (``PoolCore``); a
    protocol so that the lease module does not import the pool's."""

    device: int | None
    pending: deque[Block]
    bell: Bell

    def give_lease(self, lease: Any, /) -> None:
        """Take a released lease object back for reuse (or drop it)."""
        ...

    def make_event(self) -> EventLike:
        """An event for stream-ordered release (NotSupportedError without CUDA)."""
        ...

    def watch_views(self, blk: Block, anchor: object) -> None:
        """Hold ``blk`` back while ``anchor`` lives."""
        ...


class PoolOverrides(TypedDict, total=False):
    """The :class:`PoolOptions` fields as keywords of ``BufferPool.for_host``/``for_device``."""

    max_bytes: int
    size_classes: SizeClasses
    recycle_leases: bool
    lease_slack: int
