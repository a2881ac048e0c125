"""Sessions on the host device with the bundled ONNX model (ONNX Runtime, no GPU needed)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgert import Placement, TensorSpec
from edgert.engine import Engine
from edgert.errors import (
    InferenceError,
    InputError,
    InvalidArgumentError,
    NotSupportedError,
    RequestTimeoutError,
    ResourceClosedError,
)
from edgert.models import ACTION_DIM, MAX_BATCH, OBS_DIM, bundled_model_path, policy_reference
from edgert.session import InferenceSession, IoMode, RequestTimings

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(bundled_model_path()) as eng:
        yield eng


def _obs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, OBS_DIM)).astype(np.float32)


def test_infer_matches_reference(engine: Engine) -> None:
    with InferenceSession(engine) as s:
        assert s.device == "host"
        assert s.stream is None
        assert s.options.io is IoMode.ZERO_COPY
        assert s.input_names == ("obs",)
        assert s.output_names == ("actions",)
        for seed in range(3):
            x = _obs(1, seed)
            out = s.infer({"obs": x})
            np.testing.assert_allclose(out["actions"], policy_reference(x), rtol=RTOL, atol=ATOL)
        x = _obs(1, 9)
        np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x), rtol=RTOL,
                                   atol=ATOL)  # a bare array for a one-input model


@pytest.mark.parametrize("io", ["copy", "zero_copy"])
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_dynamic_batches_grow_buffers(engine: Engine, io: str, slots: int) -> None:
    with InferenceSession(engine, io=io, slots=slots) as s:
        for i, batch in enumerate((1, 5, MAX_BATCH, 2, 1, 64)):
            x = _obs(batch, i)
            out = s.infer({"obs": x})["actions"]
            assert out.shape == (batch, ACTION_DIM)
            np.testing.assert_allclose(out, policy_reference(x), rtol=RTOL, atol=ATOL)


def test_default_outputs_never_change_under_the_caller(engine: Engine) -> None:
    # issue 15: a newcomer who keeps results in a list must not find them changed later.
    with InferenceSession(engine) as s:
        xs = [_obs(1, i) for i in range(2 * s.options.slots + 1)]
        kept = [s.infer(x)["actions"] for x in xs]
        for x, got in zip(xs, kept, strict=True):
            np.testing.assert_allclose(got, policy_reference(x), rtol=RTOL, atol=ATOL)
            assert got.flags.owndata


def test_views_stay_valid_until_their_slot_is_reused(engine: Engine) -> None:
    with InferenceSession(engine, slots=2, outputs="view") as s:
        xa, xb, xc = _obs(2, 1), _obs(2, 2), _obs(2, 3)
        a = s.infer(xa)["actions"]
        b = s.infer(xb)["actions"]
        np.testing.assert_allclose(a, policy_reference(xa), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b, policy_reference(xb), rtol=RTOL, atol=ATOL)
        s.infer(xc)  # reuses a's slot: a now shows c's actions
        np.testing.assert_allclose(a, policy_reference(xc), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b, policy_reference(xb), rtol=RTOL, atol=ATOL)


def test_copy_outputs_are_owned_by_the_caller(engine: Engine) -> None:
    with InferenceSession(engine, slots=1, outputs="copy") as s:
        xa, xb = _obs(1, 1), _obs(1, 2)
        a = s.infer(xa)["actions"]
        s.infer(xb)
        np.testing.assert_allclose(a, policy_reference(xa), rtol=RTOL, atol=ATOL)
        assert a.flags.owndata


def test_submit_result_done_and_timings(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        x = _obs(4)
        p = s.submit({"obs": x})
        assert p.done()
        assert p.timings is None  # not collected yet
        np.testing.assert_allclose(p.result(timeout=1.0)["actions"], policy_reference(x),
                                   rtol=RTOL, atol=ATOL)
        t = p.timings
        assert isinstance(t, RequestTimings)
        assert t.enqueue_ns > 0
        assert t.compute_ns is not None
        assert t.compute_ns > 0
        assert t.latency_ns is not None
        assert t.latency_ns >= t.enqueue_ns
        assert t.h2d_ns is None
        assert t.d2h_ns is None
        # timing="host" keeps latency in the stats; enqueue and compute are stages.
        assert s.stats.enqueue.count == 0
        assert s.stats.compute.count == 0
        assert s.stats.latency.count == 1
        assert p.result()["actions"] is not None  # result() may be asked again
        assert "slot=0" in repr(p)


@pytest.mark.parametrize("slots", [1, 2])
def test_stage_timing_records_enqueue_and_compute(engine: Engine, slots: int) -> None:
    with InferenceSession(engine, slots=slots, timing="stages") as s:
        for _ in range(3):
            s.infer(_obs(1))
        s.submit(_obs(1)).result()
        assert s.stats.enqueue.count == s.stats.compute.count == s.stats.latency.count == 4
        assert s.stats.h2d.count == s.stats.d2h.count == 0  # no copies on the host


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_infer_after_warm_up_gives_owned_correct_results(engine: Engine, slots: int) -> None:
    # After the first request, plain requests of the same shapes take the short way
    # (HostRunner.infer_short); every result must still be right and stay the caller's own.
    with InferenceSession(engine, slots=slots) as s:
        kept = []
        for i in range(2 * slots + 3):
            x = _obs(2, i)
            out = s.infer({"obs": x})
            kept.append((x, out["actions"]))
        assert s._runner.armed is not None  # the short way was taken
        for x, y in kept:
            assert y.flags.owndata
            np.testing.assert_allclose(y, policy_reference(x), rtol=RTOL, atol=ATOL)
        assert s.stats.latency.count == len(kept)


@pytest.mark.parametrize("slots", [1, 2])
def test_short_way_gives_way_to_every_other_input(engine: Engine, slots: int) -> None:
    with InferenceSession(engine, slots=slots) as s:
        s.infer(_obs(1))
        s.infer(_obs(1))
        # new shape, a non-contiguous array, a bare array, a list: each is still right
        for x in (_obs(3, 1), _obs(2, 2)[::2], _obs(4, 3)[:, :].T.copy().T):
            np.testing.assert_allclose(s.infer({"obs": x})["actions"], policy_reference(x),
                                       rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x),
                                       rtol=RTOL, atol=ATOL)
        with pytest.raises(InputError, match="dtype"):
            s.infer({"obs": _obs(1).astype(np.float64)})
        with pytest.raises(InputError):
            s.infer({"obs": _obs(1), "extra": _obs(1)})
        with pytest.raises(InputError):
            s.infer({})
        x = _obs(1, 7)
        np.testing.assert_allclose(s.infer({"obs": x})["actions"], policy_reference(x),
                                   rtol=RTOL, atol=ATOL)


def test_short_way_refuses_non_contiguous_when_asked(engine: Engine) -> None:
    with InferenceSession(engine, contiguous="refuse") as s:
        s.infer(_obs(2))
        with pytest.raises(InputError, match="contiguous"):
            s.infer({"obs": _obs(4)[::2]})


def test_a_collected_pending_is_invalid_once_infer_reuses_its_slot(engine: Engine) -> None:
    with InferenceSession(engine, slots=1) as s:
        s.infer(_obs(1))
        p = s.submit(_obs(1, 1))
        first = p.result()["actions"].copy()
        s.infer(_obs(1, 2))  # the short way runs in the one slot's buffers
        with pytest.raises(InferenceError, match="reused"):
            p.result()
        np.testing.assert_allclose(first, policy_reference(_obs(1, 1)), rtol=RTOL, atol=ATOL)


def test_infer_leaves_pending_results_of_other_slots_alone(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        s.infer(_obs(1))
        p = s.submit(_obs(1, 1))
        for i in range(3):
            s.infer(_obs(1, 10 + i))
        np.testing.assert_allclose(p.result()["actions"], policy_reference(_obs(1, 1)),
                                   rtol=RTOL, atol=ATOL)


def test_a_pending_is_invalid_once_its_slot_is_reused(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        first = s.submit(_obs(1, 1))
        s.submit(_obs(1, 2))
        s.submit(_obs(1, 3))  # reuses the first slot
        with pytest.raises(InferenceError, match="reused"):
            first.result()
        assert first.timings is None


def test_when_busy_raise(engine: Engine) -> None:
    with InferenceSession(engine, slots=1, when_busy="raise") as s:
        p = s.submit(_obs(1))
        with pytest.raises(RequestTimeoutError, match="slots"):
            s.submit(_obs(1))
        p.result()
        s.submit(_obs(1)).result()


def test_timing_off_records_nothing(engine: Engine) -> None:
    with InferenceSession(engine, timing="off") as s:
        s.infer(_obs(1))
        assert all(st.count == 0 for st in s.stats.all().values())
        assert set(s.stats.to_dict()) == {"enqueue", "h2d", "compute", "d2h", "device",
                                          "latency"}
        s.stats.reset()


def test_bad_inputs_are_rejected_and_the_session_stays_usable(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        good = _obs(2)
        cases: list[tuple[Any, str]] = [
            ({"obs": good.astype(np.float64)}, "dtype"),
            ({"obs": good[0]}, "rank"),
            ({"obs": np.zeros((2, 47), np.float32)}, "dimension 1"),
            ({"obs": np.zeros((MAX_BATCH + 1, OBS_DIM), np.float32)}, "profile"),
            ({"obs": np.zeros((0, OBS_DIM), np.float32)}, "profile"),
            ({}, "missing"),
            ({"obs": good, "extra": good}, "unknown"),
            ({"observations": good}, "missing"),
            ({"obs": good.tolist()}, "not an array"),
            ({"obs": object()}, "unsupported type"),
        ]
        for inputs, what in cases:
            with pytest.raises(InputError, match=what):
                s.infer(inputs)
            with pytest.raises(InputError, match=what):
                s.submit(inputs)
            np.testing.assert_allclose(s.infer({"obs": good})["actions"], policy_reference(good),
                                       rtol=RTOL, atol=ATOL)
        assert s.stats.latency.count == len(cases)


def test_cast_when_asked(engine: Engine) -> None:
    with InferenceSession(engine, cast=True) as s:
        x = _obs(3).astype(np.float64)
        np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x), rtol=1e-4,
                                   atol=1e-5)


def test_non_contiguous_inputs_copied_or_refused(engine: Engine) -> None:
    wide = np.asfortranarray(_obs(4))
    assert not wide.flags.c_contiguous
    with InferenceSession(engine) as s:
        np.testing.assert_allclose(s.infer(wide)["actions"], policy_reference(wide), rtol=RTOL,
                                   atol=ATOL)
    with InferenceSession(engine, contiguous="refuse") as s:
        with pytest.raises(InputError, match="contiguous"):
            s.infer(wide)
        with pytest.raises(InputError, match="contiguous"):
            s.infer(wide)  # the fast path refuses too, after a good request of that shape
        s.infer(np.ascontiguousarray(wide))
        with pytest.raises(InputError, match="contiguous"):
            s.infer(wide)


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_host_buffer_inputs(engine: Engine, slots: int) -> None:
    from edgert.memory import HostBuffer

    with InferenceSession(engine, slots=slots) as s, HostBuffer(4 * OBS_DIM * 4) as buf:
        view = buf.view(np.float32, (4, OBS_DIM))
        for seed in range(6):
            view[...] = x = _obs(4, seed)
            # A whole buffer fills the one dynamic dimension: 4 rows on every slot (found by a
            # new user's trial: it was read with the slot's last shape, 1 row every other time).
            given = view if seed == 0 else buf
            got = s.infer({"obs": given})["actions"]
            assert got.shape == (4, ACTION_DIM)
            np.testing.assert_allclose(got, policy_reference(x), rtol=RTOL, atol=ATOL)
    with InferenceSession(engine, slots=slots) as s, HostBuffer(4 * OBS_DIM * 4 + 4) as odd, \
            pytest.raises(InputError, match=r"\(772 bytes\) does not say its shape: it is "
                                            "not a whole number of 192-byte"):
        s.infer({"obs": odd})


def test_device_arrays_are_refused_on_the_host(engine: Engine) -> None:
    class DeviceArray:
        @property
        def __cuda_array_interface__(self) -> dict[str, Any]:
            return {"shape": (1, 48), "typestr": "<f4", "data": (1, False), "version": 3}

    with InferenceSession(engine) as s, pytest.raises(InputError, match="device memory"):
        s.infer({"obs": DeviceArray()})


def test_use_after_close(engine: Engine) -> None:
    s = InferenceSession(engine)
    p = s.submit(_obs(1))
    exe = s.executable
    s.close()
    s.close()  # idempotent
    assert exe.closed  # the session made this context, so it closed it
    assert not engine.closed
    with pytest.raises(ResourceClosedError):
        s.infer(_obs(1))
    with pytest.raises(ResourceClosedError):
        s.submit(_obs(1))
    with pytest.raises(ResourceClosedError):
        p.result()
    assert "closed" in repr(s)


def test_options_that_need_a_gpu_are_refused_on_the_host(engine: Engine) -> None:
    with pytest.raises(NotSupportedError, match="cuda_graph"):
        InferenceSession(engine, cuda_graph="on")
    with pytest.raises(InvalidArgumentError, match="outputs='device'"):
        InferenceSession(engine, outputs="device")
    with pytest.raises(InvalidArgumentError, match="stream"):
        InferenceSession(engine, priority="highest")
    with pytest.raises(InvalidArgumentError, match="runs on the host"):
        InferenceSession(engine, device=0)
    with pytest.raises(InvalidArgumentError, match="Engine or an Executable"):
        InferenceSession(object())
    with pytest.raises(InvalidArgumentError, match="slots"):
        InferenceSession(engine, slots=0)


def test_warmup_and_synchronize(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        s.warmup()
        s.warmup([{"obs": (8, OBS_DIM)}], runs=1)
        assert s.stats.latency.count == 0  # warm-up runs are not requests (not in stats)
        p = s.submit(_obs(8))
        s.synchronize()
        assert p.done()
        assert p.result()["actions"].shape == (8, ACTION_DIM)
        assert "device=host" in repr(s)


def test_a_borrowed_executable_is_not_closed(engine: Engine) -> None:
    exe = engine.create_context()
    with InferenceSession(exe, slots=1) as s:
        x = _obs(2)
        np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x), rtol=RTOL,
                                   atol=ATOL)
        assert s.executable is exe
    assert not exe.closed
    exe.close()


@pytest.mark.parametrize("bare", [False, True])
@pytest.mark.parametrize(("budget", "batch"), [(8192, MAX_BATCH), (9216, 40)])
def test_pool_exhaustion_is_reported_and_the_session_recovers(engine: Engine, budget: int,
                                                              batch: int, bare: bool) -> None:
    # (9216, 40): the input grows, then the output cannot: a reshape that failed midway. The
    # retry must fail the same way (not replay what the half-made buffers hold), and the
    # session must keep working at the sizes it can serve.
    from edgert.errors import PoolExhausted
    from edgert.memory import BufferPool

    with BufferPool.for_host(max_bytes=budget, device="host") as pool, \
            InferenceSession(engine, slots=1, pool=pool) as s:
        small = _obs(1)
        for _ in range(3):
            s.infer(small)
        big = _obs(batch)
        for _ in range(2):
            with pytest.raises(PoolExhausted):
                s.infer(big if bare else {"obs": big})
        for i in range(3):
            x = _obs(1, i)
            np.testing.assert_allclose(s.infer(x if bare else {"obs": x})["actions"],
                                       policy_reference(x), rtol=RTOL, atol=ATOL)


class _Counter:
    """x: float32[-1, 4] -> y = 2 x + (runs so far); ``fail_next`` runs fail (return False)."""

    def __init__(self, *, optional: bool = False) -> None:
        self.tensors = (
            TensorSpec(name="x", mode="input", dtype=np.float32, shape=(-1, 4),
                       location="host", optional=optional),
            TensorSpec(name="y", mode="output", dtype=np.float32, shape=(-1, 4),
                       location="host"),
        )
        self.placement = Placement.HOST
        self.graph_capturable = False
        self.shape: tuple[int, ...] = (1, 4)
        self.addr: dict[str, int] = {}
        self.calls = 0
        self.fail_next = 0
        self.errors: list[str] = []

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addr[name] = address
        return True

    def last_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            self.errors.append(f"failure on run {self.calls}")
            return False
        n = int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["x"]))
        y = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["y"]))
        y[...] = 2 * x + self.calls
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("slots", [1, 2])
def test_a_failed_run_is_reported_once_not_run_again(slots: int) -> None:
    exe = _Counter()
    x = np.ones((1, 4), np.float32)
    with InferenceSession(exe, slots=slots) as s:
        s.infer({"x": x})
        s.infer({"x": x})  # the short way is armed now
        exe.fail_next = 1
        runs = exe.calls
        with pytest.raises(InferenceError, match="failure on run"):
            s.infer({"x": x})
        assert exe.calls == runs + 1  # one run, its error raised: never retried silently
        np.testing.assert_array_equal(s.infer({"x": x})["y"], 2 * x + exe.calls)


class _RefusesBatch3(_Counter):
    """A _Counter whose profile leaves out batch 3; records the context's shape at each run."""

    def __init__(self) -> None:
        super().__init__()
        self.ran_with: list[tuple[int, ...]] = []

    def set_input_shape(self, name: str, shape: Any) -> bool:
        if shape[0] == 3:
            self.errors.append("batch 3 is outside the profile")
            return False
        return super().set_input_shape(name, shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.ran_with.append(self.shape)
        return super().execute_async_v3(stream_handle)


def test_a_refused_shape_leaves_no_slot_that_runs_with_another_slots_shapes() -> None:
    # Found by review: a reshape cleared the slot's signature, then the executable refused the
    # shape before the buffers were forgotten. The next request of the slot's old shape took
    # the fast path with no signature, skipped setting shapes, and ran with the shapes the
    # other slot had left in the context: here batch 4 over batch-2 buffers.
    exe = _RefusesBatch3()
    with InferenceSession(exe, slots=2) as s:
        s.submit({"x": np.ones((2, 4), np.float32)}).result()  # slot 0: batch 2
        s.submit({"x": np.ones((4, 4), np.float32)}).result()  # slot 1: the context at 4
        with pytest.raises(InputError, match="outside the profile"):
            s.submit({"x": np.ones((3, 4), np.float32)})  # slot 0 again: refused
        exe.ran_with.clear()
        x = np.full((2, 4), 5.0, np.float32)
        out = s.submit({"x": x}).result()["y"]
        assert exe.ran_with == [(2, 4)]
        np.testing.assert_array_equal(out, 2 * x + exe.calls)


def test_a_refused_request_leaves_an_earlier_result_collectable() -> None:
    # Review of the fix above: the refusal changed no buffer, so the earlier result stays valid.
    exe = _RefusesBatch3()
    with InferenceSession(exe, slots=1) as s:
        x = np.full((2, 4), 5.0, np.float32)
        pending = s.submit({"x": x})
        want = 2 * x + exe.calls
        with pytest.raises(InputError, match="outside the profile"):
            s.submit({"x": np.ones((3, 4), np.float32)})
        np.testing.assert_array_equal(pending.result()["y"], want)


def test_a_result_kept_across_a_failed_reshape_is_reported_reused(engine: Engine) -> None:
    # Found by review: a reshape that failed (the pool ran out) released the slot's output
    # leases, but only a request bumps the slot's generation: the earlier request's Pending
    # then returned views of memory given back to the pool.
    from edgert.errors import PoolExhausted
    from edgert.memory import BufferPool

    with BufferPool.for_host(max_bytes=9216, device="host") as pool, \
            InferenceSession(engine, slots=1, pool=pool) as s:
        pending = s.submit({"obs": _obs(1)})
        with pytest.raises(PoolExhausted):
            s.infer({"obs": _obs(40)})
        with pytest.raises(InferenceError, match="reused"):
            pending.result()


def test_a_bare_array_is_refused_when_the_only_input_is_optional() -> None:
    exe = _Counter(optional=True)
    x = np.ones((1, 4), np.float32)
    with InferenceSession(exe, slots=2) as s:
        s.infer({"x": x})
        s.infer({"x": x})
        with pytest.raises(InputError, match="mapping"):
            s.infer(x)


@pytest.mark.parametrize("slots", [2, 3])
def test_warmup_prepares_every_slot(engine: Engine, slots: int) -> None:
    with InferenceSession(engine, slots=slots) as s:
        s.warmup([{"obs": (64, OBS_DIM)}])
        assert [slot.inputs[0].shape for slot in s._slots] == [(64, OBS_DIM)] * slots


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    # a new user's trial: a raw AttributeError, a misspelt name reported as a missing input
    # with an empty warm-up as the way out, runs=-1 accepted with nothing run
    ({"shapes": {"obs": (4, OBS_DIM)}}, InvalidArgumentError, "got one mapping"),
    ({"shapes": "obs"}, InvalidArgumentError, "got str"),
    ({"shapes": [(4, OBS_DIM)]}, InvalidArgumentError, "list of {input name: shape}"),
    ({"shapes": [{"ob": (1, OBS_DIM)}]}, InputError, "unknown input(s) 'ob'"),
    ({"shapes": [{"obs": np.zeros((1, OBS_DIM))}]}, InputError, "not a float64 array of shape"),
    ({"shapes": [{"obs": np.array([1.0, OBS_DIM])}]}, InputError, "not a float64 array"),
    ({"shapes": [{"obs": (-1, OBS_DIM)}]}, InputError, "non-negative ints"),
    ({"shapes": [{"obs": (1.5, OBS_DIM)}]}, InputError, "non-negative ints"),
    ({"runs": -1}, InvalidArgumentError, "runs must be an int >= 1"),
    ({"runs": 0}, InvalidArgumentError, "runs must be an int >= 1"),
    ({"runs": True}, InvalidArgumentError, "runs must be an int >= 1"),
])
def test_warmup_refuses_what_is_not_shapes_before_running(
        engine: Engine, kwargs: dict[str, Any], error: type[Exception], words: str) -> None:
    with InferenceSession(engine) as s:
        with pytest.raises(error) as info:
            s.warmup(**kwargs)
        assert words in str(info.value)
        assert ("session.warmup(runs=2)" if "runs" in kwargs else
                "session.warmup([{'obs': (1, 48)}])") in str(info.value)
        assert s.stats.latency.count == 0
        x = np.ones((2, OBS_DIM), np.float32)
        np.testing.assert_allclose(s.infer({"obs": x})["actions"], policy_reference(x),
                                   rtol=1e-5, atol=1e-6)


def test_warmup_takes_any_iterable_of_shape_sets_and_numpy_sizes(engine: Engine) -> None:
    with InferenceSession(engine, slots=1) as s:
        s.warmup(({"obs": (n, np.int64(OBS_DIM))} for n in (3, 5)), runs=np.int32(1))
        assert s._slots[0].inputs[0].shape == (5, OBS_DIM)
        s.warmup([{"obs": np.array([4, OBS_DIM])}])  # a shape held in an int array (a review)
        assert s._slots[0].inputs[0].shape == (4, OBS_DIM)


def test_a_warmup_shape_outside_the_profile_is_told_one_inside() -> None:
    with Engine.load(bundled_model_path()) as engine, InferenceSession(engine) as s:
        with pytest.raises(InputError, match="outside optimization profile") as info:
            s.warmup([{"obs": (MAX_BATCH + 1, OBS_DIM)}])
        # not the rejected shape again (a trial), nor infer's advice about arrays
        assert info.value.hint == "warm up shapes the model accepts, e.g. " \
            "session.warmup([{'obs': (1, 48)}])"


def test_a_request_submitted_before_warmup_keeps_its_timings(engine: Engine) -> None:
    with InferenceSession(engine, slots=2) as s:
        p = s.submit(_obs(1))
        s.warmup()
        assert s.stats.latency.count == 1  # the submitted request; no warm-up run
        with pytest.raises(InferenceError, match="reused"):
            p.result()  # warm-up ran in its slot
