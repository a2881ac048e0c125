"""The TensorRT executable's output allocators (data-dependent output shapes), on the fake.

The allocator here is the test's own (grow-only host buffers): it stands for a session's, so the
executable's adapter is checked on its own terms -- what TensorRT calls, what reaches the
session's allocator, and how failures come back.
"""

from __future__ import annotations

import ctypes
import gc
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import edgert.cuda
from edgert import OutputAllocator
from edgert.engine import Engine, TensorRTExecutable
from edgert.errors import InvalidArgumentError, NotSupportedError, ResourceClosedError
from edgert.testing import fake_tensorrt as ft

N = 8


class GrowOnly:
    """A session-like allocator: one grow-only host buffer per output, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.buffers: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.grown = 0

    def reallocate_output(self, tensor_name: str, memory: int, size: int,
                          alignment: int) -> int:
        self.calls.append(("reallocate", tensor_name, memory, size, alignment))
        buf = self.buffers.get(tensor_name)
        if buf is None or buf.nbytes < size + alignment:
            buf = self.buffers[tensor_name] = np.zeros(max(size, 64) + alignment, np.uint8)
            self.grown += 1
        address = buf.ctypes.data
        return address + (-address) % alignment

    def notify_shape(self, tensor_name: str, shape: Sequence[int]) -> None:
        assert type(shape) is tuple
        assert all(type(d) is int for d in shape)
        self.calls.append(("notify", tensor_name, shape))
        self.shapes[tensor_name] = shape

    def result(self, name: str, dtype: Any, address: int) -> np.ndarray:
        shape = self.shapes[name]
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_char * nbytes).from_address(address)
        return np.frombuffer(raw, dtype).reshape(shape).copy()


def _plan(version: str = ft.__version__) -> bytes:
    return ft.make_plan(inputs=[ft.FakeTensor("x", "INT32", (N,))],
                        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(N,))],
                        function="nonzero", version=version)


def _run(x: TensorRTExecutable, alloc: GrowOnly, data: np.ndarray) -> np.ndarray:
    assert x.set_tensor_address("x", data.ctypes.data)
    assert x.execute_async_v3(0), x.last_errors()
    return alloc.result("idx", np.int32, x.raw_context.get_tensor_address("idx"))


@pytest.mark.parametrize("version", ["8.6.1.6", "10.8.0.43", "11.4.0.106"])
def test_nonzero_through_the_allocator_on_every_version(version: str) -> None:
    module = ft.make_module(version=version)
    rng = np.random.default_rng(1)
    with Engine.load(_plan(version), trt_module=module) as engine, \
            engine.create_context() as x:
        assert isinstance(x, TensorRTExecutable)
        assert x.data_dependent_outputs == ("idx",)
        alloc = GrowOnly()
        assert isinstance(alloc, OutputAllocator)
        assert x.set_output_allocator("idx", alloc)
        adapter = x.raw_context.get_output_allocator("idx")
        assert isinstance(adapter, module.IOutputAllocator)
        last = 0
        for step in range(6):
            data = (rng.random(N) < 0.5).astype(np.int32) * (step + 1)
            np.testing.assert_array_equal(_run(x, alloc, data), np.flatnonzero(data))
            kind, name, memory, size, alignment = alloc.calls[-2]
            assert (kind, name) == ("reallocate", "idx")
            assert memory == last  # the address it returned last time (0 the first time)
            assert size == max(4 * np.count_nonzero(data), 1)
            assert alignment == 256
            assert alloc.calls[-1] == ("notify", "idx", (int(np.count_nonzero(data)),))
            last = x.raw_context.get_tensor_address("idx")
            # One adapter for the output's whole life, never one per run.
            assert x.raw_context.get_output_allocator("idx") is adapter
        assert len(alloc.calls) == 12
        assert alloc.grown == 1  # grow-only: 64 bytes cover every run here
        assert x.last_errors() == ()


def test_registration_makes_any_context_uncapturable(monkeypatch: pytest.MonkeyPatch) -> None:
    module = ft.make_module()
    module.EDGERT_REQUIRES_CUDA = True  # type: ignore[attr-defined]
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: True)
    monkeypatch.setattr(edgert.cuda, "set_device", lambda device: None)
    with Engine.load(ft.bundled_policy_plan(), trt_module=module) as engine, \
            engine.create_context() as x:
        assert x.graph_capturable
        assert x.data_dependent_outputs == ()
        ctx = x.raw_context
        assert x.execute_async_v3.__self__ is ctx  # type: ignore[attr-defined]
        alloc = GrowOnly()
        assert x.set_output_allocator("actions", alloc)  # any output may have one
        assert not x.graph_capturable
        obs = np.ones((2, 48), np.float32)
        assert x.set_input_shape("obs", obs.shape)
        assert x.set_tensor_address("obs", obs.ctypes.data)
        assert x.execute_async_v3(0)
        assert alloc.shapes["actions"] == (2, 12)
        assert x.set_output_allocator("actions", None)
        assert ctx.get_output_allocator("actions") is None


def test_another_allocator_retargets_the_same_adapter() -> None:
    with Engine.load(_plan(), trt_module=ft) as engine, engine.create_context() as x:
        first, second = GrowOnly(), GrowOnly()
        assert x.set_output_allocator("idx", first)
        adapter = x.raw_context.get_output_allocator("idx")
        data = np.arange(N, dtype=np.int32)
        _run(x, first, data)
        assert x.set_output_allocator("idx", second)
        assert x.raw_context.get_output_allocator("idx") is adapter
        np.testing.assert_array_equal(_run(x, second, data), np.arange(1, N))
        assert len(first.calls) == 2
        assert second.calls[0][2] == 0  # a new allocator starts from no memory


class Broken(GrowOnly):
    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault

    def reallocate_output(self, tensor_name: str, memory: int, size: int,
                          alignment: int) -> int:
        address = super().reallocate_output(tensor_name, memory, size, alignment)
        if self.fault == "raise":
            raise MemoryError("pool exhausted")
        return {"zero": 0, "misaligned": address + 4}.get(self.fault, address)

    def notify_shape(self, tensor_name: str, shape: Sequence[int]) -> None:
        if self.fault == "notify":
            raise ValueError("no such shape class")
        super().notify_shape(tensor_name, shape)


@pytest.mark.parametrize(("fault", "words"), [
    ("raise", "raised MemoryError for 28 bytes: pool exhausted"),
    ("zero", "gave address 0x0 for 28 bytes aligned to 256: no memory"),
    ("misaligned", "misaligned"),
    ("notify", "raised ValueError on its shape (7,): no such shape class"),
])
def test_allocator_failures_fail_the_run_with_the_reason(
        fault: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Engine.load(_plan(), trt_module=ft) as engine, engine.create_context() as x:
        alloc = Broken(fault)
        assert x.set_output_allocator("idx", alloc)
        data = np.arange(N, dtype=np.int32)
        assert x.set_tensor_address("x", data.ctypes.data)
        # A failed notify_shape does not fail TensorRT's enqueue; the executable's must.
        assert x.execute_async_v3(0) is False
        errors = x.last_errors()
        assert words in errors[0], errors
        if fault != "notify":
            assert "OutOfMemory" in errors[-1]  # TensorRT's own line follows
        assert x.last_errors() == ()
        assert capsys.readouterr().err == ""  # nothing leaked to the trampoline's stderr
        alloc.fault = ""  # the context recovers once the allocator does
        assert x.execute_async_v3(0)
        assert alloc.shapes["idx"] == (N - 1,)


def test_refusals() -> None:
    with Engine.load(_plan(), trt_module=ft) as engine, engine.create_context() as x:
        assert not x.set_output_allocator("x", GrowOnly())
        assert "not an output" in x.last_errors()[-1]
        with pytest.raises(InvalidArgumentError, match="notify_shape"):
            x.set_output_allocator("idx", object())  # type: ignore[arg-type]
    module = ft.make_module()
    del module.IOutputAllocator
    with Engine.load(_plan(), trt_module=module) as engine, engine.create_context() as x, \
            pytest.raises(NotSupportedError, match="IOutputAllocator"):
        x.set_output_allocator("idx", GrowOnly())


def test_adapters_die_with_the_context() -> None:
    engine = Engine.load(_plan(), trt_module=ft)
    x = engine.create_context()
    alloc = GrowOnly()
    assert x.set_output_allocator("idx", alloc)
    adapter = weakref.ref(x.raw_context.get_output_allocator("idx"))
    x.close()
    with pytest.raises(ResourceClosedError):
        x.execute_async_v3(0)
    with pytest.raises(ResourceClosedError):
        x.set_output_allocator("idx", alloc)
    gc.collect()
    assert adapter() is None
    engine.close()


def test_no_module_state_is_shared_between_executables() -> None:
    with Engine.load(_plan(), trt_module=ft) as engine, engine.create_context() as a, \
            engine.create_context() as b:
        ga, gb = GrowOnly(), GrowOnly()
        assert a.set_output_allocator("idx", ga)
        assert b.set_output_allocator("idx", gb)
        one = np.zeros(N, np.int32)
        one[3] = 1
        np.testing.assert_array_equal(_run(a, ga, one), [3])
        np.testing.assert_array_equal(_run(b, gb, np.ones(N, np.int32)), np.arange(N))
        assert ga.shapes["idx"] == (1,)


def test_an_executable_left_unclosed_is_freed_without_the_cycle_collector() -> None:
    """The checked enqueue must not tie the executable into a reference cycle: a dropped
    executable releases its context (and the adapters TensorRT holds) at once."""
    with Engine.load(_plan(), trt_module=ft) as engine:
        x = engine.create_context()
        assert x.set_output_allocator("idx", GrowOnly())
        adapter = weakref.ref(x.raw_context.get_output_allocator("idx"))
        context = weakref.ref(x.raw_context)
        gc.disable()
        try:
            del x
            assert context() is None
            assert adapter() is None
        finally:
            gc.enable()


@pytest.mark.parametrize("where", ["reallocate", "notify"])
def test_keyboard_interrupt_in_a_callback_is_raised_after_the_enqueue(
        where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT's trampoline would print and swallow it; the executable raises it once the
    enqueue is back in Python, and the context stays usable."""

    class Interrupted(GrowOnly):
        armed = True

        def reallocate_output(self, tensor_name: str, memory: int, size: int,
                              alignment: int) -> int:
            if where == "reallocate" and self.armed:
                self.armed = False
                raise KeyboardInterrupt
            return super().reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Sequence[int]) -> None:
            if where == "notify" and self.armed:
                self.armed = False
                raise KeyboardInterrupt
            super().notify_shape(tensor_name, shape)

    with Engine.load(_plan(), trt_module=ft) as engine, engine.create_context() as x:
        alloc = Interrupted()
        assert x.set_output_allocator("idx", alloc)
        data = np.arange(N, dtype=np.int32)
        assert x.set_tensor_address("x", data.ctypes.data)
        with pytest.raises(KeyboardInterrupt):
            x.execute_async_v3(0)
        assert "raised KeyboardInterrupt" in x.last_errors()[0]
        assert capsys.readouterr().err == ""
        np.testing.assert_array_equal(_run(x, alloc, data), np.arange(1, N))
