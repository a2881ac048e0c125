"""PeriodicLoop semantics on a fake clock (skip, catch_up, rephase, stop, errors) and a short run
on the real clock that checks structure, never timing."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

import numpy as np
import pytest

from edgert.errors import ConcurrentUseError, InvalidArgumentError
from edgert.realtime import OverrunPolicy, PeriodicLoop, RealtimePolicy, RealtimeThread, Tick
from edgert.realtime._clock import MonotonicSleeper
from edgert.testing.realtime import FakeClock

P = 1000  # period in ns on the fake clock


def fake_loop(overrun: str, clock: FakeClock, **kwargs: object) -> PeriodicLoop:
    return PeriodicLoop(period_ns=P, overrun=overrun, clock=clock,
                        sleep_until=clock.sleep_until, **kwargs)  # type: ignore[arg-type]


def stepper(clock: FakeClock, durations: dict[int, int], ticks: list[Tick],
            default: int = 100) -> Callable[[Tick], None]:
    def step(tick: Tick) -> None:
        ticks.append(tick)
        clock.advance(durations.get(tick.iteration, default))
    return step


def test_skip_drops_passed_deadlines_and_counts_them() -> None:
    clock = FakeClock(start_ns=0)
    ticks: list[Tick] = []
    report = fake_loop("skip", clock).run(stepper(clock, {2: 3500}, ticks), iterations=6)
    # Deadlines 1000, 2000, 3000; the step at 3000 ends at 6500, so 4000, 5000, 6000 are
    # dropped and the grid resumes at 7000.
    assert [t.deadline_ns for t in ticks] == [1000, 2000, 3000, 7000, 8000, 9000]
    assert [t.skipped for t in ticks] == [0, 0, 0, 3, 0, 0]
    assert all(t.latency_ns == 0 for t in ticks)
    assert (report.deadline_misses, report.skipped_periods, report.iterations) == (1, 3, 6)
    assert report.step.max_ns == 3500
    assert report.step.over(P) == 1
    assert report.wake.max_ns == 0
    assert report.elapsed_ns == 9100 - 1000
    assert report.stopped_by == "iterations"
    assert report.overrun is OverrunPolicy.SKIP


def test_catch_up_runs_late_iterations_back_to_back() -> None:
    clock = FakeClock(start_ns=0)
    ticks: list[Tick] = []
    report = fake_loop("catch_up", clock).run(stepper(clock, {2: 3500}, ticks), iterations=7)
    assert [t.deadline_ns for t in ticks] == [1000, 2000, 3000, 4000, 5000, 6000, 7000]
    # Woken at the end of the previous step until the schedule is met again.
    assert [t.latency_ns for t in ticks] == [0, 0, 0, 2500, 1600, 700, 0]
    assert all(t.skipped == 0 for t in ticks)
    # Late steps 2, 3 and 4 each end after their next deadline.
    assert (report.deadline_misses, report.skipped_periods) == (3, 0)
    assert report.wake.max_ns == 2500
    assert report.wake.over(P // 10) == 3


def test_rephase_starts_a_new_grid_after_the_late_step() -> None:
    clock = FakeClock(start_ns=0)
    ticks: list[Tick] = []
    report = fake_loop("rephase", clock).run(stepper(clock, {2: 3500}, ticks), iterations=5)
    assert [t.deadline_ns for t in ticks] == [1000, 2000, 3000, 7500, 8500]
    assert [t.skipped for t in ticks] == [0, 0, 0, 3, 0]
    assert (report.deadline_misses, report.skipped_periods) == (1, 3)


def test_wake_latency_and_miss_counting_on_the_fake_clock() -> None:
    clock = FakeClock(start_ns=0, wake_latency_ns=lambda deadline: 50 if deadline != 3000 else 950)
    ticks: list[Tick] = []
    report = fake_loop("skip", clock).run(stepper(clock, {}, ticks, default=60), iterations=5)
    assert [t.latency_ns for t in ticks] == [50, 50, 950, 50, 50]
    # wake 950 + step 60 > period: a miss even though the step itself was short.
    assert report.deadline_misses == 1
    assert report.skipped_periods == 1
    assert report.wake.min_ns == 50
    assert report.wake.over(P // 10) == 1


def test_iteration_protocol_with_break_restores_and_reports() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock)
    seen = []
    for tick in loop:
        seen.append(tick.iteration)
        clock.advance(10)
        if tick.iteration == 4:
            break
    report = loop.report()
    assert seen == [0, 1, 2, 3, 4]
    assert report.iterations == 4  # the iteration left by break is not counted
    assert report.stopped_by == "closed"
    assert not loop.running
    with contextlib.closing(loop.ticks(3)) as ticks:
        assert [t.iteration for t in ticks] == [0, 1, 2]
    assert loop.report().stopped_by == "iterations"


def test_stop_from_the_step_and_from_an_interrupted_sleep() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock)
    report = loop.run(lambda t: loop.stop() if t.iteration == 3 else None, iterations=100)
    assert report.iterations == 4
    assert report.stopped_by == "stop"
    # A signal handler calling stop() while the loop sleeps: the sleep returns early (EINTR)
    # and the loop ends without running another step.
    clock.interrupt_next = 1
    steps: list[int] = []

    def step(tick: Tick) -> None:
        steps.append(tick.iteration)
        if tick.iteration == 1:
            clock.interrupt_next = 1
            clock.on_interrupt = loop.stop

    report = loop.run(step, iterations=100)
    assert steps == [0, 1]
    assert report.stopped_by == "stop"
    assert len(clock.sleeps) >= 2


def test_step_exception_stops_the_loop_propagates_and_restores_policy() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock, policy=RealtimePolicy(freeze_gc=True))

    def step(tick: Tick) -> None:
        assert not __import__("gc").isenabled()
        if tick.iteration == 2:
            raise RuntimeError("sensor unplugged")

    with pytest.raises(RuntimeError, match="sensor unplugged"):
        loop.run(step, iterations=10)
    report = loop.report()
    assert report.iterations == 2
    assert report.stopped_by == "exception"
    assert __import__("gc").isenabled()
    assert report.policy is not None
    assert report.policy.applied[0].setting == "gc"


def test_running_twice_at_once_is_refused() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock)

    def step(tick: Tick) -> None:
        assert loop.running
        loop.run(iterations=1)

    with pytest.raises(ConcurrentUseError):
        loop.run(step, iterations=1)
    assert not loop.running


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        PeriodicLoop()
    with pytest.raises(InvalidArgumentError):
        PeriodicLoop(0.001, period_ns=1000)
    with pytest.raises(InvalidArgumentError):
        PeriodicLoop(-1.0)
    with pytest.raises(InvalidArgumentError):
        PeriodicLoop(0.001, overrun="drop")
    with pytest.raises(InvalidArgumentError):
        PeriodicLoop(0.001).run(iterations=-1)
    assert PeriodicLoop(0.002).period_ns == 2_000_000


@pytest.mark.parametrize(("period", "said"), [
    (-0.001, "period_s must be a positive, finite number of seconds, got -0.001"),
    (float("nan"), "period_s must be a positive, finite number of seconds, got nan"),
    (float("inf"), "period_s must be a positive, finite number of seconds, got inf"),
    ("0.001", "period_s must be a number of seconds, got '0.001'"),
    (1e-12, "period_s=1e-12 is shorter than 1 ns"),
])
def test_a_bad_period_is_named_in_the_units_it_was_given(period: object, said: str) -> None:
    # It said "got -1000000 ns" for -0.001 s, and NaN or inf raised ValueError/OverflowError.
    with pytest.raises(InvalidArgumentError) as info:
        PeriodicLoop(period)  # type: ignore[arg-type]
    assert str(info.value).splitlines()[0] == said
    assert info.value.hint is not None
    assert "PeriodicLoop(0.002)" in info.value.hint
    with pytest.raises(InvalidArgumentError, match="period_ns must be a positive"):
        PeriodicLoop(period_ns=-5)
    assert PeriodicLoop(period_ns=np.int64(1000)).period_ns == 1000


def test_real_clock_run_with_policy_structure() -> None:
    can_fifo = os.geteuid() == 0
    policy = RealtimePolicy(priority=50 if can_fifo else None, freeze_gc=True, strict=False)
    loop = PeriodicLoop(0.0005, policy=policy)
    ticks: list[Tick] = []
    report = loop.run(ticks.append, iterations=40)
    assert report.iterations == 40 == len(ticks)
    assert report.wake.count == report.step.count == 40
    assert report.stopped_by == "iterations"
    assert report.gc_collections == 0
    # Absolute deadlines: each deadline is a whole number of periods after the first, and the
    # loop never wakes before its deadline.
    first = ticks[0].deadline_ns
    assert all((t.deadline_ns - first) % loop.period_ns == 0 for t in ticks)
    assert all(t.latency_ns >= 0 for t in ticks)
    assert report.elapsed_ns >= 39 * loop.period_ns
    skipped = sum(t.skipped for t in ticks)
    assert ticks[-1].deadline_ns - first == (39 + skipped) * loop.period_ns
    assert report.skipped_periods == skipped
    assert report.policy is not None
    assert report.to_dict()["iterations"] == 40


def test_stop_from_another_thread() -> None:
    loop = PeriodicLoop(0.001)
    started = threading.Event()

    def step(tick: Tick) -> None:
        started.set()

    worker = RealtimeThread(loop.run, args=(step,), kwargs={"iterations": 1_000_000})
    worker.start()
    assert started.wait(10)
    loop.stop()
    worker.join(10)
    assert not worker.is_alive()
    report = worker.result
    assert report.stopped_by == "stop"  # type: ignore[attr-defined]
    assert 0 < report.iterations < 1_000_000  # type: ignore[attr-defined]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_stop_from_a_signal_handler_interrupts_the_sleep() -> None:
    loop = PeriodicLoop(0.2)  # long period: the stop must come from EINTR, not a deadline
    old = signal.signal(signal.SIGALRM, lambda signum, frame: loop.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        report = loop.run(iterations=50)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert report.stopped_by == "stop"
    assert report.iterations <= 1  # woken by the signal, not after 50 periods of 0.2 s


def test_monotonic_sleeper_returns_at_once_for_a_passed_deadline() -> None:
    sleeper = MonotonicSleeper()
    assert sleeper(0) is True
    with pytest.raises(Exception, match="EINVAL"):
        sleeper(-5)


def test_report_mid_run_from_another_thread_counts_the_loop_thread() -> None:
    # report() used to subtract the loop thread's getrusage(RUSAGE_THREAD) from the *calling*
    # thread's, so a monitoring thread that faults a lot showed its own faults as the loop's.
    never = PeriodicLoop(0.001).report()
    assert never.stopped_by == "not_started"
    assert (never.minor_faults, never.major_faults, never.involuntary_switches) == (0, 0, 0)

    loop = PeriodicLoop(0.001)
    started = threading.Event()

    def step(tick: Tick) -> None:
        started.set()

    t = threading.Thread(target=loop.run, args=(step,), kwargs={"iterations": 400})
    t.start()
    try:
        assert started.wait(10)
        touched = bytearray(64 << 20)  # ~16k minor faults in *this* thread
        touched[::4096] = b"x" * len(touched[::4096])
        mid = loop.report()
    finally:
        loop.stop()
        t.join()
    assert mid.stopped_by == "running"
    assert mid.minor_faults is not None
    assert mid.involuntary_switches is not None
    assert 0 <= mid.minor_faults < 2000
    assert mid.involuntary_switches >= 0
    final = loop.report()
    assert final.minor_faults is not None
    assert mid.minor_faults <= final.minor_faults < 2000


def test_stop_before_run_returns_at_once_and_is_consumed() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock, policy=RealtimePolicy(freeze_gc=True))
    loop.stop()  # e.g. a SIGTERM handler that ran while the node was starting up
    ticks: list[Tick] = []
    report = loop.run(stepper(clock, {}, ticks), iterations=5)
    assert (report.iterations, report.stopped_by, ticks) == (0, "stop", [])
    assert report.policy is None  # never applied
    report = loop.run(stepper(clock, {}, ticks), iterations=5)  # the request was consumed
    assert (report.iterations, report.stopped_by) == (5, "iterations")


@pytest.mark.parametrize("bad", [2.5, True, "3", -1, np.float64(2.0)])
def test_iterations_must_be_a_non_negative_int(bad: object) -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock)
    with pytest.raises(InvalidArgumentError, match="iterations must be"):
        loop.ticks(bad)  # type: ignore[arg-type]  # at once, not at the first next()

    def step(tick: Tick) -> None:  # without the check, 2.5 is never reached: stop the test
        clock.advance(10)
        if tick.iteration == 9:
            loop.stop()

    with pytest.raises(InvalidArgumentError, match="iterations must be"):
        loop.run(step, iterations=bad)  # type: ignore[arg-type]
    assert loop.run(step, iterations=np.int64(3)).iterations == 3  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="period_ns must be an int"):
        PeriodicLoop(period_ns=1.5e6)  # type: ignore[arg-type]


def test_an_exception_in_a_ticks_body_is_reported_as_exception() -> None:
    clock = FakeClock(start_ns=0)
    loop = fake_loop("skip", clock)

    def iterate() -> None:
        with contextlib.closing(loop.ticks(10)) as ticks:
            for tick in ticks:
                clock.advance(10)
                if tick.iteration == 3:
                    raise ValueError("step failed")

    with pytest.raises(ValueError, match="step failed"):
        iterate()
    report = loop.report()
    assert (report.iterations, report.stopped_by) == (3, "exception")
    # A break while an outer exception is being handled is still a break.
    try:
        raise KeyError("outer")
    except KeyError:
        with contextlib.closing(loop.ticks(10)) as ticks:
            for tick in ticks:
                clock.advance(10)
                if tick.iteration == 2:
                    break
    assert loop.report().stopped_by == "closed"
