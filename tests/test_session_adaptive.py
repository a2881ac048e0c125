"""sync="adaptive": spin for the learned completion time, then sleep (no GPU needed).

The wait loop of the CUDA runner is driven here by a simulated event whose completion time is
set per request; the clock is simulated too, so the assertions are exact and do not depend on
this machine's speed.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgert.session import _adaptive
from edgert.session._adaptive import ADAPTIVE_SPIN_MAX_NS, ADAPTIVE_SPIN_MIN_NS
from edgert.session._cuda_runner import CudaRunner

NOT_READY = 600


class _Device:
    """A simulated event: each query advances the clock by ``step_ns``; ``sync`` jumps to the
    completion time plus a wake-up delay and counts as a sleep."""

    def __init__(self, step_ns: int = 500, wake_ns: int = 30_000) -> None:
        self.now = 0
        self.step = step_ns
        self.wake = wake_ns
        self.done_at = 0
        self.queries = 0
        self.sleeps = 0

    def clock(self) -> int:
        return self.now

    def query(self, _ev: Any) -> tuple[int]:
        self.queries += 1
        self.now += self.step
        return (0 if self.now >= self.done_at else NOT_READY,)

    def sync(self, _ev: Any) -> tuple[int]:
        self.sleeps += 1
        self.now = max(self.now, self.done_at) + self.wake
        return (0,)

    def request(self, duration_ns: int) -> None:
        self.done_at = self.now + duration_ns


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> _Device:
    dev = _Device()
    monkeypatch.setattr(_adaptive, "_now", dev.clock)
    return dev


def _runner(dev: _Device, fast: bool) -> CudaRunner:
    """A runner whose waits go to ``dev``: through the ctypes-style query (an int handle, an int
    result) or the bindings' query (a tuple), and a sleep that lands on ``dev.sync``."""
    runner = CudaRunner.__new__(CudaRunner)
    runner.ev_query = dev.query
    runner.ev_sync = dev.sync
    runner.fast_query = (lambda handle: dev.query(handle)[0]) if fast else None
    runner.expect_ns = 0
    runner.spin_budget_ns = ADAPTIVE_SPIN_MIN_NS
    runner.slept = 0

    def sleep_on(ev: Any) -> Any:
        runner.slept += 1
        return dev.sync(ev)[0]

    runner._sleep_on = sleep_on  # type: ignore[method-assign]
    return runner


@pytest.fixture(params=[True, False], ids=["ctypes-query", "bindings-query"])
def fast(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_steady_requests_are_caught_by_the_spin_after_learning(device: _Device,
                                                              fast: bool) -> None:
    runner = _runner(device, fast)
    for _ in range(40):
        device.request(100_000)  # 100 us: longer than the initial 20 us spin
        assert runner._adaptive_wait(0) == 0
    slept_while_learning = runner.slept
    assert 0 < slept_while_learning < 40
    for _ in range(100):
        device.request(100_000)
        assert runner._adaptive_wait(0) == 0
    assert runner.slept == slept_while_learning, "a request that took the usual time slept"
    assert 100_000 < runner.spin_budget_ns < 250_000


def test_a_slow_request_sleeps_after_the_spin_budget(device: _Device, fast: bool) -> None:
    runner = _runner(device, fast)
    for _ in range(100):
        device.request(50_000)
        runner._adaptive_wait(0)
    budget = runner.spin_budget_ns
    before = device.queries
    device.request(50_000_000)  # a 50 ms stall
    runner._adaptive_wait(0)
    assert runner.slept >= 1
    spun_ns = (device.queries - before) * device.step
    assert spun_ns <= budget + device.step, "spun past the budget"


def test_the_spin_never_exceeds_the_cap(device: _Device, fast: bool) -> None:
    runner = _runner(device, fast)
    device.step = 50_000
    for _ in range(200):
        device.request(20_000_000)  # requests that always take 20 ms
        before = device.queries
        runner._adaptive_wait(0)
        assert (device.queries - before - 1) * device.step <= ADAPTIVE_SPIN_MAX_NS
    assert runner.spin_budget_ns == ADAPTIVE_SPIN_MAX_NS


def test_a_device_error_ends_the_wait_at_once(device: _Device, fast: bool) -> None:
    runner = _runner(device, fast)

    def failing(_ev: Any) -> tuple[int]:
        return (719,)  # cudaErrorLaunchFailure

    runner.ev_query = failing
    if fast:
        runner.fast_query = lambda _handle: 719
    device.request(10_000_000)
    assert runner._adaptive_wait(0) == 719
    assert device.sleeps == 0
