"""Fakes for testing code that uses :mod:`edgert.memory` without a GPU.

* :class:`FakeAllocator` — a counting allocator for :class:`~edgert.memory.BufferPool` that
  hands out real host memory (so views work) labelled with any
  :class:`~edgert.memory.MemoryKind`, and can be told to fail.
* :class:`FakeEvent` / :class:`FakeEventFactory` — events whose completion the test controls,
  for stream-ordered release: ``BufferPool(alloc, opts, event_factory=FakeEventFactory())``.

Example::

    events = FakeEventFactory()
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=1 << 20), event_factory=events)
    lease = pool.acquire(4096)
    lease.release(stream="s")       # any object stands for the stream
    events.last.complete()          # the "GPU" finished: the block can be reused
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgert.errors import EdgeRTError, InvalidArgumentError
from edgert.memory import MemoryKind

__all__ = ["FakeAllocator", "FakeEvent", "FakeEventFactory", "FakeMemory"]


class FakeMemory:
    """A block from :class:`FakeAllocator`: real (pageable) host memory with a fake label."""

    def __init__(self, nbytes: int, allocator: FakeAllocator) -> None:
        self._raw = ctypes.create_string_buffer(max(nbytes, 1))
        self._ptr = ctypes.addressof(self._raw)
        self._nbytes = nbytes
        self._allocator = allocator
        self.closed = False

    @property
    def ptr(self) -> int:
        """Address of the bytes."""
        return self._ptr

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self._nbytes

    @property
    def device_ptr(self) -> int:
        """The same address (the fake has one address space)."""
        return self._ptr

    def view(self) -> NDArray[np.uint8]:
        """A uint8 array over the bytes that keeps them alive."""
        return np.frombuffer(memoryview(self._raw), dtype=np.uint8, count=self._nbytes)

    def close(self) -> None:
        """Count the free (idempotent); the bytes live on while a view does."""
        if not self.closed:
            self.closed = True
            self._allocator._freed(self)


class FakeAllocator:
    """A counting :class:`~edgert.memory.Allocator` for pool tests.

    Args:
        kind: The :class:`~edgert.memory.MemoryKind` the blocks claim to be (``DEVICE`` makes
            views refuse, as a device pool would).
        device: The device the blocks claim to belong to.
        mapped: Whether blocks claim a device address.
        fail_after: Raise on every allocation after this many have succeeded (None: never).

    Attributes:
        allocations: Successful allocations so far.
        frees: Blocks closed so far.
        live_bytes: Bytes allocated and not closed.
        sizes: Every size asked for, in order.
    """

    def __init__(self, *, kind: MemoryKind = MemoryKind.PAGEABLE, device: int | None = None,
                 mapped: bool = False, fail_after: int | None = None) -> None:
        self._kind = kind
        self._device = device
        self._mapped = mapped
        self.fail_after = fail_after
        self.allocations = 0
        self.frees = 0
        self.live_bytes = 0
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def kind(self) -> MemoryKind:
        """The label the blocks carry."""
        return self._kind

    @property
    def device(self) -> int | None:
        """The device the blocks claim."""
        return self._device

    @property
    def mapped(self) -> bool:
        """Whether blocks claim a device address."""
        return self._mapped

    def allocate(self, nbytes: int) -> FakeMemory:
        """Allocate (really, with ctypes) and count.

        Raises:
            InvalidArgumentError: ``nbytes`` is negative.
            EdgeRTError: ``fail_after`` allocations have already succeeded.
        """
        if nbytes < 0:
            raise InvalidArgumentError(f"negative allocation {nbytes}")
        with self._lock:
            self.sizes.append(nbytes)
            if self.fail_after is not None and self.allocations >= self.fail_after:
                raise EdgeRTError(f"FakeAllocator: allocation {self.allocations + 1} refused "
                                  f"(fail_after={self.fail_after})")
            self.allocations += 1
            self.live_bytes += nbytes
        return FakeMemory(nbytes, self)

    def _freed(self, mem: FakeMemory) -> None:
        with self._lock:
            self.frees += 1
            self.live_bytes -= mem.nbytes


class FakeEvent:
    """An event whose completion the test decides (:meth:`complete`).

    Attributes:
        records: How many times it was recorded.
        last_stream: The stream of the last record.
        closed: Whether :meth:`close` ran.
    """

    def __init__(self) -> None:
        self._done = True
        self.records = 0
        self.last_stream: Any = None
        self.closed = False
        self._cond = threading.Condition()

    def record(self, stream: Any) -> None:
        """Start a new piece of "work" on ``stream``: not done until :meth:`complete`."""
        with self._cond:
            self._done = False
            self.records += 1
            self.last_stream = stream

    def complete(self) -> None:
        """Mark the recorded work finished (wakes :meth:`synchronize`)."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def is_done(self) -> bool:
        """Whether :meth:`complete` ran since the last :meth:`record`."""
        return self._done

    def synchronize(self) -> None:
        """Block until :meth:`complete` (from another thread) or return at once if done."""
        with self._cond:
            self._cond.wait_for(lambda: self._done)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


class FakeEventFactory:
    """Makes :class:`FakeEvent` objects and remembers them.

    Attributes:
        events: Every event made, in order.
    """

    def __init__(self) -> None:
        self.events: list[FakeEvent] = []

    def __call__(self) -> FakeEvent:
        """A new, not yet completed :class:`FakeEvent`, remembered in :attr:`events`."""
        ev = FakeEvent()
        self.events.append(ev)
        return ev

    @property
    def last(self) -> FakeEvent:
        """The most recently made event.

        Raises:
            InvalidArgumentError: None was made yet.
        """
        if not self.events:
            raise InvalidArgumentError("no FakeEvent has been made yet")
        return self.events[-1]

    @property
    def recorded(self) -> list[FakeEvent]:
        """Events recorded and not yet completed."""
        return [e for e in self.events if not e.is_done()]

    def complete_all(self) -> None:
        """Complete every event."""
        for e in self.events:
            e.complete()
