"""BufferPool under hostile conditions (issue 12, defects 9 and 11): finalizers that release
inside the pool's locked half, leaked pools, stale lease references, bad arguments."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import _reaper
from edgert.errors import InvalidArgumentError, ResourceBusyError, ResourceClosedError
from edgert.memory import BufferPool, MemoryKind, PoolOptions
from edgert.testing.memory import FakeAllocator, FakeEventFactory

KIB = 1024
ROOT = Path(__file__).resolve().parents[1]


def run_isolated(code: str, timeout_s: float = 20) -> str:
    """Run ``code`` in a fresh interpreter: a deadlock there fails the test instead of hanging
    the suite (a thread stuck on a lock cannot be interrupted)."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the interpreter hung for {timeout_s} s (deadlock)")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_finalizer_releasing_a_lease_inside_the_locked_slow_path_does_not_deadlock() -> None:
    # The garbage collector may run a leaked object's finalizer at any allocation, including
    # one made while acquire() holds the pool's lock. Here the collection is forced at such a
    # point (an event's is_done(), asked under the lock) and the finalizer releases a lease.
    out = run_isolated("""
        import gc, weakref
        from edgert.memory import BufferPool, PoolOptions
        from edgert.testing.memory import FakeAllocator

        class CollectingEvent:
            def __init__(self): self.armed = False
            def record(self, stream): self.armed = True
            def is_done(self):
                gc.collect()  # what an allocation here could start
                return True
            def synchronize(self): pass
            def close(self): pass

        pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=8192),
                          event_factory=CollectingEvent)
        fenced = pool.acquire(4096)
        held = pool.acquire(4096)
        fenced.release(stream="s")  # pending until its event completes

        class Owner:  # a leaked owner in a reference cycle, like a session
            pass
        owner = Owner()
        owner.cycle = owner
        weakref.finalize(owner, held.release)
        del owner

        gc.disable()  # only the collection inside is_done() may run it
        lease = pool.acquire(4096)  # slow path: reclaims under the lock, finalizer runs there
        assert held.released
        lease.release()
        print(pool.stats().leases, pool.stats().blocks)
    """)
    assert out.split() == ["0", "2"]


class _ThreadNoting:
    """An allocator whose blocks note the thread that frees them."""

    kind = MemoryKind.PAGEABLE
    device = None
    mapped = False

    def __init__(self) -> None:
        self.freed_on: list[str] = []

    def allocate(self, nbytes: int) -> Any:
        owner = self

        class Memory:
            def __init__(self) -> None:
                self.array = np.zeros(nbytes, np.uint8)
                self.ptr = self.array.ctypes.data
                self.nbytes = nbytes
                self.device_ptr = self.ptr

            def view(self) -> object:
                return self.array

            def close(self) -> None:
                owner.freed_on.append(threading.current_thread().name)

        return Memory()


def test_a_leaked_pool_is_freed_on_the_reaper_thread_not_the_dropping_one() -> None:
    alloc = _ThreadNoting()
    pool = BufferPool(alloc, PoolOptions(max_bytes=16 * KIB))
    pool.prewarm({4096: 2})
    gone = weakref.ref(pool)
    with pytest.warns(ResourceWarning, match="unclosed BufferPool"):
        del pool
    assert gone() is None
    assert _reaper.drain()
    assert alloc.freed_on == ["edgert-reaper", "edgert-reaper"]


def test_closing_a_pool_frees_on_the_calling_thread() -> None:
    alloc = _ThreadNoting()
    with BufferPool(alloc, PoolOptions(max_bytes=16 * KIB)) as pool:
        pool.prewarm({4096: 1})
    assert alloc.freed_on == [threading.current_thread().name]


def test_a_stale_reference_cannot_release_the_next_acquisition() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=4 * KIB, lease_slack=0))
    pool.prewarm({4096: 1})
    first = pool.acquire(4096)
    gen = first.generation
    first.release(generation=gen)
    second = pool.acquire(4096)
    assert second is first  # recycled: the same object, a new acquisition
    with pytest.raises(ResourceClosedError, match="stale lease"):
        first.release(generation=gen)  # the stale holder
    assert not second.released
    second.release(generation=second.generation)
    pool.close()


def test_views_hold_the_block_through_an_anchor_and_wake_a_waiter_when_they_die() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=4 * KIB))
    lease = pool.acquire(4096)
    view = lease.view(np.float32)[2:5]  # a view of a view still names the anchor
    part = np.asarray(view)
    lease.release()
    got: list[object] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        got.append(pool.acquire(4096, timeout=60))

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait(10)
    del view
    assert not got  # `part` (the same array) still holds the block back
    del part  # the anchor dies; its weakref callback rings the waiter awake
    t.join(30)
    assert not t.is_alive()
    (again,) = got
    again.release()  # type: ignore[attr-defined]
    pool.close()


def test_a_bad_timeout_or_size_is_an_invalid_argument_on_every_path() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=8 * KIB))
    pool.prewarm({4096: 1})  # the fast path would serve a good request
    for bad in ("1", True, -1.0, float("nan"), [1]):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            pool.acquire(4096, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="timeout"):
            pool.acquire(8192, timeout=bad)  # type: ignore[arg-type]  # the slow path
    for size in ("4096", [1], 4096.0, None):
        with pytest.raises(InvalidArgumentError):
            pool.acquire(size)  # type: ignore[arg-type]
    assert pool.stats().leases == 0
    pool.close()


def test_close_with_leases_out_raises_what_the_docs_say() -> None:
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=8 * KIB),
                      event_factory=FakeEventFactory())
    lease = pool.acquire(100)
    with pytest.raises(ResourceBusyError, match="1 lease"):
        pool.close()
    assert not pool.closed
    doc = BufferPool.close.__doc__ or ""
    raises = doc.split("Raises:")[1]
    assert "ResourceBusyError" in raises
    assert "InvalidArgumentError" not in raises
    shutdown = next(line for line in (ROOT / "docs" / "memory.md").read_text().splitlines()
                    if line.startswith("- **Shutdown**"))
    assert "ResourceBusyError" in shutdown
    lease.release()
    pool.close()
    assert pool.closed


# -- on a real GPU (pytest -m gpu on the device machine) ----------------------------------------

@pytest.mark.gpu
def test_a_leaked_device_pool_with_a_fenced_block_is_freed_on_the_reaper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgert import cuda
    from edgert.memory import _pool

    freed_on: list[str] = []
    real = _pool.free_blocks

    def noting(blocks: set[Any]) -> None:
        freed_on.append(threading.current_thread().name)
        real(blocks)  # waits for the fenced block's event, then cudaFree

    monkeypatch.setattr(_pool, "free_blocks", noting)
    from edgert.memory import HostBuffer

    with cuda.Stream() as stream, HostBuffer(1 << 20) as src:
        src.view()[:] = 7
        pool = BufferPool.for_device(max_bytes=4 << 20)
        lease = pool.acquire(src.nbytes)
        lease.copy_from(src, stream=stream)  # asynchronous from pinned memory
        lease.release(stream=stream)  # fenced: the copy may still be in flight
        with pytest.warns(ResourceWarning, match="unclosed BufferPool"):
            del pool, lease
        assert _reaper.drain()
        stream.synchronize()
    assert freed_on == ["edgert-reaper"]


@pytest.mark.gpu
def test_a_device_view_holds_a_device_block_through_its_anchor() -> None:
    with BufferPool.for_device(max_bytes=1 << 20) as pool:
        lease = pool.acquire(4096)
        view = lease.device_view(np.float32, (1024,))
        lease.release()
        assert pool.stats().pending_bytes == 4096
        del view
        assert pool.stats().pending_bytes == 0


def test_a_reaper_started_by_a_pinned_fifo_thread_runs_at_normal_priority_everywhere() -> None:
    import os

    from edgert.realtime import RealtimePolicy, RealtimeThread, realtime_capabilities

    cpus = sorted(os.sched_getaffinity(0))
    if not realtime_capabilities(priority=10).can_schedule_fifo or len(cpus) < 2:
        pytest.skip("needs SCHED_FIFO and two CPUs")

    def body() -> str:
        # reset_on_fork=False: the child interpreter starts pinned and at FIFO 10, as a thread
        # of an RT process would, and starts its reaper from there.
        with RealtimePolicy(priority=10, cpus={cpus[0]}, reset_on_fork=False).apply():
            return run_isolated("""
                import os
                from edgert import _reaper
                assert os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
                _reaper.start()
                got = []
                _reaper.reap(lambda: got.append(
                    f"{os.sched_getscheduler(0)}:{len(os.sched_getaffinity(0))}"))
                assert _reaper.drain()
                print(got[0])
            """).strip()

    t = RealtimeThread(body)
    t.start()
    t.join()
    assert t.result == f"{os.SCHED_OTHER}:{len(cpus)}"


def test_memory_whose_last_view_dies_late_is_freed_on_the_reaper() -> None:
    from edgert.memory._allocation import Allocation

    freed_on: list[str] = []

    def free() -> None:
        freed_on.append(threading.current_thread().name)

    raw = np.zeros(64, np.uint8)
    alloc = Allocation(raw.ctypes.data, 64, MemoryKind.PAGEABLE, free, keep=raw)
    view = np.asarray(alloc)
    del alloc  # like close() with a view alive: nothing is freed yet
    assert freed_on == []
    del view  # the last view dies here, perhaps on a real-time thread: not freed here
    assert _reaper.drain()
    assert freed_on == ["edgert-reaper"]
    with _reaper.inline():  # what close() and the pools do: free now, on this thread
        Allocation(raw.ctypes.data, 64, MemoryKind.PAGEABLE, free, keep=raw)
    assert freed_on == ["edgert-reaper", threading.current_thread().name]


def test_closing_a_buffer_without_views_frees_it_before_close_returns() -> None:
    from edgert.memory import HostBuffer, locked_bytes

    if locked_bytes() is None:
        pytest.skip("no VmLck in /proc/self/status")
    gate = threading.Event()
    _reaper.start()
    _reaper.reap(functools.partial(gate.wait, 30))  # the reaper is busy until the gate opens
    try:
        buf = HostBuffer(1 << 20, device="host")  # mlock'ed: VmLck shows it
        held = locked_bytes()
        buf.close()
        after = locked_bytes()
        assert held is not None
        assert after is not None
        assert held - after >= 1 << 20  # unlocked by close() itself, not by the busy reaper
    finally:
        gate.set()
    assert _reaper.drain()


def test_a_forked_child_does_not_run_the_parents_queued_cleanup() -> None:
    out = run_isolated("""
        import os, threading
        from edgert import _reaper
        _reaper.start()
        gate = threading.Event()
        ran = []
        _reaper.reap(lambda: gate.wait(30))  # keeps the parent's reaper busy
        _reaper.reap(lambda: ran.append(os.getpid()))  # queued, not yet run, at the fork
        pid = os.fork()
        if pid == 0:
            _reaper.start()
            ok = _reaper.drain(5)
            os._exit(0 if ok and ran == [] else 1)
        _, status = os.waitpid(pid, 0)
        gate.set()
        assert _reaper.drain()
        print(os.waitstatus_to_exitcode(status), ran == [os.getpid()])
    """)
    assert out.split() == ["0", "True"]
