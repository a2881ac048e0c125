"""GPU tier: aliasing and outputs known only at run time, on the device path.

Two small device executables, shaped like TensorRT contexts, make the cases checkable against a
numpy reference:

* ``FlipRows`` reverses the rows of its input with one device-to-device copy per row: run in
  place (input bound onto the output buffer) it corrupts the second half, so an aliased input
  that reaches the executable unstaged fails the comparison.
* ``DeviceNonzero`` writes ``flatnonzero(x)`` through the session's output allocator the way
  TensorRT does for a data-dependent output: memory asked for inside the enqueue (the upper
  bound), the shape reported before the enqueue returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edgert import OutputAllocator, Placement, ProfileShape, TensorSpec

pytestmark = pytest.mark.gpu

ROWS, COLS = 400, 256  # 400 KiB: above the size under which inputs are always staged


def _rt() -> Any:
    from edgert.cuda._api import runtime

    return runtime()


def _check(err: Any) -> None:
    assert not err, f"CUDA error {err!r}"


class FlipRows:
    """x: float32[n, COLS] -> y = x[::-1], one cudaMemcpyAsync per row."""

    def __init__(self) -> None:
        profile = ProfileShape((1, COLS), (ROWS, COLS), (ROWS, COLS))
        self.tensors = (
            TensorSpec(name="x", mode="input", dtype=np.float32, shape=(-1, COLS),
                       profiles=(profile,)),
            TensorSpec(name="y", mode="output", dtype=np.float32, shape=(-1, COLS)),
        )
        self.placement = Placement.DEVICE
        self.graph_capturable = True
        self.rows = ROWS
        self.addr: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        self.rows = int(shape[0])
        return True

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        return (self.rows, COLS)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addr[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        rt = _rt()
        stream = rt.cudaStream_t(init_value=stream_handle)
        row = 4 * COLS
        kind = rt.cudaMemcpyKind.cudaMemcpyDefault
        x, y = self.addr["x"], self.addr["y"]
        for i in range(self.rows):
            src = x + (self.rows - 1 - i) * row
            if rt.cudaMemcpyAsync(y + i * row, src, row, kind, stream)[0]:
                return False
        return True

    def close(self) -> None:
        pass


class DeviceNonzero:
    """x: float32[8] -> idx: int64[-1] = flatnonzero(x), through an OutputAllocator."""

    def __init__(self) -> None:
        self.tensors = (
            TensorSpec(name="x", mode="input", dtype=np.float32, shape=(8,)),
            TensorSpec(name="idx", mode="output", dtype=np.int64, shape=(-1,)),
        )
        self.placement = Placement.DEVICE
        self.graph_capturable = True  # the session must still never capture it
        self.addr: dict[str, int] = {}
        self.alloc: OutputAllocator | None = None
        self.memory = 0
        self.host = np.zeros(8, np.float32)
        self.result = np.zeros(8, np.int64)

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        return True

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        return (8,) if name == "x" else (-1,)

    def set_tensor_address(self, name: str, address: int) -> bool:
        assert name == "x", "an allocated output must never be bound by address"
        self.addr[name] = int(address)
        return True

    def set_output_allocator(self, name: str, allocator: OutputAllocator) -> bool:
        self.alloc = allocator
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        rt = _rt()
        stream = rt.cudaStream_t(init_value=stream_handle)
        kind = rt.cudaMemcpyKind.cudaMemcpyDefault
        assert self.alloc is not None
        # As TensorRT: the upper bound is asked for during the enqueue...
        ptr = self.alloc.reallocate_output("idx", self.memory, 8 * 8, 256)
        if not ptr:
            return False
        self.memory = ptr
        _check(rt.cudaMemcpyAsync(self.host.ctypes.data, self.addr["x"], 32, kind, stream)[0])
        _check(rt.cudaStreamSynchronize(stream)[0])
        found = np.flatnonzero(self.host)
        self.result[:found.size] = found
        if found.size:
            _check(rt.cudaMemcpyAsync(ptr, self.result.ctypes.data, 8 * found.size, kind,
                                      stream)[0])
            _check(rt.cudaStreamSynchronize(stream)[0])
        # ...and the real shape reported before it returns.
        self.alloc.notify_shape("idx", (int(found.size),))
        return True

    def close(self) -> None:
        pass


def _to_host(view: Any, dtype: Any) -> np.ndarray:
    rt = _rt()
    out = np.empty(view.shape, dtype)
    if out.nbytes:
        _check(rt.cudaMemcpy(out.ctypes.data, view.ptr, out.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)[0])
    return out


@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("outputs", ["view", "device"])
@pytest.mark.parametrize("io", ["copy", "zero_copy"])
def test_output_fed_back_is_staged_not_read_while_written(io: str, outputs: str,
                                                          slots: int) -> None:
    from edgert.session import InferenceSession

    x = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32)
    with InferenceSession(FlipRows(), io=io, outputs=outputs, slots=slots,
                          cuda_graph="auto") as s:
        want = x
        out = s.infer({"x": x})["y"]
        for _ in range(5):
            want = want[::-1]
            got = out if outputs == "view" else _to_host(out, np.float32)
            np.testing.assert_array_equal(got, want)
            out = s.infer({"x": out})["y"]  # the session's own buffer, fed straight back


@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("outputs", ["copy", "view", "device"])
@pytest.mark.parametrize("io", ["copy", "zero_copy"])
def test_data_dependent_output_on_the_device(io: str, outputs: str, slots: int) -> None:
    from edgert.session import InferenceSession

    rng = np.random.default_rng(1)
    with InferenceSession(DeviceNonzero(), io=io, outputs=outputs, slots=slots,
                          cuda_graph="auto") as s:
        for _ in range(12):
            x = (rng.random(8) < 0.5).astype(np.float32)
            got = s.infer({"x": x})["idx"]
            if outputs == "device":
                got = _to_host(got, np.int64)
            np.testing.assert_array_equal(got, np.flatnonzero(x))
        pend = [(x, s.submit({"x": x})) for x in
                ((rng.random(8) < 0.5).astype(np.float32) for _ in range(slots))]
        for x, p in pend:
            got = p.result()["idx"]
            if outputs == "device":
                got = _to_host(got, np.int64)
            np.testing.assert_array_equal(got, np.flatnonzero(x))
        assert s.graph_captures == 0  # never captured: its memory may move on any run
