"""The fake TensorRT on its own: plan format, logging, shapes, failures, as users' tests see it."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.testing import fake_tensorrt as ft


class Collect(ft.ILogger):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[int, str]] = []

    def log(self, severity: Any, msg: str) -> None:
        self.messages.append((int(severity), msg))

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s <= int(ft.ILogger.Severity.ERROR)]


def _runtime(module: Any = ft) -> tuple[Any, Collect]:
    logger = Collect()
    return module.Runtime(logger), logger


def _bind(ctx: Any, name: str, array: np.ndarray) -> None:
    assert ctx.set_tensor_address(name, array.ctypes.data)


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
    assert "host code" in log.errors()[-1]
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


class Recording(ft.IOutputAllocator):
    """Grow-only host buffers, recording every call the context makes."""

    def __init__(self, *, sync: bool = True, asynchronous: bool = True) -> None:
        ft.IOutputAllocator.__init__(self)
        self.calls: list[tuple[Any, ...]] = []
        self.buffers: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        if not sync:
            self.reallocate_output = None  # type: ignore[assignment]
        if not asynchronous:
            self.reallocate_output_async = None  # type: ignore[assignment]

    def _grow(self, name: str, size: int, alignment: int) -> int:
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes < size + alignment:
            buf = self.buffers[name] = np.zeros(size + alignment, np.uint8)
        address = buf.ctypes.data
        return address + (-address) % alignment

    def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
        self.calls.append(("reallocate_output", tensor_name, memory, size, alignment))
        return self._grow(tensor_name, size, alignment)

    def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                stream: int) -> int:
        self.calls.append(("reallocate_output_async", tensor_name, memory, size, alignment,
                           stream))
        return self._grow(tensor_name, size, alignment)

    def notify_shape(self, tensor_name: str, shape: Any) -> None:
        assert isinstance(shape, ft.Dims)  # the bindings pass a Dims, not a tuple
        self.calls.append(("notify_shape", tensor_name, tuple(shape)))
        self.shapes[tensor_name] = tuple(shape)

    def array(self, name: str, dtype: Any) -> np.ndarray:
        shape = self.shapes[name]
        count = int(np.prod(shape))
        address = self._grow(name, 1, 256)
        raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
        return np.frombuffer(raw, dtype).reshape(shape).copy()


def _nonzero_context(module: Any = ft, n: int = 8) -> tuple[Any, Collect]:
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "INT32", (n,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(n,))],
                        function="nonzero", version=module.__version__)
    runtime, log = _runtime(module)
    return runtime.deserialize_cuda_engine(plan).create_execution_context(), log


def test_output_allocator_is_called_on_every_enqueue_as_tensorrt_does() -> None:
    ctx, _ = _nonzero_context()
    alloc = Recording()
    assert ctx.get_output_allocator("idx") is None
    assert ctx.set_output_allocator("idx", alloc)
    assert ctx.get_output_allocator("idx") is alloc
    x = np.array([0, 3, 0, 0, 5, 6, 0, 1], np.int32)
    _bind(ctx, "x", x)  # no address for idx: the allocator provides it
    assert ctx.execute_async_v3(77)
    first = ctx.get_tensor_address("idx")
    assert alloc.calls == [("reallocate_output_async", "idx", 0, 16, 256, 77),
                           ("notify_shape", "idx", (4,))]
    assert first % 256 == 0
    np.testing.assert_array_equal(alloc.array("idx", np.int32), [1, 4, 5, 7])
    assert tuple(ctx.get_tensor_shape("idx")) == (-1,)
    x[:] = 0
    alloc.calls.clear()
    assert ctx.execute_async_v3(77)
    # Empty result: still a positive size, and the address returned last time comes back.
    assert alloc.calls == [("reallocate_output_async", "idx", first, 1, 256, 77),
                           ("notify_shape", "idx", (0,))]
    assert alloc.array("idx", np.int32).shape == (0,)
    assert ctx.set_output_allocator("idx", None)
    assert ctx.get_output_allocator("idx") is None
    alloc.calls.clear()
    assert ctx.execute_async_v3(0)  # back to the address TensorRT kept
    assert alloc.calls == []


def test_allocator_on_an_output_of_known_shape_and_a_partly_known_one() -> None:
    plan = ft.make_plan(
        inputs=[ft.FakeTensor("x", "FLOAT", (-1, 3), profiles=[((1, 3), (2, 3), (4, 3))])],
        outputs=[ft.FakeTensor("y", "FLOAT", ("x:0", 3)),
                 ft.FakeTensor("nz", "INT64", (2, -1), max_shape=(2, 12))],
        function="tests.fake.y_and_nonzero")
    ft.register_function("tests.fake.y_and_nonzero", lambda i: {
        "y": i["x"] * 2, "nz": np.array(np.nonzero(i["x"]), np.int64)})
    runtime, _ = _runtime()
    ctx = runtime.deserialize_cuda_engine(plan).create_execution_context()
    assert ctx.set_input_shape("x", (2, 3))
    assert tuple(ctx.get_tensor_shape("nz")) == (2, -1)
    assert ctx.get_max_output_size("nz") == 2 * 12 * 8
    alloc = Recording()
    assert ctx.set_output_allocator("y", alloc)
    assert ctx.set_output_allocator("nz", alloc)
    x = np.array([[0, 1, 2], [3, 0, 0]], np.float32)
    _bind(ctx, "x", x)
    assert ctx.execute_async_v3(0)
    assert [c[:4] for c in alloc.calls] == [
        ("reallocate_output_async", "y", 0, 24), ("notify_shape", "y", (2, 3)),
        ("reallocate_output_async", "nz", 0, 48), ("notify_shape", "nz", (2, 3))]
    np.testing.assert_array_equal(alloc.array("y", np.float32), x * 2)
    np.testing.assert_array_equal(alloc.array("nz", np.int64), np.nonzero(x))


def test_onnx_nonzero_function_has_onnx_layout() -> None:
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (2, 2))],
                        outputs=[ft.FakeTensor("y", "INT64", (2, -1), max_shape=(2, 4))],
                        function="onnx.NonZero")
    runtime, _ = _runtime()
    ctx = runtime.deserialize_cuda_engine(plan).create_execution_context()
    alloc = Recording()
    assert ctx.set_output_allocator("y", alloc)
    x = np.array([[1, 0], [0, 5]], np.float32)
    _bind(ctx, "x", x)
    assert ctx.execute_async_v3(0)
    np.testing.assert_array_equal(alloc.array("y", np.int64), [[0, 1], [0, 1]])


@pytest.mark.parametrize(("version", "sync", "asynchronous", "called"), [
    ("10.8.0.43", True, True, "reallocate_output_async"),
    ("10.8.0.43", True, False, "reallocate_output"),  # the bindings fall back to the old name
    ("11.4.0.106", False, True, "reallocate_output_async"),
    ("8.6.1.6", True, True, "reallocate_output"),  # 8.6 knows no async callback
    ("8.6.1.6", False, True, None),
])
def test_which_callback_each_version_calls(version: str, sync: bool, asynchronous: bool,
                                           called: str | None) -> None:
    module = ft.make_module(version=version)
    ctx, log = _nonzero_context(module)
    alloc = Recording(sync=sync, asynchronous=asynchronous)
    assert ctx.set_output_allocator("idx", alloc)
    _bind(ctx, "x", np.arange(8, dtype=np.int32))
    assert ctx.execute_async_v3(0) is (called is not None)
    if called is None:
        assert alloc.calls == []
        assert "OutOfMemory" in log.errors()[-1]
        assert "'idx'" in log.errors()[-1]
    else:
        assert [c[0] for c in alloc.calls] == [called, "notify_shape"]
        np.testing.assert_array_equal(alloc.array("idx", np.int32), np.arange(1, 8))


class Failing(Recording):
    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                stream: int) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(("result", "printed"), [
    (RuntimeError("pool exhausted"), "Exception caught in reallocateOutputAsync(): RuntimeError"),
    (None, "could not be interpreted as an int"),
    (0, None),
])
def test_allocator_failures_fail_the_enqueue(result: Any, printed: str | None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ctx, log = _nonzero_context()
    assert ctx.set_output_allocator("idx", Failing(result))
    _bind(ctx, "x", np.ones(8, np.int32))
    assert ctx.execute_async_v3(0) is False
    assert "no memory for 32 bytes" in log.errors()[-1]
    err = capsys.readouterr().err
    assert (printed in err) if printed else not err


def test_notify_shape_errors_are_printed_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    class NoNotify(Recording):
        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            raise ValueError("bad shape")

    ctx, _ = _nonzero_context()
    assert ctx.set_output_allocator("idx", NoNotify())
    _bind(ctx, "x", np.ones(8, np.int32))
    assert ctx.execute_async_v3(0)
    assert "Exception caught in notifyShape(): ValueError: bad shape" in capsys.readouterr().err


def test_set_output_allocator_checks_like_the_bindings() -> None:
    ctx, log = _nonzero_context()
    assert not ctx.set_output_allocator("x", Recording())
    assert "not an output" in log.errors()[-1]
    assert not ctx.set_output_allocator("nope", Recording())
    with pytest.raises(TypeError, match="incompatible function arguments"):
        ctx.set_output_allocator("idx", object())

    class Forgot(ft.IOutputAllocator):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"__init__\(\) must be called"):
        Forgot()


def test_without_allocator_or_address_the_enqueue_fails() -> None:
    ctx, log = _nonzero_context()
    _bind(ctx, "x", np.ones(8, np.int32))
    assert ctx.execute_async_v3(0) is False
    assert "Address is not set for tensor idx" in log.errors()[-1]
