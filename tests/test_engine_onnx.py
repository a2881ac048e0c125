"""ONNX models on ONNX Runtime through the Executable protocol, checked against numpy."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.engine import (
    Engine,
    EngineFlavour,
    Executable,
    OnnxExecutable,
    OnnxRuntimeOptions,
    Placement,
    TensorLocation,
)
from edgert.errors import (
    EngineLoadError,
    InferenceError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    ResourceClosedError,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], *, init: Any = (),
           meta: dict[str, str] | None = None, opset: int = 13) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(init))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, meta)
    return bytes(model.SerializeToString())


def _vi(name: str, dtype: int, shape: list[Any]) -> Any:
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture
def policy() -> Any:
    with Engine.load(models.bundled_model_path()) as engine:
        yield engine


def test_bundled_model_description(policy: Engine) -> None:
    assert policy.flavour is EngineFlavour.ONNXRUNTIME
    assert policy.runtime_module == "onnxruntime"
    assert policy.placement is Placement.HOST
    assert policy.device_memory_bytes is None
    assert policy.num_profiles == 1
    obs, actions = policy.tensors
    assert (obs.name, obs.shape, actions.name, actions.shape) == ("obs", (-1, 48), "actions",
                                                                  (-1, 12))
    assert obs.location is TensorLocation.HOST
    assert obs.trt_dtype_name == "FLOAT"
    assert obs.profiles[0].max == (models.MAX_BATCH, 48)


@pytest.mark.parametrize("batch", [1, 3, 256])
def test_bundled_model_against_reference(policy: Engine, batch: int) -> None:
    x = policy.create_context()
    assert isinstance(x, Executable)
    assert isinstance(x, OnnxExecutable)
    assert x.placement is Placement.HOST
    assert not x.graph_capturable
    obs = np.random.default_rng(batch).standard_normal((batch, 48)).astype(np.float32)
    out = np.full((batch, 12), np.nan, np.float32)
    assert x.set_input_shape("obs", obs.shape)
    assert tuple(x.get_tensor_shape("actions")) == (batch, 12)
    assert x.set_tensor_address("obs", obs.ctypes.data)
    assert x.set_tensor_address("actions", out.ctypes.data)
    assert x.execute_async_v3(0), x.last_errors()
    np.testing.assert_allclose(out, models.policy_reference(obs), rtol=1e-5, atol=1e-5)
    x.close()


class _CountingBinding:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def bind_input(self, name: str, *args: Any) -> None:
        self.calls.append(f"in:{name}")
        self.inner.bind_input(name, *args)

    def bind_output(self, name: str, *args: Any) -> None:
        self.calls.append(f"out:{name}")
        self.inner.bind_output(name, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_rebinds_only_what_changed(policy: Engine) -> None:
    x = policy.create_context()
    assert isinstance(x, OnnxExecutable)
    spy = _CountingBinding(x._binding)
    x._binding = spy  # ORT's run_with_iobinding reads spy._iobinding, forwarded to the real one
    a = np.ones((2, 48), np.float32)
    b = np.full((2, 48), 2, np.float32)
    out = np.zeros((2, 12), np.float32)
    x.set_input_shape("obs", (2, 48))
    x.set_tensor_address("obs", a.ctypes.data)
    x.set_tensor_address("actions", out.ctypes.data)
    for _ in range(3):
        assert x.execute_async_v3(0)
    assert spy.calls == ["in:obs", "out:actions"]
    np.testing.assert_allclose(out, models.policy_reference(a), atol=1e-5)
    x.set_tensor_address("obs", b.ctypes.data)
    x.set_input_shape("obs", (2, 48))  # unchanged: no rebinding for it
    assert x.execute_async_v3(0)
    assert spy.calls[2:] == ["in:obs"]
    np.testing.assert_allclose(out, models.policy_reference(b), atol=1e-5)


def test_rejections_return_false_with_reasons(policy: Engine) -> None:
    x = policy.create_context()
    cases = [
        (lambda: x.set_input_shape("actions", (1, 12)), "not an input"),
        (lambda: x.set_input_shape("obs", (1, 47)), "does not fit"),
        (lambda: x.set_input_shape("obs", (257, 48)), "outside its profile"),
        (lambda: x.set_tensor_address("nope", 1), "no tensor named"),
        (lambda: x.execute_async_v3(0), "address of input 'obs' is not set"),
    ]
    for call, reason in cases:
        assert call() is False
        errors = x.last_errors()
        assert len(errors) == 1, errors
        assert reason in errors[0], errors
    assert tuple(x.get_tensor_shape("nope")) == ()
    assert x.last_errors()


def test_closed_executable(policy: Engine) -> None:
    x = policy.create_context()
    x.close()
    x.close()
    with pytest.raises(ResourceClosedError):
        x.execute_async_v3(0)
    with pytest.raises(ResourceClosedError):
        x.set_tensor_address("obs", 1)


def test_engine_close_leaves_executables_working() -> None:
    engine = Engine.load(models.bundled_model_path())
    x = engine.create_context()
    engine.close()
    obs, out = np.ones((1, 48), np.float32), np.zeros((1, 12), np.float32)
    x.set_tensor_address("obs", obs.ctypes.data)
    x.set_tensor_address("actions", out.ctypes.data)
    assert x.execute_async_v3(0)
    with pytest.raises(InvalidArgumentError):
        Engine.load(models.bundled_model_path()).create_context(profile=1)


def test_two_inputs_static_shapes_and_integer_types() -> None:
    w = np.arange(12, dtype=np.int64).reshape(3, 4)
    data = _model(
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
         helper.make_node("Cast", ["y"], ["yf"], to=TensorProto.FLOAT)],
        [_vi("a", TensorProto.INT64, [2, 3]), _vi("b", TensorProto.INT64, [2, 4])],
        [_vi("y", TensorProto.INT64, [2, 4]), _vi("yf", TensorProto.FLOAT, [2, 4])],
        init=[numpy_helper.from_array(w, "w")])
    with Engine.load(data) as engine:
        assert [t.dtype.name for t in engine.tensors] == ["int64", "int64", "int64", "float32"]
        assert all(not t.is_dynamic for t in engine.tensors)
        assert engine.num_profiles == 0
        x = engine.create_context()
        a = np.arange(6, dtype=np.int64).reshape(2, 3)
        b = np.full((2, 4), 10, np.int64)
        y, yf = np.zeros((2, 4), np.int64), np.zeros((2, 4), np.float32)
        for name, arr in (("a", a), ("b", b), ("y", y), ("yf", yf)):
            x.set_tensor_address(name, arr.ctypes.data)
        assert x.execute_async_v3(0), x.last_errors()
        np.testing.assert_array_equal(y, a @ w + b)
        np.testing.assert_array_equal(yf, (a @ w + b).astype(np.float32))


def test_dynamic_input_without_profile_and_symbolic_outputs() -> None:
    data = _model([helper.make_node("Mul", ["x", "x"], ["y"])],
                  [_vi("x", TensorProto.FLOAT, ["n", "m"])],
                  [_vi("y", TensorProto.FLOAT, ["n", "m"])])
    with Engine.load(data) as engine:
        (x_spec, _y_spec) = engine.tensors
        assert x_spec.shape == (-1, -1)
        assert x_spec.profiles == ()
        x = engine.create_context()
        assert tuple(x.get_tensor_shape("y")) == (-1, -1)
        src = np.arange(6, dtype=np.float32).reshape(2, 3)
        dst = np.zeros_like(src)
        x.set_tensor_address("x", src.ctypes.data)
        x.set_tensor_address("y", dst.ctypes.data)
        assert not x.execute_async_v3(0)
        assert "shape of dynamic input 'x' is not set" in x.last_errors()[0]
        assert x.set_input_shape("x", (2, 3))
        assert tuple(x.get_tensor_shape("y")) == (2, 3)
        assert x.execute_async_v3(0)
        np.testing.assert_array_equal(dst, src * src)


def test_output_shape_that_depends_on_data_needs_an_allocator() -> None:
    data = _model([helper.make_node("NonZero", ["x"], ["y"])],
                  [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.INT64, [1, "k"])])
    with Engine.load(data) as engine:
        x = engine.create_context()
        assert -1 in x.get_tensor_shape("y")
        src, dst = np.ones(4, np.float32), np.zeros(4, np.int64)
        x.set_tensor_address("x", src.ctypes.data)
        x.set_tensor_address("y", dst.ctypes.data)
        assert not x.execute_async_v3(0)
        assert "no output allocator was set" in x.last_errors()[0]


def test_runtime_errors_are_reported() -> None:
    data = _model([helper.make_node("Reshape", ["x", "s"], ["y"])],
                  [_vi("x", TensorProto.FLOAT, [4]), _vi("s", TensorProto.INT64, [2])],
                  [_vi("y", TensorProto.FLOAT, [2, 2])])
    with Engine.load(data) as engine:
        x = engine.create_context()
        src, shape, dst = np.ones(4, np.float32), np.array([3, 3]), np.zeros(4, np.float32)
        for name, arr in (("x", src), ("s", shape), ("y", dst)):
            x.set_tensor_address(name, arr.ctypes.data)
        assert not x.execute_async_v3(0)
        assert x.last_errors()[0].startswith("ONNX Runtime:")


def test_unsupported_io_type() -> None:
    data = _model([helper.make_node("SequenceConstruct", ["x"], ["y"])],
                  [_vi("x", TensorProto.FLOAT, [2])],
                  [helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(EngineLoadError, match=r"seq\(tensor\(float\)\)") as info:
        Engine.load(data)
    assert "sequences and maps" in (info.value.hint or "")


def test_malformed_profile_metadata() -> None:
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, ["n"])],
                  [_vi("y", TensorProto.FLOAT, ["n"])],
                  meta={"edgert.profiles": json.dumps({"x": {"min": [4], "max": [1]}})})
    with pytest.raises(ModelFormatError, match=r"edgert\.profiles"):
        Engine.load(data)


def test_options() -> None:
    opts = OnnxRuntimeOptions(intra_op_num_threads=2, optimization="basic", spin_wait=True)
    with Engine.load(models.bundled_model_path(), onnx_options=opts) as engine:
        assert engine.inputs[0].name == "obs"
    for bad in ({"intra_op_num_threads": 0}, {"providers": ()}, {"optimization": "max"},
                {"providers": ("CPUExecutionProvider", 3)}):
        with pytest.raises(InvalidArgumentError):
            OnnxRuntimeOptions(**bad)
    with pytest.raises(NotSupportedError, match="NoSuchExecutionProvider"):
        Engine.load(models.bundled_model_path(),
                    onnx_options=OnnxRuntimeOptions(providers=("NoSuchExecutionProvider",)))
    with pytest.raises(InvalidArgumentError, match="OnnxRuntimeOptions"):
        Engine.load(models.bundled_model_path(), onnx_options={"threads": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="plugins"):
        Engine.load(models.bundled_model_path(), plugins=["libx.so"])


def test_missing_kernel_names_the_way_out() -> None:
    data = _model([helper.make_node("Identity", ["x"], ["y"])],
                  [_vi("x", TensorProto.INT4, [2])], [_vi("y", TensorProto.INT4, [2])],
                  opset=21)
    with pytest.raises(EngineLoadError, match="no kernel") as info:
        Engine.load(data)
    assert "Identity" in " ".join(info.value.log_lines)
    assert "upgrade onnxruntime" in (info.value.hint or "")


def test_an_exception_that_is_not_onnx_runtimes_is_not_a_failed_run(policy: Engine) -> None:
    """A signal handler that raises while ONNX Runtime runs: its exception came back as "the
    executable failed", mostly with the exception lost (found by a trial). The executable lets
    it through; the session chains it (``__cause__``)."""
    from edgert.session import InferenceSession

    class Shutdown(Exception):
        pass

    with InferenceSession(policy, device="host", slots=1) as s:
        x = np.zeros((1, models.OBS_DIM), np.float32)
        s.infer({"obs": x})
        exe = s._runner.exe
        real = exe._run

        def interrupted() -> None:
            raise Shutdown("SIGTERM: shut down")

        exe._run = interrupted
        try:
            with pytest.raises(InferenceError) as info:
                s.infer({"obs": x})
            assert isinstance(info.value.__cause__, Shutdown)
            assert "ONNX Runtime" not in str(info.value)
        finally:
            exe._run = real
        np.testing.assert_allclose(s.infer({"obs": x})["actions"], models.policy_reference(x),
                                   rtol=1e-5, atol=1e-6)
