"""GPU tier: ``infer``'s short way on a CUDA device (``CudaRunner.infer_short``, issue 15).

Once a plain ``infer`` replayed a captured graph, plain requests of the same shapes relaunch that
graph without staging, keys or slot bookkeeping. Every result must still be right (fresh inputs
each time, output buffers poisoned before each run), owned by the caller, and counted; every
other request must take the general way and be right too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgert.errors import InferenceError, InputError
from edgert.models import ACTION_DIM, OBS_DIM, policy_reference

pytestmark = pytest.mark.gpu

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def exe() -> Iterator[Any]:
    from edgert.kernels import KernelExecutable

    with KernelExecutable() as kernel_exe:
        yield kernel_exe


def _obs(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.standard_normal((batch, OBS_DIM)).astype(np.float32)


def _poison(session: Any) -> None:
    for slot in session._slots:
        for tb in slot.outputs:
            if tb.view is not None and not slot.busy:
                tb.view.fill(np.nan)


class _CountStages:
    """Counts the requests that took the general way (each stages its inputs once)."""

    def __init__(self, session: Any) -> None:
        runner = session._runner
        self.calls = 0
        inner = runner.stage

        def stage(slot: Any, inputs: Any) -> Any:
            self.calls += 1
            return inner(slot, inputs)

        runner.stage = stage


def _check(session: Any, x: Any, bare: bool = False) -> np.ndarray:
    _poison(session)
    out = session.infer(x if bare else {"obs": x})["actions"]
    np.testing.assert_allclose(out, policy_reference(np.asarray(x)), rtol=RTOL, atol=ATOL)
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize("sync", ["adaptive", "spin", "blocking"])
@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("io", ["zero_copy", "copy"])
def test_short_way_results_are_right_owned_and_counted(exe: Any, io: str, slots: int,
                                                      sync: str) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(hash((io, slots, sync)) % 2**32)
    with InferenceSession(exe, io=io, slots=slots, sync=sync) as s:
        general = _CountStages(s)
        kept = [(x, _check(s, x)) for x in (_obs(rng, 3) for _ in range(20))]
        assert s._runner.armed is not None
        # the first run of a signature, its capture (one per slot at most), then the short way
        assert general.calls <= 1 + slots
        for x, y in kept:  # a kept result never changes under the caller
            assert y.flags.owndata
            np.testing.assert_allclose(y, policy_reference(x), rtol=RTOL, atol=ATOL)
        assert s.stats.latency.count == len(kept)
        assert s.stats.device.count == 0  # timing="host": latency only


def test_short_way_without_event_nodes_in_graphs(exe: Any) -> None:
    # Drivers that refuse event-record nodes in graphs: the end event is recorded after the
    # launch, on the short way too.
    from edgert.session import InferenceSession

    rng = np.random.default_rng(8)
    with InferenceSession(exe) as s:
        s._runner.graph_events = False
        general = _CountStages(s)
        for _ in range(10):
            _check(s, _obs(rng, 2))
        assert s._runner.armed is not None
        assert general.calls <= 3
        assert s.stats.latency.count == 10


def test_short_way_gives_way_to_every_other_request(exe: Any) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(1)
    with InferenceSession(exe) as s:
        general = _CountStages(s)
        for _ in range(3):
            _check(s, _obs(rng, 2))
        taken = general.calls
        _check(s, _obs(rng, 2), bare=True)  # a bare array for the one input: still short
        assert general.calls == taken
        # new shapes (one past the buffers' size, which moves them and drops their graphs)
        for batch in (5, 256, 2):
            for _ in range(3):
                _check(s, _obs(rng, batch))
        x = _obs(rng, 4)[::2]
        before = general.calls
        _check(s, x)  # not contiguous, but plain: copied the short way
        assert general.calls == before
        with pytest.raises(InputError, match="not an array"):
            s.infer(x.tolist())  # a list: the general way, which refuses it
        assert general.calls == before + 1
        with pytest.raises(InputError, match="dtype"):
            s.infer({"obs": _obs(rng, 2).astype(np.float64)})
        with pytest.raises(InputError):
            s.infer({"obs": _obs(rng, 2), "extra": _obs(rng, 2)})
        with pytest.raises(InputError):
            s.infer({})
        for _ in range(3):
            _check(s, _obs(rng, 2))
        assert s._runner.armed is not None  # armed again after the general way


def test_short_way_refuses_non_contiguous_when_asked(exe: Any) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(2)
    with InferenceSession(exe, contiguous="refuse") as s:
        for _ in range(3):
            _check(s, _obs(rng, 2))
        assert s._runner.armed is not None
        with pytest.raises(InputError, match="contiguous"):
            s.infer({"obs": _obs(rng, 4)[::2]})


@pytest.mark.parametrize("options", [{"timing": "stages"}, {"outputs": "view", "slots": 2},
                                     {"cuda_graph": "off"}])
def test_short_way_is_not_taken_where_it_would_change_what_is_returned_or_recorded(
        exe: Any, options: dict[str, str]) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(3)
    with InferenceSession(exe, **options) as s:  # type: ignore[arg-type]
        for _ in range(4):
            x = _obs(rng, 2)
            out = s.infer({"obs": x})["actions"]
            np.testing.assert_allclose(out, policy_reference(x), rtol=RTOL, atol=ATOL)
        assert s._runner.armed is None
        if options.get("timing") == "stages":
            assert s.stats.device.count == 4


@pytest.mark.parametrize("io", ["zero_copy", "copy"])
def test_short_way_with_views_and_one_slot(exe: Any, io: str) -> None:
    # The latency recipe (outputs="view", one slot): the short way returns the slot's views,
    # the very mapping the general way returns, so what a view promises stays the same.
    from edgert.session import InferenceSession

    rng = np.random.default_rng(9)
    with InferenceSession(exe, io=io, slots=1, outputs="view", sync="spin",
                          timing="off") as s:
        general = _CountStages(s)
        s.infer({"obs": _obs(rng, 3)})
        for _ in range(20):
            x = _obs(rng, 3)
            _poison(s)
            out = s.infer({"obs": x})
            np.testing.assert_allclose(out["actions"], policy_reference(x), rtol=RTOL,
                                       atol=ATOL)
            assert out is s._slots[0].results
            assert not out["actions"].flags.owndata  # a view of the slot, as documented
        assert general.calls <= 2  # the first run and its capture
        s.submit({"obs": _obs(rng, 3)})  # a submitted request owns the slot: general way
        x = _obs(rng, 3)
        before = general.calls
        np.testing.assert_allclose(s.infer({"obs": x})["actions"], policy_reference(x),
                                   rtol=RTOL, atol=ATOL)
        assert general.calls == before + 1
        x = _obs(rng, 5)  # new shapes: the general way, then short again
        for _ in range(4):
            np.testing.assert_allclose(s.infer({"obs": x})["actions"], policy_reference(x),
                                       rtol=RTOL, atol=ATOL)
        assert s._runner.armed is not None


def test_pending_requests_and_the_short_way(exe: Any) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(4)
    with InferenceSession(exe, slots=2) as s:
        for _ in range(3):
            _check(s, _obs(rng, 1))
        x = _obs(rng, 1)
        p = s.submit({"obs": x})  # the other slot: infer's short way must leave it alone
        for _ in range(3):
            _check(s, _obs(rng, 1))
        np.testing.assert_allclose(p.result()["actions"], policy_reference(x), rtol=RTOL,
                                   atol=ATOL)
    with InferenceSession(exe, slots=1) as s:
        for _ in range(3):
            _check(s, _obs(rng, 1))
        x = _obs(rng, 1)
        p = s.submit({"obs": x})
        first = p.result()["actions"].copy()
        for _ in range(2):
            _check(s, _obs(rng, 1))  # the one slot's buffers again
        with pytest.raises(InferenceError, match="reused"):
            p.result()
        np.testing.assert_allclose(first, policy_reference(x), rtol=RTOL, atol=ATOL)
        # a request still in flight in the one slot: infer waits for it, then reuses the slot
        x = _obs(rng, 1)
        p = s.submit({"obs": x})
        _check(s, _obs(rng, 1))
        with pytest.raises(InferenceError, match="reused"):
            p.result()


def _armed(session: Any, rng: np.random.Generator) -> Any:
    """The session's runner, once plain requests of batch 2 armed its short way."""
    for _ in range(3):
        _check(session, _obs(rng, 2))
    runner = session._runner
    assert runner.armed is not None
    return runner


def test_a_failed_launch_raises_and_the_session_recovers(exe: Any) -> None:
    from cuda.bindings import runtime as rt

    from edgert.session import InferenceSession

    rng = np.random.default_rng(5)
    with InferenceSession(exe) as s:
        runner = _armed(s, rng)
        launch = runner.graph_launch
        runner.graph_launch = lambda g, st: (rt.cudaError_t.cudaErrorInvalidValue,)
        try:
            with pytest.raises(InferenceError, match="could not be enqueued") as info:
                s.infer({"obs": _obs(rng, 2)})
            assert "cudaGraphLaunch" in str(info.value.__cause__)
        finally:
            runner.graph_launch = launch
        for _ in range(3):
            _check(s, _obs(rng, 2))


def test_a_request_failing_on_the_device_raises_and_the_session_recovers(exe: Any) -> None:
    from cuda.bindings import runtime as rt

    from edgert.session import InferenceSession

    rng = np.random.default_rng(6)
    with InferenceSession(exe) as s:
        runner = _armed(s, rng)
        wait = runner._adaptive_wait

        def failing(ev: Any) -> Any:
            wait(ev)
            return rt.cudaError_t.cudaErrorLaunchFailure

        runner._adaptive_wait = failing
        try:
            with pytest.raises(InferenceError, match="failed on the device"):
                s.infer({"obs": _obs(rng, 2)})
        finally:
            runner._adaptive_wait = wait
        assert runner.armed is None
        for _ in range(3):
            _check(s, _obs(rng, 2))
        assert s._runner.armed is not None


def test_warmup_and_close_disarm(exe: Any) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(7)
    s = InferenceSession(exe)
    for _ in range(3):
        _check(s, _obs(rng, 1))
    count = s.stats.latency.count
    s.warmup()
    assert s.stats.latency.count == count  # warm-up runs are not counted
    out = _check(s, _obs(rng, 1))
    assert out.shape == (1, ACTION_DIM)
    s.close()
    assert s._runner.armed is None


@pytest.mark.parametrize("bare", [False, True])
def test_a_reshape_that_fails_midway_disarms_the_short_way(exe: Any, bare: bool) -> None:
    # The input grows, then the output cannot (found by review): the armed graph names the
    # released buffers, so the retry must fail again and small requests stay right.
    from edgert.errors import PoolExhausted
    from edgert.memory import BufferPool
    from edgert.session import InferenceSession

    rng = np.random.default_rng(9)
    with BufferPool.for_host(max_bytes=9216, mapped=True) as pool, \
            InferenceSession(exe, slots=1, io="zero_copy", pool=pool) as s:
        for _ in range(3):
            _check(s, _obs(rng, 1), bare=bare)
        assert s._runner.armed is not None
        big = _obs(rng, 40)
        for _ in range(2):
            with pytest.raises(PoolExhausted):
                s.infer(big if bare else {"obs": big})
        for _ in range(3):
            _check(s, _obs(rng, 1), bare=bare)



def _refuse_batch_3(monkeypatch: pytest.MonkeyPatch, session: Any) -> None:
    exe = session._runner.exe
    real = exe.set_input_shape
    monkeypatch.setattr(exe, "set_input_shape",
                        lambda name, shape: False if shape[0] == 3 else real(name, shape))


def test_a_refused_shape_neither_replays_a_stale_graph_nor_loses_the_short_way(
        exe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review (host simulation): a reshape cleared the slot's signature before the
    # executable refused the shape; requests of the old shape then ran without one (a graph
    # captured under key None, replayed by the short way), and the short way restored an armed
    # tuple of the old signature, which it then refused on every request.
    from edgert.session import InferenceSession

    rng = np.random.default_rng(11)
    with InferenceSession(exe, slots=1) as s:
        for _ in range(3):
            _check(s, _obs(rng, 2))
        with monkeypatch.context() as m:
            _refuse_batch_3(m, s)
            with pytest.raises(InputError, match="refused shape"):
                s.infer({"obs": _obs(rng, 3)})
        general = _CountStages(s)
        for _ in range(10):
            _check(s, _obs(rng, 2))
        assert general.calls <= 2, general.calls
        assert s._slots[0].sig is not None
        assert None not in s._runner.graphs._graphs[0]
