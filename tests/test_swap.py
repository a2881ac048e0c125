"""InferenceSession.swap: hot swap between requests (ONNX Runtime and the fake TensorRT).

The 500 Hz test runs a real PeriodicLoop and swaps models from a second thread. CI's VM is shared
and noisy, so it does not assert that no period anywhere was missed; it asserts what the swap is
responsible for: no period was missed while a swap was in progress (from the call to its return,
which includes loading, warming, the handoff and freeing the old model), every request was
answered by exactly the old or the new model, and every swap was taken by a loop request.
Misses outside swaps are counted and printed. The loop runs at SCHED_FIFO 80 and the swapping
thread at SCHED_FIFO 70 -- the documented recipe: a normal-priority thread preparing the new
model holds the GIL in slices and can be preempted by other processes while holding it, which
does make the loop miss periods (measured on CI: 1-3 misses per 20 swaps without it).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.engine import Engine
from edgert.errors import (
    InferenceError,
    InputError,
    InvalidArgumentError,
    PermissionDeniedError,
    RequestTimeoutError,
    ResourceClosedError,
)
from edgert.realtime import PeriodicLoop, RealtimePolicy
from edgert.session import InferenceSession
from edgert.testing import fake_tensorrt as ft

OBS = np.random.default_rng(5).standard_normal((1, models.OBS_DIM)).astype(np.float32)
PERIOD_NS = 2_000_000  # 500 Hz


def _variant(tmp_path: Path, offset: float) -> Path:
    path = tmp_path / f"policy{offset}.onnx"
    path.write_bytes(models.policy_variant_bytes(offset))
    return path


def _expected(offset: float) -> np.ndarray:
    return models.policy_reference(OBS) + np.float32(offset)


def test_swap_replaces_the_model_and_frees_the_old_one(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs="copy") as session:
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)
        result = session.swap(b, handoff_s=0.0)  # idle session: applied by swap() itself
        assert result.applied_by == "swap"
        assert result.old_freed  # owned outputs: nothing of the old model is in the caller's hands
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(1.0), atol=1e-5)
        assert session.stats.latency.count > 0  # one history of timings across models
        result = session.swap(a, handoff_s=0.0)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)


@pytest.mark.parametrize("outputs", ["copy", "view"])
def test_the_old_model_is_freed_once_requests_moved_on(tmp_path: Path, outputs: str) -> None:
    # infer's short way on the host uses no slot: its requests must count too, or the old
    # model would stay until close().
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs=outputs, slots=2) as session:
        for _ in range(3):
            session.infer(OBS)
        done = threading.Event()
        result: list[Any] = []

        def requests() -> None:
            while not done.is_set():
                session.infer(OBS)
                time.sleep(0.002)

        thread = threading.Thread(target=requests)
        thread.start()
        try:
            result.append(session.swap(b))
        finally:
            done.set()
            thread.join()
        assert result[0].applied_by == "request"
        assert result[0].old_freed


def test_with_views_the_old_model_lives_until_every_slot_moved_on(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs="view", slots=2) as session:
        old = session.infer(OBS)["actions"]
        result = session.swap(b, handoff_s=0.0)
        assert result.applied_by == "swap"
        assert not result.old_freed  # `old` views the old model's memory: kept until close()
        np.testing.assert_allclose(old, _expected(0.0), atol=1e-5)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(1.0), atol=1e-5)


def test_a_second_swap_does_not_free_the_first_ones_old_model_early() -> None:
    """The first swap frees the old model once the model it brought in served ``slots``
    requests; a second swap applied while it waits must not count its own warm-up runs (found by
    review: the oldest model was freed one request after a view of it was handed out)."""
    plan = ft.bundled_policy_plan()
    e0, e1, e2 = (Engine.load(plan, trt_module=ft) for _ in range(3))
    x = np.ones((1, 48), np.float32)
    with e0, e1, e2, InferenceSession(e0, slots=2, outputs="view") as s:
        s.infer({"obs": x})  # a view of model 0: valid for two more requests
        leases = [tb.host for slot in s._slots for tb in slot.outputs]
        first: dict[str, Any] = {}
        swapper = threading.Thread(target=lambda: first.setdefault("r", s.swap(e1,
                                                                               handoff_s=5)))
        swapper.start()
        while s._swap_pending is None:
            time.sleep(0.001)
        s.infer({"obs": x})  # takes the first swap: one request since the view
        time.sleep(0.05)
        s.swap(e2, handoff_s=0.0, warmup_shapes=[{"obs": (b, 48)} for b in range(1, 7)])
        swapper.join()
        assert first["r"].old_freed is False
        assert not any(lease.released for lease in leases)
    assert all(lease.released for lease in leases)  # freed at close


def test_requests_submitted_before_a_swap_finish_but_are_not_collectable(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs="copy") as session:
        pending = session.submit(OBS)
        session.swap(b, handoff_s=0.0)
        # said as it is (a trial was told the slot was reused by a later request, raise slots=)
        with pytest.raises(InferenceError, match="model was swapped after this request"):
            pending.result()
        np.testing.assert_allclose(session.submit(OBS).result()["actions"], _expected(1.0),
                                   atol=1e-5)


def test_an_incompatible_model_is_refused_before_anything_changes(tmp_path: Path) -> None:
    ft.register_function("test_swap.first12", lambda inputs: [inputs["obs"][:, :12].copy()])
    other = ft.make_plan(inputs=[ft.FakeTensor("obs", "FLOAT", (1, 48))],
                         outputs=[ft.FakeTensor("y", "FLOAT", (1, 48))], function="identity")
    half = ft.make_plan(inputs=[ft.FakeTensor("obs", "HALF", (1, 48))],
                        outputs=[ft.FakeTensor("actions", "HALF", (1, 48))],
                        function="identity")
    narrow = ft.make_plan(inputs=[ft.FakeTensor("obs", "FLOAT", (-1, 48),
                                                profiles=[((2, 48), (2, 48), (4, 48))])],
                          # the session's output sizes (refused on its input profile alone)
                          outputs=[ft.FakeTensor("actions", "FLOAT", ("obs:0", 12))],
                          function="test_swap.first12")
    with Engine.load(_variant(tmp_path, 0.0)) as a, InferenceSession(a) as session:
        session.infer(OBS)
        for plan, match in ((other, "names and dtypes"), (half, "names and dtypes"),
                            (narrow, "refuses input shapes")):
            with Engine.load(plan, trt_module=ft) as bad, \
                    pytest.raises(InvalidArgumentError, match=match):
                session.swap(bad, handoff_s=0.0)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"warmup_shapes": {"obs": (1, 48)}}, InvalidArgumentError, "got one mapping"),
    ({"warmup_shapes": [{"ob": (1, 48)}]}, InputError, "unknown input(s) 'ob'"),
    ({"warmup_runs": 0}, InvalidArgumentError, "runs must be an int >= 1"),
])
def test_wrong_warmup_arguments_of_a_swap_are_refused_before_it_starts(
        tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], words: str) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a) as session:
        with pytest.raises(error) as info:
            session.swap(b, handoff_s=0.0, **kwargs)
        assert words in str(info.value)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)
        session.swap(b, handoff_s=0.0, warmup_shapes=[{"obs": (2, 48)}], warmup_runs=1)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(1.0), atol=1e-5)


def _matmul_model(path: Path, width: int, declared: int) -> Path:
    """obs @ ones(48, width), its output declared ``declared`` wide: behind a Reshape to its
    own Shape, which ONNX Runtime's shape inference cannot see through (a wrong declaration)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((models.OBS_DIM, width), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["raw"]),
         helper.make_node("Shape", ["raw"], ["s"]),
         helper.make_node("Reshape", ["raw", "s"], ["actions"])], "wide",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", models.OBS_DIM])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["n", declared])],
        initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), str(path))
    return path


@pytest.mark.parametrize("declared", [13, 12])
def test_a_model_with_other_output_sizes_is_refused(tmp_path: Path, declared: int) -> None:
    # A trial swapped in a 13-wide action vector for the 12-wide one: the loop got it silently.
    # What the model gives counts, not what it declares (a review: declared 12, gave 13).
    with Engine.load(_variant(tmp_path, 0.0)) as a, \
            Engine.load(_matmul_model(tmp_path / "wide.onnx", 13, declared)) as b, \
            InferenceSession(a) as session:
        session.infer(OBS)
        with pytest.raises(InvalidArgumentError,
                           match=r"its output 'actions' has shape \(1, 13\), the session's "
                                 r"\(1, 12\)"):
            session.swap(b, handoff_s=0.0)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)


def test_a_model_that_declares_other_sizes_but_gives_the_same_swaps_in(tmp_path: Path) -> None:
    # A review: declared 13 wide, gives 12, as the session's: edgert runs it, so swaps it in.
    with Engine.load(_variant(tmp_path, 0.0)) as a, \
            Engine.load(_matmul_model(tmp_path / "m.onnx", 12, 13)) as b, \
            InferenceSession(a) as session:
        session.infer(OBS)
        session.swap(b, handoff_s=0.0)
        np.testing.assert_allclose(session.infer(OBS)["actions"],
                                   OBS @ np.ones((models.OBS_DIM, 12), np.float32), rtol=1e-5)


def test_a_swap_not_taken_in_time_changes_nothing(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs="copy") as session:
        session._use.owner[0] = -1  # another thread is (forever) inside a request
        session._use.inside = True
        try:
            with pytest.raises(RequestTimeoutError, match="nothing was changed"):
                session.swap(b, handoff_s=0.0, timeout_s=0.05)
        finally:
            session._use.inside = False
            del session._use.owner[0]
        assert session._swap_pending is None
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(0.0), atol=1e-5)


def test_swap_on_a_closed_session_raises(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a:
        session = InferenceSession(a)
        session.close()
        with pytest.raises(ResourceClosedError):
            session.swap(a)


def test_fake_tensorrt_plans_swap_too(tmp_path: Path) -> None:
    from edgert.store import BuildOptions, EngineBuilder

    with EngineBuilder(trt_module=ft) as builder:
        plans = [builder.build(_variant(tmp_path, off), BuildOptions(profiles="obs:1x48,1x48,8x48"))
                 for off in (0.0, 2.0)]
    with Engine.load(plans[0], trt_module=ft) as a, Engine.load(plans[1], trt_module=ft) as b, \
            InferenceSession(a, outputs="copy") as session:
        session.infer(OBS)
        session.swap(b, handoff_s=0.0)
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(2.0), atol=1e-4)


def _fifo_allowed() -> bool:
    try:
        RealtimePolicy(priority=80).apply().close()
    except PermissionDeniedError:
        return False
    return True


def _run_500hz(engines: list[Engine] | list[object], swaps: int,
               fifo: bool = True) -> tuple[int, int, int, list[str]]:
    """Returns (iterations, misses during swaps, misses outside swaps, problems)."""
    offsets = (0.0, 1.0)
    session = InferenceSession(engines[0], timing="off")
    session.infer(OBS)
    # The recipe: without freeze_gc a full collection started by a swap's allocations held the
    # interpreter for 10.4 ms on the CI VM, and the loop woke 9.5 ms late.
    loop = PeriodicLoop(period_ns=PERIOD_NS, policy=RealtimePolicy(
        priority=80 if fifo else None, freeze_gc=True))
    late: list[tuple[int, int]] = []
    seen: list[int] = []
    windows: list[tuple[int, int]] = []
    problems: list[str] = []
    ref = [_expected(o) for o in offsets]

    def step(tick: object) -> None:
        actions = session.infer(OBS)["actions"]
        end = time.monotonic_ns()
        deadline = tick.deadline_ns  # type: ignore[attr-defined]
        if end > deadline + PERIOD_NS:
            late.append((deadline, end))
        if np.allclose(actions, ref[0], atol=1e-3):
            seen.append(0)
        elif np.allclose(actions, ref[1], atol=1e-3):
            seen.append(1)
        else:
            seen.append(-1)

    def swapper() -> None:
        try:
            with RealtimePolicy(priority=70 if fifo else None).apply():
                # Start once the loop runs: freezing the collector first collects, which takes
                # a while in a big process (the whole suite), and a swap taken by the loop's
                # first request left model 0's answers out of the count.
                started = time.monotonic()
                while len(seen) < 25 and time.monotonic() - started < 10:
                    time.sleep(0.01)
                for i in range(swaps):
                    start = time.monotonic_ns()
                    result = session.swap(engines[(i + 1) % 2])
                    windows.append((start, time.monotonic_ns()))
                    if result.applied_by != "request" or not result.old_freed or \
                            result.gc_collections:
                        problems.append(f"swap {i}: {result}")
                    time.sleep(0.05)
        except BaseException as err:  # reported by the test, not lost in the thread
            problems.append(repr(err))
        finally:
            loop.stop()

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        report = loop.run(step)
    finally:
        loop.stop()
        thread.join()
        session.close()
    during = sum(1 for d, e in late if any(a <= e and d <= b for a, b in windows))
    # every answer came from one of the two models, and they alternated with the swaps
    if -1 in seen:
        problems.append("a request was answered by neither model")
    changes = sum(1 for x, y in itertools.pairwise([0, *seen]) if x != y)  # model 0 first
    if changes != swaps:
        problems.append(f"{changes} model changes in the answers for {swaps} swaps")
    return report.iterations, during, len(late) - during, problems


def _assert_no_miss_during_swaps(engines: list[Engine] | list[object], fifo: bool) -> None:
    attempts = []
    # A miss during a swap that the swap caused repeats; a VM hiccup that happened to fall
    # inside a swap window (windows cover ~5% of the run) rarely does twice in a row.
    for _ in range(2):
        iterations, during, outside, problems = _run_500hz(engines, swaps=12, fifo=fifo)
        assert not problems, problems
        attempts.append((iterations, during, outside))
        print(f"500 Hz hot swap: {iterations} periods, {during} missed during swaps, "
              f"{outside} missed outside swaps (VM noise)")
        if during == 0:
            break
    assert attempts[-1][1] == 0, f"periods missed during swaps in every attempt: {attempts}"


def test_hot_swap_at_500_hz_misses_no_period(tmp_path: Path) -> None:
    if not _fifo_allowed():
        pytest.skip("SCHED_FIFO is refused here (CI runs as root, where it is granted)")
    engines = [Engine.load(_variant(tmp_path, o)) for o in (0.0, 1.0)]
    try:
        _assert_no_miss_during_swaps(engines, fifo=True)
    finally:
        for e in engines:
            e.close()


@pytest.mark.gpu
def test_hot_swap_at_500_hz_on_the_gpu_misses_no_period() -> None:
    from edgert.testing.kernel_executable import KernelExecutable

    weights = dict(models.load_policy_weights())
    shifted = dict(weights, **{"fc3.bias": weights["fc3.bias"] + np.float32(1.0)})
    with KernelExecutable(weights) as a, KernelExecutable(shifted) as b:
        # The device machine refuses SCHED_FIFO; it is not shared, so it runs at normal priority.
        _assert_no_miss_during_swaps([a, b], fifo=_fifo_allowed())


def test_the_running_executable_cannot_be_swapped_in_again(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, InferenceSession(a) as session, \
            pytest.raises(InvalidArgumentError, match="already runs"):
        session.swap(session.executable)


def test_swap_moves_every_per_model_attribute_of_the_session(tmp_path: Path) -> None:
    # If the session grows per-model state, swap must move it too: this fails until it does.
    from edgert.session._swap import _STATE

    session_wide = {"_use", "_swap_pending", "_resources", "_stats", "_requests", "_finalizer",
                    "_partition",
                    "_owner_closed"}
    with Engine.load(_variant(tmp_path, 0.0)) as a, InferenceSession(a) as session:
        assert set(vars(session)) - session_wide == set(_STATE)


def test_two_overlapping_swaps_cannot_both_report_success(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Both swaps pass the "another swap is in progress" check before either has prepared its
    # model; the second must not overwrite the first's pending handoff and let both return.
    from edgert.errors import ConcurrentUseError
    from edgert.session import _swap

    barrier = threading.Barrier(2)
    prepare = _swap._prepare

    def slow_prepare(*args: object, **kwargs: object) -> InferenceSession:
        barrier.wait(timeout=30)
        return prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_swap, "_prepare", slow_prepare)
    outcomes: dict[float, object] = {}
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            Engine.load(_variant(tmp_path, 2.0)) as c, \
            InferenceSession(a, outputs="copy") as session:

        def swap(model: Engine, offset: float) -> None:
            try:
                outcomes[offset] = session.swap(model, handoff_s=5.0, timeout_s=30)
            except ConcurrentUseError as err:
                outcomes[offset] = err
            first_done.set()

        first_done = threading.Event()
        threads = [threading.Thread(target=swap, args=(m, o)) for m, o in ((b, 1.0), (c, 2.0))]
        for t in threads:
            t.start()
        assert first_done.wait(30)  # one swap is refused while the other waits for a request
        session.infer(OBS)  # this request takes the pending swap
        for t in threads:
            t.join(60)
        won = [o for o, r in outcomes.items() if not isinstance(r, ConcurrentUseError)]
        assert len(outcomes) == 2, outcomes
        assert len(won) == 1, outcomes
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(won[0]), atol=1e-5)


def test_a_session_closed_while_a_swap_prepares_raises_resource_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.session import _swap

    prepare = _swap._prepare

    def prepare_then_close(session: InferenceSession, *args: object,
                           **kwargs: object) -> InferenceSession:
        side = prepare(session, *args, **kwargs)  # type: ignore[arg-type]
        session.close()  # the owner shuts down while the new model was being warmed
        return side

    monkeypatch.setattr(_swap, "_prepare", prepare_then_close)
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b:
        session = InferenceSession(a)
        with pytest.raises(ResourceClosedError, match="closed"):
            session.swap(b, handoff_s=0.0)
        assert session._swap_pending is None


def test_a_swap_keeps_the_new_model_on_the_sessions_partition_and_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without CUDA, a spy stands in for the side session: what matters is what it is asked
    # for. A control session on reserved SMs at the highest priority must not be moved to the
    # whole GPU at the default priority by a model update.
    import dataclasses
    import types

    from edgert.session import _session

    asked: dict[str, object] = {}

    class Spy(Exception):
        pass

    def spy(model: object, options: object = None, **kwargs: object) -> None:
        asked.update(kwargs)
        raise Spy

    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a) as session:
        partition, choice = object(), session._choice
        session._partition = partition
        session._choice = dataclasses.replace(choice, stream=types.SimpleNamespace(priority=-5))
        monkeypatch.setattr(_session, "InferenceSession", spy)
        try:
            with pytest.raises(Spy):
                session.swap(b)
            assert asked["partition"] is partition
            assert asked["priority"] == -5
            with pytest.raises(Spy):
                session.swap(b, priority="lowest")  # asked for explicitly: that one
            assert asked["priority"] == "lowest"
        finally:
            session._choice = choice


@pytest.mark.parametrize(("outputs", "freed"), [("copy", True), ("view", False)])
def test_idle_swaps_never_pile_old_models_up(tmp_path: Path, outputs: str, freed: bool) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, outputs=outputs, slots=2) as session:
        for i in range(4):
            result = session.swap((b, a)[i % 2], handoff_s=0.0)
            assert result.applied_by == "swap"
            # owned outputs: freed at once; views may still be read: kept until close()
            assert result.old_freed is freed
            np.testing.assert_allclose(np.asarray(session.infer(OBS)["actions"]),
                                       _expected((1.0, 0.0)[i % 2]), atol=1e-5)


def test_warmup_takes_a_pending_swap_first_and_records_nothing(tmp_path: Path) -> None:
    with Engine.load(_variant(tmp_path, 0.0)) as a, Engine.load(_variant(tmp_path, 1.0)) as b, \
            InferenceSession(a, slots=2, timing="stages") as session:
        pending = session.submit(OBS)  # disowned by the swap, as documented
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(session.swap(b, handoff_s=5.0)))
        thread.start()
        deadline = time.monotonic() + 5.0
        while session._swap_pending is None and time.monotonic() < deadline:
            time.sleep(0.001)
        session.warmup(runs=2)  # takes the swap, then warms the new model
        thread.join()
        assert done[0].applied_by == "request"
        with pytest.raises(InferenceError):
            pending.result()  # submitted before the swap: not collectable, as documented
        assert session.stats.latency.count == 0  # no warm-up run recorded
        np.testing.assert_allclose(session.infer(OBS)["actions"], _expected(1.0), atol=1e-5)
        assert session.stats.latency.count == 1


def test_a_swap_with_the_collector_on_says_so_once_and_counts_its_collections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Found by tracing a missed period at 500 Hz: a full collection started by the swap's
    # allocations held the interpreter for 10.4 ms on the swapping thread.
    import gc
    import logging

    from edgert.session import _swap

    monkeypatch.setattr(_swap, "_gc_warned", False)
    engines = [Engine.load(_variant(tmp_path, o)) for o in (0.0, 1.0)]
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    try:
        gc.enable()
        gc.set_threshold(1, 1, 1)  # as if the heap were due for collections
        with InferenceSession(engines[0]) as session, \
                caplog.at_level(logging.WARNING, logger="edgert.session"):
            first = session.swap(engines[1])
            session.swap(engines[0])
        assert first.gc_collections > 0
        said = [r for r in caplog.records if "freeze_gc=True" in r.getMessage()]
        assert len(said) == 1
        gc.disable()  # what RealtimePolicy(freeze_gc=True) does
        with InferenceSession(engines[0]) as session:
            assert session.swap(engines[1]).gc_collections == 0
    finally:
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()
        else:
            gc.disable()
        for e in engines:
            e.close()


def test_a_request_that_reshapes_counts_once_toward_freeing_the_old_model(
        tmp_path: Path) -> None:
    # Found by review: a reshape also bumped the slot's generation, which the swap counted as a
    # request, so one request at a new batch size freed the old model at once; with slots=2 a
    # view from before the swap may still be read until the new model served two requests.
    engines = [Engine.load(_variant(tmp_path, o)) for o in (0.0, 1.0)]
    try:
        with InferenceSession(engines[0], outputs="view", slots=2) as session:
            session.infer(OBS)
            results: list[Any] = []
            thread = threading.Thread(target=lambda: results.append(
                session.swap(engines[1], handoff_s=5.0)))
            thread.start()
            while session._swap_pending is None:
                time.sleep(0.001)
            session.infer(np.repeat(OBS, 3, axis=0))  # one request, at a new batch size
            thread.join()
            assert results[0].applied_by == "request"
            assert not results[0].old_freed  # freed at close(): only one request was served
    finally:
        for e in engines:
            e.close()
