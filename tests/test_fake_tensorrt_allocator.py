"""The fake TensorRT's output allocators: called on every enqueue exactly as TensorRT's bindings
call an ``IOutputAllocator`` (which callback each version calls, what it is given, failures)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest
from _trt_helpers import Collect
from _trt_helpers import bind as _bind
from _trt_helpers import runtime as _runtime

from edgert.testing import fake_tensorrt as ft


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
        if isinstance(self.result, BaseException):
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


def test_even_a_keyboard_interrupt_is_swallowed_as_by_the_trampoline(
        capsys: pytest.CaptureFixture[str]) -> None:
    ctx, log = _nonzero_context()
    assert ctx.set_output_allocator("idx", Failing(KeyboardInterrupt()))
    _bind(ctx, "x", np.ones(8, np.int32))
    assert ctx.execute_async_v3(0) is False
    assert "KeyboardInterrupt" in capsys.readouterr().err
    assert "no memory" in log.errors()[-1]
