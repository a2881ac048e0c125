"""Outputs whose shape is known only once the model has run: the session's OutputAllocator side.

The executable here is a small host one shaped like TensorRT's context with
``set_output_allocator``: it writes ``np.flatnonzero(x)`` (a data-dependent output) through the
allocator the session registered, exactly as the OutputAllocator contract says.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edgert import InferenceSession, OutputAllocator, Placement, TensorSpec
from edgert.errors import InferenceError, NotSupportedError


class NonzeroExecutable:
    """x: float32[-1] -> idx: int64[-1] = flatnonzero(x), written through an allocator."""

    def __init__(self, *, allocator: bool = True, fail_alloc: bool = False,
                 skip_notify: bool = False) -> None:
        self.tensors = (
            TensorSpec(name="x", mode="input", dtype=np.float32, shape=(-1,),
                       location="host"),
            TensorSpec(name="idx", mode="output", dtype=np.int64, shape=(-1,),
                       location="host"),
        )
        self.placement = Placement.HOST
        self.graph_capturable = False
        self.shape: tuple[int, ...] = (1,)
        self.addr: dict[str, int] = {}
        self.allocators: dict[str, OutputAllocator] = {}
        self.fail_alloc = fail_alloc
        self.skip_notify = skip_notify
        self.sizes: list[int] = []
        self.ptrs: list[int] = []
        if allocator:
            self.set_output_allocator = self._set_output_allocator

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        return self.shape if name == "x" else (-1,)

    def set_tensor_address(self, name: str, address: int) -> bool:
        assert name == "x", "an allocated output must never be bound by address"
        self.addr[name] = address
        return True

    def _set_output_allocator(self, name: str, allocator: OutputAllocator) -> bool:
        assert isinstance(allocator, OutputAllocator)
        self.allocators[name] = allocator
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        n = int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["x"]))
        out = np.flatnonzero(x).astype(np.int64)
        alloc = self.allocators["idx"]
        size = 8 * n  # the upper bound, as TensorRT asks for it
        ptr = alloc.reallocate_output("idx", 0, 0 if self.fail_alloc else size, 64)
        if self.fail_alloc:
            ptr = alloc.reallocate_output("idx", 0, 1 << 62, 64)
            return ptr != 0
        self.sizes.append(size)
        self.ptrs.append(ptr)
        ctypes.memmove(ptr, out.ctypes.data, out.nbytes)
        if not self.skip_notify:
            alloc.notify_shape("idx", out.shape)
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("slots", [1, 2])
def test_data_dependent_output_has_its_real_shape(slots: int) -> None:
    exe = NonzeroExecutable()
    rng = np.random.default_rng(0)
    with InferenceSession(exe, slots=slots) as s:
        for n in (5, 40, 3, 40, 1, 17):
            x = rng.standard_normal(n).astype(np.float32)
            x[rng.random(n) < 0.5] = 0
            got = s.infer({"x": x})["idx"]
            np.testing.assert_array_equal(got, np.flatnonzero(x))
            assert got.dtype == np.int64


@pytest.mark.parametrize("slots", [2, 3])
def test_allocated_output_memory_stays_put_across_slots(slots: int) -> None:
    # On the host the executable writes allocated outputs into one work buffer whatever the
    # slot: memory moving from slot to slot makes ONNX Runtime rebind on every request.
    exe = NonzeroExecutable()
    with InferenceSession(exe, slots=slots) as s:
        pending = []
        for i in range(2 * slots):
            x = np.zeros(16, np.float32)
            x[i] = 1
            pending.append((i, s.submit({"x": x})))
            if len(pending) == slots:
                for j, p in pending:
                    np.testing.assert_array_equal(p.result()["idx"], [j])
                pending.clear()
        for i in range(3):
            np.testing.assert_array_equal(s.infer({"x": np.ones(16 - i, np.float32)})["idx"],
                                          np.arange(16 - i))
        assert len(set(exe.ptrs)) == 1


def test_allocated_output_memory_only_grows() -> None:
    exe = NonzeroExecutable()
    with InferenceSession(exe, slots=1) as s:
        big = np.ones(64, np.float32)
        s.infer({"x": big})
        ptr = s._slots[0].outputs[0].host_ptr
        for n in (3, 64, 10):
            out = s.infer({"x": np.ones(n, np.float32)})["idx"]
            np.testing.assert_array_equal(out, np.arange(n))
            assert s._slots[0].outputs[0].host_ptr == ptr  # reused, not reacquired


def test_view_is_reused_while_the_shape_stays() -> None:
    exe = NonzeroExecutable()
    with InferenceSession(exe, slots=1, outputs="view") as s:
        x = np.ones(8, np.float32)
        first = s.infer({"x": x})["idx"]
        second = s.infer({"x": x})["idx"]
        assert first is second


def test_pending_results_keep_their_own_shapes() -> None:
    exe = NonzeroExecutable()
    with InferenceSession(exe, slots=2) as s:
        a = s.submit({"x": np.ones(3, np.float32)})
        b = s.submit({"x": np.ones(7, np.float32)})
        np.testing.assert_array_equal(a.result()["idx"], np.arange(3))
        np.testing.assert_array_equal(b.result()["idx"], np.arange(7))


def test_executable_without_allocator_is_refused_with_the_way_out() -> None:
    with pytest.raises(NotSupportedError, match="set_output_allocator") as info:
        InferenceSession(NonzeroExecutable(allocator=False))
    assert "OutputAllocator" in (info.value.hint or "")


@pytest.mark.parametrize("slots", [1, 2])
def test_allocator_failure_is_an_inference_error_and_session_stays_usable(slots: int) -> None:
    exe = NonzeroExecutable(fail_alloc=True)
    with InferenceSession(exe, slots=slots) as s:
        with pytest.raises(InferenceError) as info:
            s.infer({"x": np.ones(4, np.float32)})
        assert "max_bytes" in str(info.value)  # the pool could not serve it: says so
        exe.fail_alloc = False
        np.testing.assert_array_equal(s.infer({"x": np.ones(4, np.float32)})["idx"],
                                      np.arange(4))


@pytest.mark.parametrize("slots", [1, 2])
def test_missing_shape_notification_is_an_error_not_stale_data(slots: int) -> None:
    exe = NonzeroExecutable(skip_notify=True)
    with InferenceSession(exe, slots=slots) as s:
        exe.skip_notify = False
        s.infer({"x": np.ones(4, np.float32)})
        exe.skip_notify = True  # a shape left over from the last request must not be used
        with pytest.raises(InferenceError, match="shape"):
            s.infer({"x": np.ones(4, np.float32)})


def test_allocator_callbacks_never_raise() -> None:
    exe = NonzeroExecutable()
    with InferenceSession(exe, slots=1) as s:
        alloc: Any = exe.allocators["idx"]
        assert alloc.reallocate_output("nope", 0, 8, 64) == 0
        alloc.notify_shape("nope", (1,))
        with pytest.raises(InferenceError, match="nope") as info:
            s.infer({"x": np.ones(2, np.float32)})
        assert "contract" in (info.value.hint or "")  # not a pool budget problem


class _NotifyThenFail(NonzeroExecutable):
    """Reports a shape for ``idx`` and then fails the run (a later layer failed)."""

    failing = False

    def execute_async_v3(self, stream_handle: int) -> bool:
        if self.failing:
            alloc = self.allocators["idx"]
            alloc.reallocate_output("idx", 0, 8 * 16, 64)
            alloc.notify_shape("idx", (7,))
            return False
        return super().execute_async_v3(stream_handle)


@pytest.mark.parametrize("slots", [1, 2])
def test_a_shape_reported_by_a_failed_run_is_never_used(slots: int) -> None:
    exe = _NotifyThenFail()
    with InferenceSession(exe, slots=slots) as s:
        x = np.zeros(16, np.float32)
        x[3] = 1
        np.testing.assert_array_equal(s.infer({"x": x})["idx"], [3])
        exe.failing = True
        with pytest.raises(InferenceError):
            s.infer({"x": x})
        exe.failing = False
        exe.skip_notify = True  # this run reports no shape: an error, not the failed run's (7,)
        with pytest.raises(InferenceError, match="did not report the shape"):
            s.infer({"x": x})
