"""RealtimePolicy applied for real (CI runs as root): per-thread scope and full restoration."""

from __future__ import annotations

import ctypes
import gc
import os
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest

from edgert import _reaper
from edgert.errors import InvalidArgumentError
from edgert.realtime import (
    PeriodicLoop,
    RealtimePolicy,
    RealtimeThread,
    SchedPolicy,
    Tick,
    lock_memory,
    realtime_capabilities,
)
from edgert.realtime._sysinfo import proc_status_kib

T = TypeVar("T")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
needs_fifo = pytest.mark.skipif(
    not realtime_capabilities(priority=99).can_schedule_fifo,
    reason="SCHED_FIFO is refused here (CI runs as root where it is allowed)")


def vmlck_kib() -> int:
    value = proc_status_kib("VmLck")
    assert value is not None
    return value


@pytest.fixture
def idle_thread() -> Iterator[threading.Thread]:
    """Another thread of this process, parked, to check that settings do not leak to it."""
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="bystander", daemon=True)
    t.start()
    yield t
    release.set()
    t.join()


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread (so the test never changes the main thread) and return its
    result, re-raising its exception."""
    t = RealtimeThread(fn)
    t.start()
    t.join()
    return cast(T, t.result)


@needs_fifo
def test_fifo_applies_to_calling_thread_only_and_is_restored(
    idle_thread: threading.Thread,
) -> None:
    def body() -> tuple[int, int, int, int, int]:
        before = os.sched_getscheduler(0)
        with RealtimePolicy(priority=42).apply() as active:
            inside = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
            prio = os.sched_getparam(0).sched_priority
            other = os.sched_getscheduler(idle_thread.native_id or -1)
            assert active.report.thread_id == threading.get_native_id()
            assert active.report.ok
        return before, inside, prio, other, os.sched_getscheduler(0)

    before, inside, prio, other, after = in_thread(body)
    assert before == os.SCHED_OTHER
    assert (inside, prio) == (os.SCHED_FIFO, 42)
    assert other == os.SCHED_OTHER  # the bystander, addressed by its native id, is untouched
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # so is the main thread
    assert after == os.SCHED_OTHER


@needs_fifo
def test_rr_and_reset_on_fork_flag() -> None:
    def body() -> tuple[int, int]:
        with RealtimePolicy(policy=SchedPolicy.RR, priority=10, reset_on_fork=False).apply():
            inside = os.sched_getscheduler(0)
        with RealtimePolicy(priority=10).apply():
            flagged = os.sched_getscheduler(0)
        return inside, flagged

    inside, flagged = in_thread(body)
    assert inside == os.SCHED_RR
    assert flagged == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK


@needs_root
def test_affinity_applied_and_restored(idle_thread: threading.Thread) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    target = {cpus[-1]}

    def body() -> tuple[set[int], set[int], set[int]]:
        before = os.sched_getaffinity(0)
        with RealtimePolicy(cpus=target).apply():
            inside = os.sched_getaffinity(0)
            assert os.sched_getaffinity(idle_thread.native_id or -1) == before
        return before, inside, os.sched_getaffinity(0)

    before, inside, after = in_thread(body)
    assert inside == target
    assert after == before


@needs_root
def test_affinity_to_missing_cpu_is_refused() -> None:
    missing = 4096

    def strict() -> None:
        with RealtimePolicy(cpus={missing}).apply():
            pass

    with pytest.raises(Exception, match="EINVAL") as info:
        in_thread(strict)
    assert "online" in str(info.value)

    def partial() -> tuple[str, set[int], set[int]]:
        before = os.sched_getaffinity(0)
        keep = min(before)
        with RealtimePolicy(cpus={keep, missing}, strict=False).apply() as active:
            inside = os.sched_getaffinity(0)
            refused = active.report.refused
        assert len(refused) == 1
        return refused[0].detail, inside, os.sched_getaffinity(0) ^ before

    detail, inside, diff = in_thread(partial)
    assert str(missing) in detail
    assert len(inside) == 1
    assert diff == set()


@needs_root
def test_mlockall_locks_and_is_undone() -> None:
    if vmlck_kib() != 0:
        pytest.skip("memory is already locked in this process")
    with RealtimePolicy(lock_memory=True).apply() as active:
        locked = vmlck_kib()
        assert any(o.setting == "memory_lock" for o in active.report.applied)
    assert locked > 10_000  # the interpreter, numpy and every thread stack: tens of MiB
    assert vmlck_kib() == 0


@needs_root
def test_memory_lock_is_reference_counted_across_holders() -> None:
    if vmlck_kib() != 0:
        pytest.skip("memory is already locked in this process")
    outer = lock_memory()
    try:
        with lock_memory(onfault=True) as inner:
            assert "MCL_ONFAULT" not in inner.detail  # full locking wins while outer holds
        assert vmlck_kib() > 0  # the inner release does not unlock for the outer holder
        assert inner.release_detail is not None
        assert "other holder" in inner.release_detail
    finally:
        outer.close()
    outer.close()  # idempotent
    assert vmlck_kib() == 0
    with lock_memory(onfault=True) as only:
        assert "MCL_ONFAULT" in only.detail
    assert vmlck_kib() == 0


def test_gc_frozen_and_restored() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()  # some interpreters start with objects frozen
    with RealtimePolicy(freeze_gc=True).apply():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > before
        with RealtimePolicy(freeze_gc=True).apply():  # a second holder
            pass
        assert not gc.isenabled()  # still held by the first
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.disable()
    try:
        with RealtimePolicy(freeze_gc=True).apply():
            pass
        assert not gc.isenabled()  # it was off before, so it stays off
    finally:
        gc.enable()


@needs_fifo
def test_everything_restored_when_the_body_raises() -> None:
    def body() -> tuple[int, set[int], bool, int]:
        before_aff = os.sched_getaffinity(0)
        policy = RealtimePolicy(
            priority=30, cpus={min(before_aff)}, freeze_gc=True, lock_memory=True,
            cpu_dma_latency_us=5, prefault_stack_bytes=64 * 1024,
            prefault_heap_bytes=1 << 20,
        )
        active = policy.apply()
        assert len(active.report.applied) == 7
        try:
            with active:
                raise KeyError("boom")
        except KeyError:
            pass
        else:
            raise AssertionError("the body's exception was swallowed")
        assert {o.setting for o in active.restored if o.applied} == {
            "scheduler", "cpu_dma_latency", "gc", "prefault_heap", "memory_lock", "affinity"}
        return (os.sched_getscheduler(0), os.sched_getaffinity(0) ^ before_aff, gc.isenabled(),
                vmlck_kib())

    if vmlck_kib() != 0:
        pytest.skip("memory is already locked in this process")
    policy, aff_diff, gc_on, locked = in_thread(body)
    assert policy == os.SCHED_OTHER
    assert aff_diff == set()
    assert gc_on
    assert locked == 0


@needs_root
def test_cpu_dma_latency_is_held_while_active() -> None:
    dev = Path("/dev/cpu_dma_latency")
    if not dev.exists():
        pytest.skip("no /dev/cpu_dma_latency")
    with RealtimePolicy(cpu_dma_latency_us=7).apply():
        (current,) = struct.unpack("=i", dev.read_bytes()[:4])
        assert current <= 7


def test_priority_alone_means_fifo_and_validation() -> None:
    assert RealtimePolicy(priority=80).policy is SchedPolicy.FIFO
    assert RealtimePolicy(policy="rr", priority=5).policy is SchedPolicy.RR  # type: ignore[arg-type]
    assert RealtimePolicy().policy is None
    assert RealtimePolicy(cpus=[1, 1, 2]).cpus == frozenset({1, 2})
    control = RealtimePolicy.control_loop(cpus={0})
    assert control.lock_memory
    assert control.freeze_gc
    assert control.priority == 80
    bad: list[dict[str, object]] = [
        {"priority": 0}, {"priority": 100}, {"policy": SchedPolicy.FIFO},
        {"policy": SchedPolicy.OTHER, "priority": 5}, {"policy": "deadline", "priority": 5},
        {"priority": True}, {"cpus": []}, {"cpus": [-1]}, {"prefault_stack_bytes": -1},
        {"lock_onfault": True}, {"cpu_dma_latency_us": -3},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            RealtimePolicy(**kwargs)  # type: ignore[arg-type]


def test_empty_policy_changes_nothing() -> None:
    with RealtimePolicy().apply() as active:
        assert active.report.applied == ()
        assert active.report.refused == ()
    assert str(active.report).startswith("real-time policy on thread MainThread")
    assert active.closed
    assert active.restored == ()


def test_raised_soft_limit_raises_towards_hard_and_puts_back() -> None:
    import resource

    from edgert.realtime._sched import RaisedSoftLimit

    which = resource.RLIMIT_CORE
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        pytest.skip("RLIMIT_CORE hard limit too small to exercise")
    resource.setrlimit(which, (0, hard))  # lowering a soft limit needs no privilege
    try:
        with RaisedSoftLimit(which, 4096) as lim:
            assert lim.raised == (0, 4096)
            assert resource.getrlimit(which)[0] == 4096
        assert resource.getrlimit(which)[0] == 0
        with RaisedSoftLimit(which, resource.RLIM_INFINITY) as lim:
            assert lim.raised == (0, hard)  # "as far as the hard limit allows"
            lim.keep()
        assert resource.getrlimit(which)[0] == hard
        with RaisedSoftLimit(which, 10) as lim:  # already high enough: untouched
            assert lim.raised is None
    finally:
        resource.setrlimit(which, (soft, hard))


def test_timer_slack_applied_to_the_thread_and_restored() -> None:
    from edgert.realtime._sched import get_timer_slack

    def body() -> tuple[int, int, int]:
        before = get_timer_slack()
        with RealtimePolicy(timer_slack_ns=1).apply():
            inside = get_timer_slack()
        return before, inside, get_timer_slack()

    before, inside, after = in_thread(body)
    assert inside == 1
    assert after == before != 1
    with pytest.raises(InvalidArgumentError):
        RealtimePolicy(timer_slack_ns=0)


def _leaky_policy() -> RealtimePolicy:
    """Process-wide settings (the GC; memory lock and PM QoS where allowed) plus the per-thread
    timer slack whose undo used to refer to the policy (defect 12.4)."""
    root = os.geteuid() == 0
    dma = Path("/dev/cpu_dma_latency")
    return RealtimePolicy(freeze_gc=True, timer_slack_ns=1000, lock_memory=root,
                          cpu_dma_latency_us=9 if root and dma.exists() else None)


def _dma_fds() -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd")
               if os.path.realpath(f"/proc/self/fd/{fd}") == "/dev/cpu_dma_latency")


def test_a_leaked_policy_is_undone_when_collected() -> None:
    import weakref

    if vmlck_kib() != 0:
        pytest.skip("memory is already locked in this process")
    fds = _dma_fds()
    active = _leaky_policy().apply()
    assert not gc.isenabled()
    alive = weakref.ref(active)
    with pytest.warns(ResourceWarning, match="unclosed edgert.ActivePolicy"):
        del active  # no cycle may reach the policy: the collector is off, refcounting frees it
    assert alive() is None
    assert _reaper.drain()  # the process-wide steps run there (see the next test)
    assert gc.isenabled()
    assert vmlck_kib() == 0
    assert _dma_fds() == fds


def test_no_undo_step_refers_to_its_policy() -> None:
    import weakref

    from edgert.realtime._policy import ActivePolicy

    active = _leaky_policy().apply()
    try:
        assert active.report.ok
        seen: set[int] = set()
        todo: list[object] = [active._stack]
        while todo:  # everything the safety nets can reach from the undo stack
            obj = todo.pop()
            if id(obj) in seen or isinstance(obj, (type, threading.Thread)):
                continue
            seen.add(id(obj))
            assert not isinstance(obj, ActivePolicy)
            todo.extend(gc.get_referents(obj))
        assert weakref.getweakrefcount(active) == 1  # only the Owner's finalizer
    finally:
        active.close()
    assert gc.isenabled()


def test_a_policy_left_open_is_undone_when_its_thread_ends() -> None:
    if vmlck_kib() != 0:
        pytest.skip("memory is already locked in this process")
    fds = _dma_fds()
    kept: list[object] = []

    def body() -> None:
        kept.append(_leaky_policy().apply())  # still referenced after the thread is gone

    def run_thread() -> None:
        t = threading.Thread(target=body)
        t.start()
        t.join()  # the warning is raised on the ending thread, before join() returns

    with pytest.warns(ResourceWarning, match="ended with an ActivePolicy still open"):
        run_thread()
    assert gc.isenabled()
    assert vmlck_kib() == 0
    assert _dma_fds() == fds
    (active,) = kept
    assert {o.setting for o in active.restored if o.applied} >= {"gc", "timer_slack"}  # type: ignore[attr-defined]
    active.close()  # type: ignore[attr-defined]  # nothing left to do, and no error
    assert gc.isenabled()


@needs_root
def test_a_collected_policy_never_deadlocks_on_a_lock_its_collector_holds() -> None:
    # The collector can run a leaked policy's finalizer at any allocation, including one made
    # while this thread holds the memory-lock state lock inside lock_memory(). Forced here at
    # such a point; the finalizer's release_lock must not wait for that lock on this thread.
    code = textwrap.dedent("""
        import gc
        from edgert.realtime import RealtimePolicy, _memlock, lock_memory
        from edgert import _reaper

        real = _memlock.proc_status_kib
        def collecting(name):
            gc.collect()
            return real(name)

        class Holder:
            pass
        leaked = Holder()
        leaked.policy = RealtimePolicy(lock_memory=True).apply()
        leaked.cycle = leaked
        del leaked
        _memlock.proc_status_kib = collecting
        with lock_memory():  # the finalizer runs inside, under the state lock
            pass
        _memlock.proc_status_kib = real
        assert _reaper.drain()
        print(_memlock._STATE.holders)
    """)
    try:
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: a collected policy waited for a lock its own thread held")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]


def test_timer_slack_closed_from_another_thread_is_reported_not_restored() -> None:
    # Timer slack is per thread (prctl acts on the caller): closing the policy from another
    # thread cannot restore it, and the report must not say it did.
    from edgert.realtime._sched import get_timer_slack

    applied, closed = threading.Event(), threading.Event()
    seen: list[object] = []

    def body() -> None:
        seen.append(get_timer_slack())
        seen.append(RealtimePolicy(timer_slack_ns=1000).apply())
        applied.set()
        closed.wait(30)
        seen.append(get_timer_slack())

    t = threading.Thread(target=body)
    t.start()
    assert applied.wait(30)
    active = seen[1]
    active.close()  # type: ignore[attr-defined]  # from the main thread, while its thread lives
    closed.set()
    t.join(30)
    (outcome,) = [o for o in active.restored if o.setting == "timer_slack"]  # type: ignore[attr-defined]
    assert not outcome.applied
    assert "only thread" in outcome.detail
    assert seen[2] == 1000  # indeed still changed on its thread


CAP_SYS_NICE = 23


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_cap_sys_nice_in_this_thread() -> None:
    """Capabilities are per thread: this makes the calling thread an unprivileged RT thread
    (the RLIMIT_RTPRIO route), which may lower its policy but not clear SCHED_RESET_ON_FORK."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (_CapData * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    data[0].effective &= ~(1 << CAP_SYS_NICE)
    data[0].permitted &= ~(1 << CAP_SYS_NICE)
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())


@needs_fifo
def test_an_unprivileged_thread_gets_its_scheduler_back_keeping_reset_on_fork() -> None:
    # With reset_on_fork=True (the default) the restore to SCHED_OTHER failed with EPERM for a
    # thread without CAP_SYS_NICE: run() raised, its report was lost and the thread stayed FIFO.
    def loop_body() -> tuple[int, str, int, int]:
        loop = PeriodicLoop(0.001, policy=RealtimePolicy(priority=80))

        def step(tick: Tick) -> None:
            if tick.iteration == 0:
                drop_cap_sys_nice_in_this_thread()

        report = loop.run(step, iterations=3)
        return (report.iterations, report.stopped_by, os.sched_getscheduler(0),
                os.sched_getparam(0).sched_priority)

    assert in_thread(loop_body) == (3, "iterations",
                                    os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, 0)

    def policy_body() -> str:
        with RealtimePolicy(priority=80).apply() as active:
            drop_cap_sys_nice_in_this_thread()
            with pytest.raises(PermissionError):  # CAP_SYS_NICE is really gone
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return active.restored[0].detail

    detail = in_thread(policy_body)
    assert "SCHED_RESET_ON_FORK kept" in detail
    assert "CAP_SYS_NICE" in detail


def test_an_interrupt_during_a_restore_does_not_drop_the_steps_after_it() -> None:
    """Found by a trial: Ctrl-C twice (the second during the restore) left the thread pinned and
    memory that was locked before the loop unlocked; every step now runs, then it is raised."""
    import threading as _threading

    from edgert.realtime._undo import Undo, UndoStack

    ran: list[str] = []

    def step(name: str) -> Callable[[], str]:
        def undo() -> str:
            ran.append(name)
            if name == "memory_lock":
                raise KeyboardInterrupt
            return name
        return undo

    stack = UndoStack(_threading.get_native_id(), _threading.current_thread())
    for name in ("affinity", "scheduler", "memory_lock", "gc"):
        stack.items.append(Undo(name, False, step(name)))
    with pytest.raises(KeyboardInterrupt):
        stack.run()
    assert ran == ["gc", "memory_lock", "scheduler", "affinity"]
    interrupted = [o for o in stack.restored if not o.applied]
    assert [o.setting for o in interrupted] == ["memory_lock"]
    assert "interrupted" in interrupted[0].detail
