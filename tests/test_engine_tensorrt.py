"""Engine and TensorRT executable paths, run against the fake TensorRT (CI has no GPU)."""

from __future__ import annotations

import gc
import logging
import threading
import types
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgert.cuda
from edgert import models
from edgert.engine import (
    Engine,
    EngineFlavour,
    EngineFormat,
    Executable,
    IntegrityStatus,
    Placement,
    ProfileShape,
    TensorLocation,
    TensorMode,
    TensorRTExecutable,
)
from edgert.errors import (
    EngineLoadError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    ResourceClosedError,
    VersionMismatchError,
)
from edgert.testing import fake_tensorrt as ft


@pytest.fixture
def device_like(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The fake posing as a real (CUDA) module, with CUDA said to be present: device paths."""
    module = ft.make_module()
    module.EDGERT_REQUIRES_CUDA = True  # type: ignore[attr-defined]
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: True)
    monkeypatch.setattr(edgert.cuda, "set_device", lambda device: None)
    return module


def _load(plan: bytes | None = None, **kw: Any) -> Engine:
    kw.setdefault("trt_module", ft)
    return Engine.load(ft.bundled_policy_plan() if plan is None else plan, **kw)


def _run(x: Any, obs: np.ndarray) -> np.ndarray:
    out = np.empty((obs.shape[0], models.ACTION_DIM), np.float32)
    assert x.set_input_shape("obs", obs.shape)
    assert tuple(x.get_tensor_shape("actions")) == out.shape
    assert x.set_tensor_address("obs", obs.ctypes.data)
    assert x.set_tensor_address("actions", out.ctypes.data)
    assert x.execute_async_v3(0), x.last_errors()
    return out


def test_engine_describes_the_plan() -> None:
    with _load() as engine:
        assert engine.format is EngineFormat.TENSORRT_PLAN
        assert engine.flavour is EngineFlavour.FULL
        assert engine.runtime_module == "edgert.testing.fake_tensorrt"
        assert engine.runtime_version == ft.__version__
        assert engine.header.trt_version == (10, 8, 0, 43)
        assert engine.header.fake_plan
        assert engine.integrity is IntegrityStatus.UNCHECKED
        assert engine.placement is Placement.HOST  # the fake computes on host memory
        assert engine.device_memory_bytes == 1 << 19
        assert engine.num_profiles == 1
        obs, actions = engine.tensors
        assert engine.inputs == (obs,)
        assert engine.outputs == (actions,)
        assert obs.mode is TensorMode.INPUT
        assert actions.mode is TensorMode.OUTPUT
        assert obs.dtype == np.float32
        assert obs.trt_dtype_name == "FLOAT"
        assert obs.shape == (-1, 48)
        assert actions.shape == (-1, 12)
        assert obs.location is TensorLocation.DEVICE
        assert obs.profiles == (ProfileShape((1, 48), (1, 48), (256, 48)),)
        assert engine.profiles == ({"obs": obs.profiles[0]},)
        assert obs.nbytes(obs.max_shape()) == 256 * 48 * 4
        assert engine.tensor("actions") is actions
        with pytest.raises(InvalidArgumentError, match="obs, actions"):
            engine.tensor("nope")
        assert "tensorrt-plan" in repr(engine)


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_executable_matches_numpy_reference(batch: int) -> None:
    with _load() as engine, engine.create_context() as x:
        assert isinstance(x, Executable)
        obs = np.random.default_rng(batch).standard_normal((batch, 48)).astype(np.float32)
        np.testing.assert_array_equal(_run(x, obs), models.policy_reference(obs))


def test_hot_path_methods_are_the_contexts_own() -> None:
    with _load() as engine, engine.create_context() as x:
        assert isinstance(x, TensorRTExecutable)
        ctx = x.raw_context
        for name in ("set_input_shape", "get_tensor_shape", "set_tensor_address",
                     "execute_async_v3"):
            method = getattr(x, name)
            assert method.__self__ is ctx
            assert method.__func__ is getattr(type(ctx), name)


def test_context_starts_at_the_profiles_opt_shape() -> None:
    with _load() as engine, engine.create_context() as x:
        assert tuple(x.get_tensor_shape("obs")) == (1, 48)
        assert tuple(x.get_tensor_shape("actions")) == (1, 12)
        assert x.placement is Placement.HOST
        assert not x.graph_capturable  # host work cannot be captured


def test_real_modules_place_tensors_on_the_device(device_like: types.ModuleType) -> None:
    with _load(trt_module=device_like) as engine, engine.create_context() as x:
        assert engine.placement is Placement.DEVICE
        assert x.placement is Placement.DEVICE
        assert x.graph_capturable


def test_data_dependent_outputs_are_not_capturable(device_like: types.ModuleType) -> None:
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "INT32", (6,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(6,))],
                        function="nonzero")
    with _load(plan, trt_module=device_like) as engine, engine.create_context() as x:
        assert x.placement is Placement.DEVICE
        assert not x.graph_capturable
        assert x.data_dependent_outputs == ("idx",)
        assert x.max_output_bytes("idx") == 24
        assert engine.outputs[0].shape == (-1,)
        data, out = np.array([1, 0, 2, 0, 0, 3], np.int32), np.zeros(6, np.int32)
        x.set_tensor_address("x", data.ctypes.data)
        x.set_tensor_address("idx", out.ctypes.data)  # preallocated at the max size: allowed
        assert x.execute_async_v3(0)
        assert tuple(x.get_tensor_shape("idx")) == (-1,)  # only an allocator learns the shape
        np.testing.assert_array_equal(out[:3], [0, 2, 5])
    with _load(trt_module=device_like) as engine, engine.create_context() as x:
        assert x.data_dependent_outputs == ()
        assert x.max_output_bytes("actions") == 256 * 12 * 4  # the profile's max batch
        assert x.max_output_bytes("obs") is None  # TensorRT gives -1 for an input


def test_second_profile() -> None:
    prof = [((1, 4), (1, 4), (2, 4)), ((3, 4), (4, 4), (8, 4))]
    plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (-1, 4), profiles=prof)],
                        outputs=[ft.FakeTensor("y", "FLOAT", ("x:0", 4))], function="identity")
    with _load(plan) as engine:
        assert engine.num_profiles == 2
        assert len(engine.profiles) == 2
        with engine.create_context(profile=1) as x:
            assert isinstance(x, TensorRTExecutable)
            assert x.profile == 1
            assert tuple(x.get_tensor_shape("x")) == (4, 4)
            assert not x.set_input_shape("x", (2, 4))
            assert "outside profile 1" in x.last_errors()[-1]
        for bad in (2, -1, True):
            with pytest.raises(InvalidArgumentError):
                engine.create_context(profile=bad)


def test_context_allocation_failure_is_an_engine_load_error() -> None:
    with _load(ft.bundled_policy_plan(fail_context=True)) as engine:
        with pytest.raises(EngineLoadError, match="execution context") as info:
            engine.create_context()
        assert any("OutOfMemory" in line for line in info.value.log_lines)
        assert "524,288 bytes" in str(info.value)


def test_failed_enqueue_returns_false_with_tensorrts_words() -> None:
    with _load(ft.bundled_policy_plan(fail_enqueue_after=1)) as engine, \
            engine.create_context() as x:
        obs = np.zeros((1, 48), np.float32)
        _run(x, obs)
        assert x.execute_async_v3(0) is False
        errors = x.last_errors()
        assert errors
        assert "illegal memory access" in errors[-1]
        assert x.last_errors() == ()


def test_errors_are_collected_per_thread() -> None:
    with _load() as engine, engine.create_context() as x:
        x.last_errors()
        seen: list[tuple[str, ...]] = []

        def other() -> None:
            with engine.create_context() as y:
                assert not y.set_input_shape("obs", (999, 48))
                seen.append(y.last_errors())

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen[0]
        assert "999" in seen[0][-1]
        assert x.last_errors() == ()


def test_tensorrt_messages_reach_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edgert.tensorrt"), _load() as engine, \
            engine.create_context() as x:
        x.set_input_shape("obs", (0, 48))
    records = [r for r in caplog.records if r.name == "edgert.tensorrt"]
    assert any(r.levelno == logging.INFO and "Loaded engine size" in r.getMessage()
               for r in records)
    assert any(r.levelno == logging.ERROR and "setInputShape" in r.getMessage() for r in records)


def test_closing() -> None:
    engine = _load()
    x = engine.create_context()
    engine.close()
    engine.close()
    assert engine.closed
    obs = np.ones((2, 48), np.float32)
    np.testing.assert_array_equal(_run(x, obs), models.policy_reference(obs))
    with pytest.raises(ResourceClosedError):
        engine.create_context()
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is not None  # the executable keeps its engine alive
    x.close()
    x.close()
    with pytest.raises(ResourceClosedError):
        x.execute_async_v3(0)
    with pytest.raises(ResourceClosedError):
        x.set_input_shape("obs", (1, 48))
    with pytest.raises(ResourceClosedError):
        _ = x.raw_context
    del x
    gc.collect()
    assert ref() is None


def test_version_mismatch() -> None:
    with pytest.raises(VersionMismatchError) as info:
        _load(ft.bundled_policy_plan(version="9.2.0.5"))
    err = info.value
    assert "built with TensorRT 9.2.0.5" in str(err)
    assert ft.__version__ in str(err)
    assert any("Version tag does not match" in line for line in err.log_lines)
    assert "runtime='lean'" in (err.hint or "")


def test_plan_that_is_not_version_compatible_on_lean() -> None:
    lean = ft.make_module(flavour="lean")
    with pytest.raises(VersionMismatchError, match="not a version-compatible plan") as info:
        _load(trt_module=lean)
    assert any("loadRunner" in line for line in info.value.log_lines)
    assert "runtime='full'" in (info.value.hint or "")


def test_version_compatible_plan_needs_host_code() -> None:
    lean = ft.make_module(flavour="lean", version="10.9.0.1")
    plan = ft.bundled_policy_plan(version="10.8.0.43", version_compatible=True)
    with pytest.raises(EngineLoadError, match="embeds host code") as info:
        _load(plan, trt_module=lean)
    assert type(info.value) is EngineLoadError
    assert "allow_host_code=True" in (info.value.hint or "")
    with _load(plan, trt_module=lean, allow_host_code=True) as engine:
        assert engine.flavour is EngineFlavour.LEAN
    with pytest.raises(VersionMismatchError):
        _load(ft.bundled_policy_plan(version="10.10.0.0", version_compatible=True),
              trt_module=lean, allow_host_code=True)


def _spy_module(flavour: str = "dispatch") -> tuple[types.ModuleType, list[Any]]:
    module = ft.make_module(flavour=flavour)
    made: list[Any] = []
    base = module.Runtime

    class Runtime(base):  # type: ignore[misc,valid-type]
        def __init__(self, logger: Any) -> None:
            super().__init__(logger)
            made.append(self)

    module.Runtime = Runtime  # type: ignore[attr-defined]
    return module, made


def test_temp_dir_configures_the_runtime(tmp_path: Path) -> None:
    module, made = _spy_module()
    plan = ft.bundled_policy_plan(version_compatible=True)
    with _load(plan, trt_module=module, allow_host_code=True, temp_dir=tmp_path):
        pass
    runtime = made[-1]
    assert runtime.temporary_directory == str(tmp_path)
    assert runtime.engine_host_code_allowed
    assert runtime.tempfile_control_flags == 3
    with pytest.raises(InvalidArgumentError, match="writable directory"):
        _load(plan, trt_module=module, temp_dir=tmp_path / "missing")


def test_plugins(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="plugin library") as info:
        _load(plugins=[tmp_path / "libmissing.so"])
    assert any("libmissing.so" in line for line in info.value.log_lines)
    lib = tmp_path / "libok.so"
    lib.write_bytes(b"\x7fELF")
    with _load(plugins=[lib]):
        pass
    with pytest.raises(InvalidArgumentError, match="sequence"):
        _load(plugins=str(lib))  # type: ignore[arg-type]


@pytest.mark.parametrize(("plan", "error", "text"), [
    (ft.bundled_policy_plan()[:100], ModelFormatError, "header.size == blobSize"),
    (ft.bundled_policy_plan()[:20], ModelFormatError, "minBufferSize"),
    (ft.bundled_policy_plan(fail_deserialize="oom"), EngineLoadError, "OutOfMemory"),
    (b"ftrt" + bytes(4) + b"NOTAFAKE" + bytes(64), EngineLoadError, "not a fake plan"),
])
def test_deserialization_failures(plan: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as info:
        _load(plan)
    assert isinstance(info.value, EngineLoadError)
    assert any(text in line for line in info.value.log_lines)
    assert info.value.hint


def test_no_runtime_is_created_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    module, made = _spy_module()
    module.EDGERT_REQUIRES_CUDA = True  # type: ignore[attr-defined]  # as a real module
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: False)
    monkeypatch.setattr(edgert.cuda, "unavailable_reason", lambda: "no driver (test)")
    with pytest.raises(NotSupportedError, match="no CUDA device") as info:
        _load(trt_module=module)
    assert "no driver (test)" in str(info.value)
    assert made == []


def test_real_lean_module_is_never_given_a_runtime_here() -> None:
    pytest.importorskip("tensorrt_lean")
    if edgert.cuda.is_available():
        pytest.skip("this machine has a GPU; the gpu tier covers the real runtime")
    with pytest.raises(NotSupportedError, match="no CUDA device"):
        Engine.load(ft.bundled_policy_plan(), runtime="lean")


def test_runtime_argument_checks() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown runtime"):
        _load(runtime="tensorrt")
    with pytest.raises(InvalidArgumentError, match="contradicts"):
        _load(runtime="lean")
    with pytest.raises(InvalidArgumentError, match="cannot load a TensorRT plan"):
        Engine.load(ft.bundled_policy_plan(), runtime="onnxruntime")
    with pytest.raises(InvalidArgumentError, match="ONNX model"):
        Engine.load(models.bundled_model_path(), trt_module=ft)
    with pytest.raises(InvalidArgumentError, match="ONNX model"):
        Engine.load(models.bundled_model_path(), runtime="lean")
    for device in (-1, True, 1.0):
        with pytest.raises(InvalidArgumentError, match="device"):
            _load(device=device)


def test_missing_runtime_module_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.engine import _trt_module

    def refuse(flavour: Any) -> types.ModuleType:
        raise ImportError(f"no {flavour.value} here")

    monkeypatch.setattr(_trt_module, "_import", refuse)
    with pytest.raises(NotSupportedError, match="no TensorRT runtime can be imported") as info:
        Engine.load(ft.bundled_policy_plan())
    assert "edgert[lean]" in (info.value.hint or "")
    with pytest.raises(NotSupportedError, match="tensorrt_dispatch"):
        Engine.load(ft.bundled_policy_plan(), runtime="dispatch")


def test_auto_takes_the_first_module_that_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.engine import _trt_module

    lean = ft.make_module(flavour="lean")

    def fake_import(flavour: Any) -> types.ModuleType:
        if flavour is EngineFlavour.LEAN:
            return lean
        raise ImportError("absent")

    monkeypatch.setattr(_trt_module, "_import", fake_import)
    assert _trt_module.resolve_trt_module("auto", None) == (lean, EngineFlavour.LEAN)
