"""The fake TensorRT on its own: plan format, logging, shapes, failures, as users' tests see it."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np
import pytest
from _trt_helpers import bind as _bind
from _trt_helpers import runtime as _runtime

from edgert import models
from edgert.testing import fake_tensorrt as ft


def test_plan_header_is_trtexec_readable() -> None:
    plan = ft.bundled_policy_plan(version="10.3.1.7")
    assert plan[:4] == b"ftrt"
    assert struct.unpack_from("<I", plan, 0)[0] == 1953657958
    assert struct.unpack_from("<I", plan, 4)[0] == 0
    assert tuple(plan[24:28]) == (10, 3, 1, 7)


def test_runtime_needs_an_ilogger() -> None:
    with pytest.raises(TypeError):
        ft.Runtime(object())  # type: ignore[arg-type]


def test_policy_plan_runs_on_host_memory() -> None:
    runtime, log = _runtime()
    engine = runtime.deserialize_cuda_engine(ft.bundled_policy_plan())
    assert engine is not None
    assert engine.num_io_tensors == 2
    assert [engine.get_tensor_name(i) for i in range(2)] == ["obs", "actions"]
    assert engine.get_tensor_mode("obs") == ft.TensorIOMode.INPUT
    assert engine.get_tensor_mode("nope") == ft.TensorIOMode.NONE
    assert tuple(engine.get_tensor_shape("actions")) == (-1, 12)
    assert [tuple(d) for d in engine.get_tensor_profile_shape("obs", 0)] == [
        (1, 48), (1, 48), (256, 48)]
    ctx = engine.create_execution_context()
    obs = np.random.default_rng(3).standard_normal((5, 48)).astype(np.float32)
    out = np.full((5, 12), np.nan, np.float32)
    assert ctx.infer_shapes() == ["obs"]
    assert ctx.set_input_shape("obs", (5, 48))
    assert tuple(ctx.get_tensor_shape("actions")) == (5, 12)
    _bind(ctx, "obs", obs)
    _bind(ctx, "actions", out)
    assert ctx.execute_async_v3(0)
    np.testing.assert_array_equal(out, models.policy_reference(obs))
    assert ctx.get_max_output_size("actions") == 256 * 12 * 4
    assert not log.errors()
    assert any("Loaded engine size" in m for _, m in log.messages)


@pytest.mark.parametrize(("shape", "why"), [
    ((300, 48), "outside profile"), ((2, 47), "does not match"), ((2, 48, 1), "does not match")])
def test_bad_input_shape_logs_and_returns_false(shape: tuple[int, ...], why: str) -> None:
    runtime, log = _runtime()
    ctx = runtime.deserialize_cuda_engine(ft.bundled_policy_plan()).create_execution_context()
    assert ctx.set_input_shape("obs", shape) is False
    assert why in log.errors()[-1]
    assert "setInputShape" in log.errors()[-1]


def test_enqueue_checks_shapes_and_addresses() -> None:
    runtime, log = _runtime()
    ctx = runtime.deserialize_cuda_engine(ft.bundled_policy_plan()).create_execution_context()
    assert ctx.execute_async_v3(0) is False
    assert "input shape of 'obs' is not specified" in log.errors()[-1]
    ctx.set_input_shape("obs", (1, 48))
    assert ctx.execute_async_v3(0) is False
    assert "Address is not set" in log.errors()[-1]


@pytest.mark.parametrize(("data", "text"), [
    (b"onnx" + bytes(40), "Magic tag does not match"),
    (b"ftrt" + bytes(10), "bufferSize >= minBufferSize"),
    (b"ftrt" + bytes(4) + b"REALPLAN" + bytes(40), "not a fake plan"),
])
def test_bad_plans_return_none_and_log(data: bytes, text: str) -> None:
    runtime, log = _runtime()
    assert runtime.deserialize_cuda_engine(data) is None
    assert text in log.errors()[-1]
    assert "Error Code" in log.errors()[-1]


def test_truncated_and_corrupt_headers() -> None:
    plan = ft.bundled_policy_plan()
    runtime, log = _runtime()
    assert runtime.deserialize_cuda_engine(plan[:-1]) is None
    assert "plan.header.size == blobSize failed" in log.errors()[-1]
    corrupt = plan[:28] + b"[" + plan[29:]
    assert runtime.deserialize_cuda_engine(corrupt) is None
    assert "corrupt plan header" in log.errors()[-1]


def test_version_rules() -> None:
    runtime, log = _runtime(ft.make_module(version="10.8.0.1"))
    assert runtime.deserialize_cuda_engine(ft.bundled_policy_plan(version="10.8.9.9"))
    assert runtime.deserialize_cuda_engine(ft.bundled_policy_plan(version="10.7.0.0")) is None
    assert "Version tag does not match" in log.errors()[-1]
    vc = ft.bundled_policy_plan(version="10.3.0.0", version_compatible=True)
    assert runtime.deserialize_cuda_engine(vc) is None
    assert "getEngineHostCodeAllowed() is false" in log.errors()[-1]  # as lean 11.4 says
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine(vc) is not None
    newer = ft.bundled_policy_plan(version="10.9.0.0", version_compatible=True)
    assert runtime.deserialize_cuda_engine(newer) is None


def test_lean_runtime_rejects_plans_that_are_not_version_compatible() -> None:
    runtime, log = _runtime(ft.make_module(flavour="lean"))
    assert runtime.deserialize_cuda_engine(ft.bundled_policy_plan()) is None
    assert "Unexpected call to stub loadRunner" in log.errors()[-1]


def test_embedded_lean_runtime_needs_somewhere_to_unpack(tmp_path: Any) -> None:
    runtime, log = _runtime(ft.make_module(flavour="dispatch"))
    runtime.engine_host_code_allowed = True
    vc = ft.bundled_policy_plan(version_compatible=True)
    runtime.tempfile_control_flags = 1 << int(ft.TempfileControlFlag.ALLOW_TEMPORARY_FILES)
    runtime.temporary_directory = str(tmp_path / "missing")
    assert runtime.deserialize_cuda_engine(vc) is None
    assert "embedded lean runtime" in log.errors()[-1]
    runtime.temporary_directory = str(tmp_path)
    assert runtime.deserialize_cuda_engine(vc) is not None


def test_failure_modes() -> None:
    runtime, log = _runtime()
    assert runtime.deserialize_cuda_engine(ft.bundled_policy_plan(fail_deserialize="oom")) is None
    assert "OutOfMemory" in log.errors()[-1]
    engine = runtime.deserialize_cuda_engine(ft.bundled_policy_plan(fail_context=True))
    assert engine.create_execution_context() is None
    assert "OutOfMemory" in log.errors()[-1]
    ctx = runtime.deserialize_cuda_engine(
        ft.bundled_policy_plan(fail_enqueue_after=1)).create_execution_context()
    obs, out = np.zeros((1, 48), np.float32), np.zeros((1, 12), np.float32)
    ctx.set_input_shape("obs", (1, 48))
    _bind(ctx, "obs", obs)
    _bind(ctx, "actions", out)
    assert ctx.execute_async_v3(0) is True
    assert ctx.execute_async_v3(0) is False
    assert "illegal memory access" in log.errors()[-1]


def test_data_dependent_output_shape() -> None:
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "INT32", (8,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(8,))],
                        function="nonzero")
    runtime, _log = _runtime()
    ctx = runtime.deserialize_cuda_engine(plan).create_execution_context()
    assert tuple(ctx.get_tensor_shape("idx")) == (-1,)
    assert ctx.get_max_output_size("idx") == 32
    x = np.array([0, 3, 0, 0, 5, 6, 0, 1], np.int32)
    out = np.full(8, -7, np.int32)
    _bind(ctx, "x", x)
    _bind(ctx, "idx", out)
    assert ctx.execute_async_v3(0)
    # As in TensorRT, the context never learns a data-dependent dimension: only an output
    # allocator's notify_shape does (NvInferRuntime.h, IExecutionContext::getTensorShape).
    assert tuple(ctx.get_tensor_shape("idx")) == (-1,)
    np.testing.assert_array_equal(out[:4], [1, 4, 5, 7])
    assert out[4] == -7


def test_registered_functions_dtypes_and_host_tensors() -> None:
    def affine(inputs: Any) -> dict[str, np.ndarray]:
        total = inputs["b"].astype(np.int64).sum().reshape(1)
        return {"y": inputs["a"] * 2 + inputs["b"], "n": total}

    ft.register_function("test.affine", affine)
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("a", np.float16, (-1, 3), profiles=[((1, 3), (2, 3), (4, 3))]),
                ft.FakeTensor("b", "HALF", (-1, 3), profiles=[((1, 3), (2, 3), (4, 3))])],
        outputs=[ft.FakeTensor("y", "HALF", ("a:0", 3)),
                 ft.FakeTensor("n", "INT64", (1,), location="HOST")],
        function="test.affine")
    runtime, _ = _runtime()
    engine = runtime.deserialize_cuda_engine(plan)
    assert engine.get_tensor_dtype("a") == ft.DataType.HALF
    assert engine.get_tensor_location("n") == ft.TensorLocation.HOST
    ctx = engine.create_execution_context()
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.ones((2, 3), np.float16)
    y, n = np.zeros((2, 3), np.float16), np.zeros(1, np.int64)
    for name, arr in (("a", a), ("b", b), ("y", y), ("n", n)):
        _bind(ctx, name, arr)
    ctx.set_input_shape("a", (2, 3))
    ctx.set_input_shape("b", (2, 3))
    assert ctx.execute_async_v3(0)
    np.testing.assert_array_equal(y, a * 2 + b)
    assert n[0] == 6


def test_profiles_switch() -> None:
    prof = [((1, 4), (1, 4), (2, 4)), ((3, 4), (4, 4), (8, 4))]
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (-1, 4), profiles=prof)],
                        outputs=[ft.FakeTensor("y", "FLOAT", ("x:0", 4))], function="identity")
    runtime, _ = _runtime()
    engine = runtime.deserialize_cuda_engine(plan)
    assert engine.num_optimization_profiles == 2
    ctx = engine.create_execution_context()
    assert not ctx.set_input_shape("x", (5, 4))
    assert ctx.set_optimization_profile_async(1, 0)
    assert ctx.active_optimization_profile == 1
    assert ctx.set_input_shape("x", (5, 4))
    assert not ctx.set_optimization_profile_async(2, 0)


def test_plugin_registry(tmp_path: Any) -> None:
    runtime, log = _runtime()
    registry = runtime.get_plugin_registry()
    assert registry.load_library(str(tmp_path / "missing.so")) is None
    assert "missing.so" in log.errors()[-1]
    lib = tmp_path / "libplugin.so"
    lib.write_bytes(b"\x7fELF")
    assert registry.load_library(str(lib)) is not None


def test_dims_behave_like_tensorrt_dims() -> None:
    d = ft.Dims([2, 3])
    assert len(d) == 2
    assert d[1] == 3
    assert tuple(d) == (2, 3)
    assert d == (2, 3)
    assert not isinstance(d, tuple)
    assert repr(ft.Dims([4])) == "(4,)"


def test_logger_prints_at_or_above_min_severity(capsys: pytest.CaptureFixture[str]) -> None:
    logger = ft.Logger(ft.Logger.WARNING)
    logger.log(ft.ILogger.Severity.INFO, "quiet")
    logger.log(ft.ILogger.Severity.ERROR, "loud")
    err = capsys.readouterr().err
    assert "loud" in err
    assert "quiet" not in err


def test_make_module_rejects_unknown_flavour() -> None:
    with pytest.raises(ValueError, match="flavour"):
        ft.make_module(flavour="safety")


def test_function_errors_become_enqueue_failures() -> None:
    def boom(inputs: Any) -> None:
        raise RuntimeError("kaput")

    ft.register_function("test.boom", boom)
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (2,))],
                        outputs=[ft.FakeTensor("y", "FLOAT", (2,))], function="test.boom")
    runtime, log = _runtime()
    ctx = runtime.deserialize_cuda_engine(plan).create_execution_context()
    buf = (ctypes.c_float * 4)()
    ctx.set_tensor_address("x", ctypes.addressof(buf))
    ctx.set_tensor_address("y", ctypes.addressof(buf) + 8)
    assert ctx.execute_async_v3(0) is False
    assert "kaput" in log.errors()[-1]

