"""BufferPool under many threads: no block handed out twice, no leak, waiters make progress."""

from __future__ import annotations

import random
import threading

import numpy as np

from edgert.memory import BufferPool, PoolOptions
from edgert.testing.memory import FakeAllocator

KIB = 1024


def test_many_threads_acquire_and_release_without_leaks_or_sharing() -> None:
    alloc = FakeAllocator()
    budget = 24 * KIB  # tight: threads must wait for each other and evict
    pool = BufferPool(alloc, PoolOptions(max_bytes=budget))
    sizes = [100, 700, 1500, 3000, 4096, 6000]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mark = np.uint8(seed + 1)
        try:
            start.wait()
            for _ in range(400):
                with pool.acquire(rng.choice(sizes), timeout=30) as lease:
                    view = lease.view()
                    view[:] = mark
                    # another thread writing into our block would show up here
                    assert (view == mark).all()
                    del view
        except BaseException as err:  # surfaced in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    s = pool.stats()
    assert s.leases == 0
    assert s.in_use_bytes == 0
    assert s.pending_bytes == 0
    assert s.reserved_bytes <= budget
    assert s.high_water_bytes <= budget
    assert s.hits + s.misses == 8 * 400
    assert alloc.live_bytes == s.reserved_bytes
    pool.close()
    assert alloc.live_bytes == 0
    assert alloc.frees == alloc.allocations


def test_close_wakes_waiters_with_an_error() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=4 * KIB))
    held = pool.acquire(4096)
    outcome: list[str] = []
    entered = threading.Event()

    def waiter() -> None:
        entered.set()
        try:
            pool.acquire(4096, timeout=60)
        except Exception as err:
            outcome.append(type(err).__name__)

    t = threading.Thread(target=waiter)
    t.start()
    entered.wait(10)
    while pool.stats().waits == 0:
        threading.Event().wait(0.001)
    pool.close(force=True)
    t.join(30)
    assert outcome == ["ResourceClosedError"]
    assert held.released


def test_racing_double_release_is_caught_and_never_duplicates_a_block() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=16 * KIB))
    pool.prewarm({4096: 2})
    rounds = 300
    outcomes: list[str] = []
    start = threading.Barrier(3)
    done = threading.Barrier(3)
    lease_box: list[object] = [None]

    def releaser() -> None:
        for _ in range(rounds):
            start.wait()
            try:
                lease_box[0].release()  # type: ignore[attr-defined]
                outcomes.append("ok")
            except Exception as err:
                outcomes.append(type(err).__name__)
            done.wait()

    threads = [threading.Thread(target=releaser) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(rounds):
        lease_box[0] = pool.acquire(4096)
        start.wait()  # both releasers now race to release the same lease
        done.wait()
    for t in threads:
        t.join(60)
    assert outcomes.count("ok") == rounds
    assert outcomes.count("ResourceClosedError") == rounds
    s = pool.stats()
    assert s.leases == 0
    assert [c.free_blocks for c in s.classes] == [2]  # each block exactly once
    held = [pool.acquire(4096), pool.acquire(4096)]
    assert held[0].ptr != held[1].ptr
    for lease in held:
        lease.release()
    pool.close()
