"""The fake TensorRT against the real one: every TensorRT attribute edgert touches, and every name
the fake offers, must exist on the real ``tensorrt_lean`` bindings (with the same enum values and
parameter names).

edgert's engine code runs against the fake wrapped in a recording proxy; the proxy notes each
attribute read or written on the module, its classes and the objects they return. Importing
``tensorrt_lean`` needs no GPU; no Runtime is ever created here.
"""

from __future__ import annotations

import enum
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgert.engine import Engine
from edgert.errors import EngineLoadError
from edgert.testing import fake_tensorrt as ft

trt = pytest.importorskip("tensorrt_lean")

ROOT = Path(__file__).resolve().parents[1]

# Names edgert reads from an injected module that no TensorRT module has (they are read with a
# default, so real modules are unaffected).
EDGERT_MARKERS = {
    ("EDGERT_FLAVOUR",): "an injected module's declared flavour (fake only)",
    ("EDGERT_REQUIRES_CUDA",): "an injected module's declaration that it needs no GPU (fake only)",
}
# Attributes edgert uses, behind a feature check, that the lean bindings of this version lack.
NOT_ON_LEAN = {
    ("ICudaEngine", "device_memory_size"):
        "the name before TensorRT 10.1 (device_memory_size_v2 since); removed in 11.0. Read only "
        "when device_memory_size_v2 is absent (8.6 - 10.0 runtimes).",
}


class _Recorder:
    def __init__(self) -> None:
        self.touched: set[tuple[str, ...]] = set()

    def wrap(self, value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, (enum.Enum, ft.Dims, str, bytes, int, float, type(None))):
            return value
        if isinstance(value, type) or callable(value):
            return _Proxy(value, path, self)
        for cls in (ft.Runtime, ft.ICudaEngine, ft.IExecutionContext, ft.IPluginRegistry):
            if isinstance(value, cls):
                return _Proxy(value, (cls.__name__,), self)
        return value


class _Proxy:
    """Forwards to its target and records every attribute used on it."""

    def __init__(self, target: Any, path: tuple[str, ...], recorder: _Recorder) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_rec", recorder)

    def __getattr__(self, name: str) -> Any:
        path = (*self._path, name)
        self._rec.touched.add(path)
        return self._rec.wrap(getattr(self._target, name), path)

    def __setattr__(self, name: str, value: Any) -> None:
        self._rec.touched.add((*self._path, name))
        setattr(self._target, name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._target(*args, **kwargs)
        if isinstance(result, list):
            return [self._rec.wrap(r, ()) for r in result]
        return self._rec.wrap(result, ())

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (self._target,)  # `class X(trt.ILogger)` subclasses the real class


def _module_proxy(module: ModuleType, recorder: _Recorder) -> Any:
    return _Proxy(module, (), recorder)


def _legacy_module() -> ModuleType:
    """A fake as an 8.6-10.0 runtime looks: no device_memory_size_v2, no runtime registry."""
    module = ft.make_module()

    class ICudaEngine(ft.ICudaEngine):
        @property
        def device_memory_size_v2(self) -> int:
            raise AttributeError("device_memory_size_v2")

        @property
        def device_memory_size(self) -> int:
            return self._plan.device_memory_size

    class Runtime(module.Runtime):  # type: ignore[misc,name-defined]
        @property
        def get_plugin_registry(self) -> Any:
            raise AttributeError("get_plugin_registry")

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            engine = super().deserialize_cuda_engine(serialized_engine)
            if engine is not None:
                engine.__class__ = ICudaEngine
            return engine

    module.Runtime = Runtime  # type: ignore[attr-defined]
    return module


class _HostAllocator:
    """A session-like output allocator: grow-only host buffers."""

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def reallocate_output(self, tensor_name: str, memory: int, size: int,
                          alignment: int) -> int:
        buf = self.buffers.get(tensor_name)
        if buf is None or buf.nbytes < size + alignment:
            buf = self.buffers[tensor_name] = np.zeros(size + alignment, np.uint8)
        return int(buf.ctypes.data + (-buf.ctypes.data) % alignment)

    def notify_shape(self, tensor_name: str, shape: Any) -> None:
        self.shapes[tensor_name] = tuple(shape)


def _exercise(module: Any, tmp_path: Path) -> None:
    """Every engine path edgert has, against ``module``."""
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"\x7fELF")
    prof = [((1, 4), (1, 4), (2, 4)), ((3, 4), (4, 4), (8, 4))]
    plans = [
        ft.bundled_policy_plan(version_compatible=True),
        ft.make_plan(inputs=[ft.FakeTensor("x", "HALF", (-1, 4), profiles=prof)],
                     outputs=[ft.FakeTensor("y", "HALF", ("x:0", 4))], function="identity"),
        ft.make_plan(inputs=[ft.FakeTensor("x", "INT32", (4,))],
                     outputs=[ft.FakeTensor("i", "INT32", (-1,), max_shape=(4,))],
                     function="nonzero"),
    ]
    for index, plan in enumerate(plans):
        with Engine.load(plan, trt_module=module, allow_host_code=True, temp_dir=tmp_path,
                         plugins=[plugin]) as engine:
            assert engine.device_memory_bytes is not None
            for profile in range(engine.num_profiles):
                with engine.create_context(profile=profile) as x:
                    arrays = {t.name: np.ones(t.max_shape(profile) if t.is_input else 64,
                                              t.dtype) for t in engine.tensors}
                    for name, array in arrays.items():
                        assert x.set_tensor_address(name, array.ctypes.data)
                    if index == 0:
                        assert x.set_input_shape("obs", (2, 48))
                    x.get_tensor_shape(engine.outputs[0].name)
                    assert x.execute_async_v3(0), x.last_errors()
                    if x.data_dependent_outputs:
                        alloc = _HostAllocator()
                        for name in x.data_dependent_outputs:
                            assert x.max_output_bytes(name)
                            assert x.set_output_allocator(name, alloc)
                        assert x.execute_async_v3(0), x.last_errors()
                        assert alloc.shapes == {"i": (4,)}
                        assert x.set_output_allocator("i", None)
    for bad in (ft.bundled_policy_plan(version="9.0.0.0"), ft.bundled_policy_plan()[:60],
                ft.bundled_policy_plan(version_compatible=True)):
        with pytest.raises(EngineLoadError):
            Engine.load(bad, trt_module=module)
    with Engine.load(ft.bundled_policy_plan(fail_context=True), trt_module=module) as engine, \
            pytest.raises(EngineLoadError):
        engine.create_context()


def _resolve(path: tuple[str, ...]) -> bool:
    obj: Any = trt
    for name in path:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def test_every_tensorrt_attribute_edgert_touches_exists_on_lean(tmp_path: Path) -> None:
    recorder = _Recorder()
    _exercise(_module_proxy(ft.make_module(), recorder), tmp_path)
    _exercise(_module_proxy(_legacy_module(), recorder), tmp_path)
    touched = {p for p in recorder.touched if p}
    assert ("IExecutionContext", "execute_async_v3") in touched  # the recorder works
    assert ("IExecutionContext", "set_output_allocator") in touched  # the allocator path ran
    assert ("IOutputAllocator",) in touched  # the adapter subclasses the module's class
    assert ("ICudaEngine", "device_memory_size") in touched  # the legacy branch ran
    missing = sorted(p for p in touched - set(EDGERT_MARKERS) - set(NOT_ON_LEAN)
                     if not _resolve(p))
    assert not missing, f"edgert uses TensorRT names the lean bindings lack: {missing}"
    for path, reason in NOT_ON_LEAN.items():
        assert path in touched, f"stale entry {path}: edgert no longer uses it ({reason})"
        assert not _resolve(path), f"{path} exists on lean now; drop it from NOT_ON_LEAN"


def _param_sets(doc: str, name: str) -> list[list[str]]:
    """Parameter names of each overload in a pybind11 docstring (``self`` dropped)."""
    out = []
    for m in re.finditer(rf"{re.escape(name)}\((.*?)\) ->", doc):
        params, depth, current = [], 0, ""
        for ch in m.group(1) + ",":
            depth += (ch in "[(" and 1) or ((ch in "])" and -1) or 0)
            if ch == "," and depth == 0:
                params.append(current.split(":", maxsplit=1)[0].strip())
                current = ""
            else:
                current += ch
        out.append([p for p in params if p and p != "self"])
    return out


def _fake_classes() -> list[tuple[str, type]]:
    names = [n for n in ft.__all__ if n not in ft.FAKE_ONLY_NAMES and n != "__version__"]
    return [(n, getattr(ft, n)) for n in names if isinstance(getattr(ft, n), type)]


@pytest.mark.parametrize(("name", "fake"), _fake_classes(), ids=[n for n, _ in _fake_classes()])
def test_fake_public_surface_exists_on_lean(name: str, fake: type) -> None:
    real = getattr(trt, name)
    if issubclass(fake, enum.IntEnum):
        for member, value in fake.__members__.items():
            assert int(getattr(real, member)) == int(value), f"{name}.{member}"
        return
    own = {a for a in vars(fake) if not a.startswith("_") or a in (
        "__init__", "__len__", "__getitem__", "__eq__", "__hash__", "__repr__", "__str__")}
    for attr in sorted(own):
        assert hasattr(real, attr), f"fake {name}.{attr} does not exist on tensorrt_lean"
        member = vars(fake)[attr]
        if isinstance(member, type) and issubclass(member, enum.IntEnum):
            for m, v in member.__members__.items():
                assert int(getattr(getattr(real, attr), m)) == int(v), f"{name}.{attr}.{m}"
        elif inspect.isfunction(member) and not attr.startswith("__"):
            fake_params = [p for p in inspect.signature(member).parameters if p != "self"]
            overloads = _param_sets(getattr(real, attr).__doc__ or "", attr)
            assert overloads, f"no signature in the docstring of {name}.{attr}"
            assert fake_params in overloads, (
                f"{name}.{attr}{tuple(fake_params)} vs tensorrt_lean {overloads}")


def test_fake_module_names_exist_on_lean() -> None:
    for name in ft.__all__:
        if name not in ft.FAKE_ONLY_NAMES:
            assert hasattr(trt, name), name
    fake_only = set(ft.FAKE_ONLY_NAMES)
    assert fake_only <= set(ft.__all__)
    assert not any(hasattr(trt, name) for name in fake_only - {"__version__"})


def _doc_callbacks(doc: str) -> dict[str, tuple[str, ...]]:
    """The callbacks the bindings' class documentation shows, with their parameter names."""
    return {m.group(1): tuple(p.strip() for p in m.group(2).split(","))
            for m in re.finditer(r"def (\w+)\(self, ([^)]*)\):", doc)}


def test_output_allocator_callbacks_are_the_ones_tensorrt_calls() -> None:
    """TensorRT calls an IOutputAllocator by names its bindings document only in the class
    docstring (from 10.0 the class exposes no methods); the fake calls, and edgert's adapter
    defines, exactly those names with those parameters."""
    from edgert.engine._trt_allocator import adapter_class
    from edgert.testing._fake_trt_alloc import CALLBACK_NAMES

    documented = _doc_callbacks(trt.IOutputAllocator.__doc__ or "")
    assert {"reallocate_output", "notify_shape"} <= set(documented), documented
    for name, params in documented.items():
        assert CALLBACK_NAMES.get(name) == params, (name, params)
    cls = adapter_class(trt.IOutputAllocator)
    for name, params in CALLBACK_NAMES.items():
        signature = inspect.signature(getattr(cls, name))
        assert tuple(signature.parameters)[1:] == params, name


def test_adapter_is_a_real_ioutputallocator() -> None:
    """The adapter subclasses the real pybind11 class and forwards to a session allocator (no
    context is made: that needs a GPU)."""
    from edgert.engine._trt_allocator import AllocatorState, adapter_class

    alloc, state = _HostAllocator(), AllocatorState()
    adapter = adapter_class(trt.IOutputAllocator)("idx", alloc, state)
    assert isinstance(adapter, trt.IOutputAllocator)
    first = adapter.reallocate_output_async("idx", 0, 100, 256, 0)
    assert first % 256 == 0
    assert first
    assert adapter.reallocate_output("idx", 0, 50, 256) == first  # grow-only: reused
    adapter.notify_shape("idx", trt.Dims([25]))
    assert alloc.shapes == {"idx": (25,)}
    assert state.errors == []
