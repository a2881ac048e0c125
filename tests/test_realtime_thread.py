"""RealtimeThread: the policy is applied inside the new thread; exceptions reach join()."""

from __future__ import annotations

import os
import threading

import pytest

from edgert.errors import InvalidArgumentError, RequestTimeoutError
from edgert.realtime import RealtimePolicy, RealtimeThread, realtime_capabilities

needs_fifo = pytest.mark.skipif(
    not realtime_capabilities(priority=99).can_schedule_fifo,
    reason="SCHED_FIFO is refused here (CI runs as root where it is allowed)")


@needs_fifo
def test_policy_applies_inside_the_thread_only() -> None:
    main_before = os.sched_getscheduler(0)
    seen: dict[str, object] = {}

    def target(x: int, *, y: int) -> int:
        seen["policy"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        seen["prio"] = os.sched_getparam(0).sched_priority
        seen["cpus"] = os.sched_getaffinity(0)
        seen["main"] = os.sched_getscheduler(threading.main_thread().native_id or -1)
        return x + y

    cpu = max(os.sched_getaffinity(0))
    t = RealtimeThread(target, policy=RealtimePolicy(priority=60, cpus={cpu}), args=(2,),
                       kwargs={"y": 3}, name="rt-worker")
    t.start()
    report = t.wait_applied(10)
    t.join()
    assert t.result == 5
    assert t.exception is None
    assert seen == {"policy": os.SCHED_FIFO, "prio": 60, "cpus": {cpu}, "main": main_before}
    assert report is not None
    assert report is t.report
    assert report.thread_id == t.native_id
    assert report.thread_name == "rt-worker"
    assert os.sched_getscheduler(0) == main_before


def test_target_exception_reaches_join_every_time() -> None:
    def target() -> None:
        raise ValueError("bad gain")

    hooked: list[object] = []
    old_hook = threading.excepthook
    threading.excepthook = hooked.append
    try:
        t = RealtimeThread(target, policy=RealtimePolicy(freeze_gc=True))
        t.start()
        with pytest.raises(ValueError, match="bad gain"):
            t.join()
        with pytest.raises(ValueError, match="bad gain"):
            t.join()
    finally:
        threading.excepthook = old_hook
    assert hooked == []  # not reported twice through threading.excepthook
    assert isinstance(t.exception, ValueError)


def test_policy_failure_reaches_wait_applied_and_join() -> None:
    t = RealtimeThread(lambda: None, policy=RealtimePolicy(cpus={4095}))
    t.start()
    with pytest.raises(Exception, match="CPUs"):
        t.wait_applied(10)
    with pytest.raises(Exception, match="CPUs"):
        t.join()
    assert t.report is None


def test_subclass_body_and_plain_thread() -> None:
    class Worker(RealtimeThread):
        def body(self) -> object:
            return threading.get_native_id()

    w = Worker()
    w.start()
    assert w.wait_applied(10) is None
    w.join()
    assert w.result == w.native_id


def test_wait_applied_before_start_times_out() -> None:
    t = RealtimeThread(lambda: None)
    with pytest.raises(RequestTimeoutError):
        t.wait_applied(0.01)


def test_invalid_policy_is_caught_at_construction() -> None:
    with pytest.raises(InvalidArgumentError):
        RealtimeThread(lambda: None, policy=RealtimePolicy(priority=120))
