"""Sessions over TensorRT engines, run by the fake TensorRT module on the host (no GPU needed)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from edgert.engine import Engine
from edgert.errors import (
    ConcurrentUseError,
    InferenceError,
    InputError,
    InvalidArgumentError,
    NotSupportedError,
)
from edgert.models import OBS_DIM, policy_reference
from edgert.session import InferenceSession
from edgert.testing import fake_tensorrt as ft

RTOL, ATOL = 1e-5, 1e-6


def _engine(plan: bytes) -> Engine:
    return Engine.load(plan, trt_module=ft)


def _obs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, OBS_DIM)).astype(np.float32)


def test_policy_engine_matches_reference_and_sessions_share_it() -> None:
    with _engine(ft.bundled_policy_plan()) as engine:
        with InferenceSession(engine) as a, InferenceSession(engine, slots=1, io="copy") as b:
            assert a.device == "host"  # the fake reads host memory, so never a GPU path
            assert a.graph_blocker == "the session runs on the host"
            assert a.executable is not b.executable  # one context per session
            for i, batch in enumerate((1, 3, 256, 2)):
                xa, xb = _obs(batch, i), _obs(batch, 100 + i)
                ya = a.infer({"obs": xa})["actions"]
                yb = b.infer({"obs": xb})["actions"]
                np.testing.assert_allclose(ya, policy_reference(xa), rtol=RTOL, atol=ATOL)
                np.testing.assert_allclose(yb, policy_reference(xb), rtol=RTOL, atol=ATOL)
            contexts = [a.executable, b.executable]
        assert all(c.closed for c in contexts)
        assert not engine.closed


def _two_in_two_out() -> bytes:
    def fn(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sum": inputs["a"] + inputs["b"][:, :1], "count": np.array(
            [inputs["a"].shape[0]], np.int32)}

    ft.register_function("tests.session.two", fn)
    return ft.make_plan(
        inputs=[ft.FakeTensor("a", "FLOAT", (-1, 4), profiles=[((1, 4), (2, 4), (16, 4))]),
                ft.FakeTensor("b", "FLOAT", (-1, 2), profiles=[((1, 2), (2, 2), (16, 2))])],
        outputs=[ft.FakeTensor("sum", "FLOAT", ("a:0", 4)),
                 ft.FakeTensor("count", "INT32", (1,))],
        function="tests.session.two")


def test_several_inputs_and_outputs_with_dynamic_shapes() -> None:
    rng = np.random.default_rng(3)
    with _engine(_two_in_two_out()) as engine, InferenceSession(engine, slots=2) as s:
        for batch in (2, 7, 16, 1):
            a = rng.standard_normal((batch, 4)).astype(np.float32)
            b = rng.standard_normal((batch, 2)).astype(np.float32)
            out = s.infer({"a": a, "b": b})
            np.testing.assert_allclose(out["sum"], a + b[:, :1], rtol=RTOL)
            assert out["count"].tolist() == [batch]
        with pytest.raises(InputError, match="inputs must be a mapping"):
            s.infer(np.zeros((2, 4), np.float32))
        with pytest.raises(InputError, match="profile"):
            s.infer({"a": np.zeros((17, 4), np.float32), "b": np.zeros((17, 2), np.float32)})


def test_large_inputs_are_bound_in_place_in_zero_copy() -> None:
    ft.register_function("tests.session.first_col", lambda i: i["x"][:, :1] * 2)
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("x", "FLOAT", (-1, 8192), profiles=[((1, 8192),) * 2 + (
            (8, 8192),)])],
        outputs=[ft.FakeTensor("y", "FLOAT", ("x:0", 1))], function="tests.session.first_col")
    x = np.random.default_rng(4).standard_normal((4, 8192)).astype(np.float32)  # 128 KiB
    with _engine(plan) as engine:
        with InferenceSession(engine, io="zero_copy", slots=2) as s:
            np.testing.assert_allclose(s.infer({"x": x})["y"], x[:, :1] * 2)
            bound = s.executable.raw_context.get_tensor_address("x")
            assert bound == x.__array_interface__["data"][0]
            small = x[:1].copy()  # 32 KiB: staged into the session's buffer
            np.testing.assert_allclose(s.infer({"x": small})["y"], small[:, :1] * 2)
            assert s.executable.raw_context.get_tensor_address("x") != \
                small.__array_interface__["data"][0]
        with InferenceSession(engine, io="copy", slots=1) as s:
            np.testing.assert_allclose(s.infer({"x": x})["y"], x[:, :1] * 2)
            assert s.executable.raw_context.get_tensor_address("x") != \
                x.__array_interface__["data"][0]


def test_failing_enqueue_is_raised_by_result() -> None:
    with _engine(ft.bundled_policy_plan(fail_enqueue_after=2)) as engine, \
            InferenceSession(engine, slots=2) as s:
        s.infer(_obs(1))
        ok = s.submit(_obs(1))
        failed = s.submit(_obs(1))
        np.testing.assert_allclose(ok.result()["actions"].shape, (1, 12))
        assert failed.done()
        with pytest.raises(InferenceError, match="illegal memory access") as info:
            failed.result()
        assert failed.timings is None
        assert "enqueueV3" in str(info.value)
        with pytest.raises(InferenceError, match="illegal memory access"):
            s.infer(_obs(1))
        with pytest.raises(InputError):  # input checks still run first: the session is usable
            s.infer(_obs(1).astype(np.float64))


class _NoAllocator:
    """A TensorRT executable seen through an object that lacks ``set_output_allocator``."""

    def __init__(self, exe: Any) -> None:
        self._exe = exe
        self.tensors, self.placement = exe.tensors, exe.placement
        self.graph_capturable = exe.graph_capturable
        for name in ("set_input_shape", "get_tensor_shape", "set_tensor_address",
                     "execute_async_v3", "close", "last_errors"):
            setattr(self, name, getattr(exe, name))


def _nonzero_plan(version: str = ft.__version__) -> bytes:
    return ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (8,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(8,))],
                        function="nonzero", version=version)


def test_data_dependent_outputs_need_an_output_allocator() -> None:
    with _engine(_nonzero_plan()) as engine, engine.create_context() as ctx, \
            pytest.raises(NotSupportedError, match="set_output_allocator"):
        InferenceSession(_NoAllocator(ctx)).infer({"x": np.ones(8, np.float32)})


@pytest.mark.parametrize("version", ["8.6.1.6", "10.8.0.43", "11.4.0.106"])
@pytest.mark.parametrize("slots", [1, 2])
def test_nonzero_runs_through_the_tensorrt_output_allocator(version: str, slots: int) -> None:
    """Session -> TensorRT executable -> fake TensorRT's context -> IOutputAllocator callbacks
    -> the session's pooled buffers, with every TensorRT version's callback."""
    module = ft.make_module(version=version)
    rng = np.random.default_rng(7)
    with Engine.load(_nonzero_plan(version), trt_module=module) as engine, \
            InferenceSession(engine, slots=slots) as s:
        exe = s.executable
        assert not exe.graph_capturable
        cases = [np.zeros(8, np.float32), np.ones(8, np.float32)] + [
            (rng.random(8) < 0.4).astype(np.float32) * rng.standard_normal(8).astype(np.float32)
            for _ in range(12)]
        adapter = None
        for x in cases:
            out = s.infer({"x": x})["idx"]
            assert out.dtype == np.int32
            np.testing.assert_array_equal(out, np.flatnonzero(x))
            current = exe.raw_context.get_output_allocator("idx")  # type: ignore[attr-defined]
            assert current is not None
            adapter = adapter or current
            assert current is adapter  # one adapter for the session's life
        in_flight = [cases[1], cases[0]][:slots]  # sizes 8 then 0, each slot its own
        pending = [s.submit({"x": x}) for x in in_flight]
        for p, x in zip(pending, in_flight, strict=True):
            np.testing.assert_array_equal(p.result()["idx"], np.flatnonzero(x))
        assert s.graph_count == 0
        assert s.graph_captures == 0
        assert s.graph_blocker == ("data-dependent output shape (idx), written through an "
                                   "output allocator during each run")
        assert exe.last_errors() == ()  # type: ignore[attr-defined]


def test_steady_output_sizes_reuse_the_same_memory() -> None:
    """Grow-only: once the largest output has been seen, runs allocate nothing new."""
    with _engine(_nonzero_plan()) as engine, InferenceSession(engine, slots=1) as s:
        ctx = s.executable.raw_context  # type: ignore[attr-defined]
        s.infer({"x": np.ones(8, np.float32)})
        address = ctx.get_tensor_address("idx")
        for k in range(9):
            x = np.zeros(8, np.float32)
            x[:k] = 1
            np.testing.assert_array_equal(s.infer({"x": x})["idx"], np.arange(k))
            assert ctx.get_tensor_address("idx") == address


def test_data_dependent_output_beside_ordinary_ones_with_dynamic_shapes() -> None:
    def fn(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"y": x * 2, "nz": np.array(np.nonzero(x), np.int64)}

    ft.register_function("tests.session.y_and_nonzero", fn)
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("x", "FLOAT", (-1, 3), profiles=[((1, 3), (2, 3), (6, 3))])],
        outputs=[ft.FakeTensor("y", "FLOAT", ("x:0", 3)),
                 ft.FakeTensor("nz", "INT64", (2, -1), max_shape=(2, 18))],
        function="tests.session.y_and_nonzero")
    rng = np.random.default_rng(11)
    with _engine(plan) as engine, InferenceSession(engine, slots=2) as s:
        assert s.executable.data_dependent_outputs == ("nz",)  # type: ignore[attr-defined]
        for batch in (2, 6, 1, 6, 3):
            x = (rng.random((batch, 3)) < 0.5).astype(np.float32)
            out = s.infer({"x": x})
            np.testing.assert_array_equal(out["y"], x * 2)
            assert out["nz"].shape == (2, int(np.count_nonzero(x)))
            np.testing.assert_array_equal(out["nz"], np.nonzero(x))
            ctx = s.executable.raw_context  # type: ignore[attr-defined]
            assert ctx.get_output_allocator("y") is None  # its shape follows the inputs


def test_failed_enqueue_with_an_allocator_is_an_inference_error() -> None:
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (8,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(8,))],
                        function="nonzero", fail_enqueue_after=2)
    with _engine(plan) as engine, InferenceSession(engine, slots=1) as s:
        x = np.arange(8, dtype=np.float32)
        for _ in range(2):
            np.testing.assert_array_equal(s.infer({"x": x})["idx"], np.arange(1, 8))
        with pytest.raises(InferenceError, match="illegal memory access"):
            s.infer({"x": x})


def test_static_shapes_and_profile_selection() -> None:
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("x", "FLOAT", (-1, 3), profiles=[((1, 3), (1, 3), (4, 3)),
                                                            ((5, 3), (8, 3), (64, 3))])],
        outputs=[ft.FakeTensor("x_out", "FLOAT", ("x:0", 3))], function="identity")
    with _engine(plan) as engine:
        with InferenceSession(engine, profile=1, slots=1) as s:
            x = np.arange(24, dtype=np.float32).reshape(8, 3)
            np.testing.assert_array_equal(s.infer(x)["x_out"], x)
            with pytest.raises(InputError, match="profile 1"):
                s.infer(x[:2])
        with pytest.raises(InvalidArgumentError, match="profile"):
            InferenceSession(engine, profile=2)


def test_concurrent_use_from_two_threads_is_detected() -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(inputs: Mapping[str, np.ndarray]) -> Any:
        entered.set()
        release.wait(10)
        return policy_reference(inputs["obs"])

    ft.register_function("tests.session.slow", slow)
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("obs", "FLOAT", (-1, OBS_DIM),
                              profiles=[((1, OBS_DIM), (1, OBS_DIM), (8, OBS_DIM))])],
        outputs=[ft.FakeTensor("actions", "FLOAT", ("obs:0", 12))],
        function="tests.session.slow")
    with _engine(plan) as engine, InferenceSession(engine, slots=2) as s:
        release.set()
        s.warmup(runs=1)  # the warm-up runs pass straight through: nothing else is running
        release.clear()
        entered.clear()
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                s.infer(_obs(1))
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        thread = threading.Thread(target=worker)
        thread.start()
        assert entered.wait(10)
        with pytest.raises(ConcurrentUseError, match="another thread"):
            s.infer(_obs(1))
        with pytest.raises(ConcurrentUseError):
            s.submit(_obs(1))
        with pytest.raises(ConcurrentUseError):
            s.close()
        release.set()
        thread.join(10)
        assert not errors
        x = _obs(1, 5)  # after the other thread is done, this one may use the session
        np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x), rtol=RTOL,
                                   atol=ATOL)


def test_context_creation_failure_is_reported() -> None:
    from edgert.errors import EngineLoadError

    with _engine(ft.bundled_policy_plan(fail_context=True)) as engine, \
            pytest.raises(EngineLoadError, match="execution context"):
        InferenceSession(engine)


def test_gpu_device_requested_for_the_fake_is_refused() -> None:
    with _engine(ft.bundled_policy_plan()) as engine, \
            pytest.raises(InvalidArgumentError, match="host"):
        InferenceSession(engine, device=0)


def test_int4_inputs_are_packed_or_refused_with_a_specific_error() -> None:
    # issue 12 item 8: INT4 inputs raised a raw numpy broadcast error.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    def unpack(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        (raw,) = inputs.values()  # the packed bytes TensorRT reads: low nibble first
        nibbles = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1).astype(np.int8)
        return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.float32).reshape(2, 3)

    ft.register_function("test.unpack_int4", unpack)
    plan = ft.make_plan(inputs=[ft.FakeTensor("q", "INT4", (2, 3))],
                        outputs=[ft.FakeTensor("r", "FLOAT", (2, 3))],
                        function="test.unpack_int4")
    values = np.array([[-8, -1, 0], [1, 5, 7]], ml_dtypes.int4)
    with _engine(plan) as engine, InferenceSession(engine, device="host") as s:
        np.testing.assert_array_equal(s.infer({"q": values})["r"], values.astype(np.float32))
        packed = np.array([0x8 | 0xF << 4, 0x0 | 0x1 << 4, 0x5 | 0x7 << 4], np.uint8)
        np.testing.assert_array_equal(s.infer({"q": packed})["r"], values.astype(np.float32))
        with pytest.raises(InputError, match=r"'q'.*packed 4-bit INT4") as info:
            s.infer({"q": np.zeros((2, 3), np.int8)})
        assert "ml_dtypes.int4" in (info.value.hint or "")
        with pytest.raises(InputError, match="'q'"):
            s.infer({"q": np.zeros((2, 3), np.uint8)})  # bytes, but not 3 of them


def test_refused_address_midway_is_bound_again_by_the_next_request() -> None:
    """An executable that refuses an address after others moved must not leave the session
    believing its own buffers are bound (found by review: the next staged request read the
    refused request's first input, with no error)."""
    ft.register_function("tests.session.add_first_cols",
                         lambda i: i["a"][:, :1] + i["b"][:, :1])
    wide = [((1, 8192),) * 2 + ((8, 8192),)]
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("a", "FLOAT", (-1, 8192), profiles=wide),
                ft.FakeTensor("b", "FLOAT", (-1, 8192), profiles=wide)],
        outputs=[ft.FakeTensor("y", "FLOAT", ("a:0", 1))],
        function="tests.session.add_first_cols")
    rng = np.random.default_rng(9)

    def pair(contiguous: bool) -> dict[str, np.ndarray]:
        arrays = {n: rng.standard_normal((4, 8192)).astype(np.float32) for n in "ab"}
        if not contiguous:  # staged into the session's own buffers
            arrays = {n: np.asfortranarray(x) for n, x in arrays.items()}
        return arrays

    def expected(x: dict[str, np.ndarray]) -> np.ndarray:
        return x["a"][:, :1] + x["b"][:, :1]

    with _engine(plan) as engine, InferenceSession(engine, io="zero_copy", slots=2) as s:
        staged = pair(contiguous=False)
        np.testing.assert_allclose(s.infer(staged)["y"], expected(staged))
        exe = s._runner.exe
        inner = exe.set_tensor_address
        exe.set_tensor_address = lambda name, address: name != "b" and inner(name, address)
        try:
            with pytest.raises(InferenceError, match="refused address"):
                s.infer(pair(contiguous=True))  # bound in place: 'a' moves, 'b' is refused
        finally:
            exe.set_tensor_address = inner
        for contiguous in (False, True, False):
            x = pair(contiguous)
            np.testing.assert_allclose(s.infer(x)["y"], expected(x))


def test_bf16_inputs_take_bit_patterns_and_hint_at_view() -> None:
    """A TensorRT BF16 tensor holds uint16 bit patterns: values are never cast into it, and the
    hint says ``view`` (found by a hostile-input trial: ``astype(np.uint16)``, the old hint, and
    cast=True of uint8 both turned 1.0 into 9e-41)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ft.register_function("tests.session.bf16_to_f32",
                         lambda i: i["x"].view(ml_dtypes.bfloat16).astype(np.float32))
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "BF16", (3,))],
                        outputs=[ft.FakeTensor("y", "FLOAT", (3,))],
                        function="tests.session.bf16_to_f32")
    values = np.array([1, 2, 3], ml_dtypes.bfloat16)
    with _engine(plan) as engine:
        for cast in (False, True):
            with InferenceSession(engine, cast=cast) as s:
                for wrong in (np.array([1, 2, 3], np.uint8), np.array([True, False, True]),
                              np.array([1, 2, 3], np.float32), values):
                    with pytest.raises(InputError, match="BF16, stored as uint16 bit") as info:
                        s.infer({"x": wrong})
                    if wrong.dtype == values.dtype:
                        assert "x.view(np.uint16)" in str(info.value)
                np.testing.assert_array_equal(s.infer({"x": values.view(np.uint16)})["y"],
                                              [1, 2, 3])
