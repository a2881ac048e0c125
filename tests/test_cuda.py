"""The CUDA layer: behaviour without a GPU (here, for real) and on a GPU (the gpu tier)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import edgert
from edgert import cuda
from edgert.cuda._api import check, runtime


def test_check_returns_values_and_raises_named_errors() -> None:
    rt = runtime()
    ok = rt.cudaError_t.cudaSuccess
    assert check((ok,)) is None
    assert check((ok, 7)) == 7
    assert check((ok, 1, 2)) == (1, 2)
    with pytest.raises(edgert.CudaError) as info:
        check((rt.cudaError_t.cudaErrorInvalidValue, None), call="cudaMemcpyAsync")
    err = info.value
    assert err.code == 1
    assert err.name == "cudaErrorInvalidValue"
    text = str(err)
    assert text.startswith("cudaErrorInvalidValue: invalid argument in cudaMemcpyAsync")
    assert "Hint:" in text


def test_errors_report_public_module_and_pickle() -> None:
    err = edgert.CudaError(2, "cudaErrorMemoryAllocation", "out of memory", call="cudaMalloc",
                           hint="free memory")
    assert type(err).__module__ == "edgert"
    assert type(err).__qualname__ == "CudaError"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is edgert.CudaError
    assert (again.code, again.name, again.call, str(again)) == (2, err.name, "cudaMalloc",
                                                               str(err))
    exhausted = edgert.PoolExhausted(10, budget_bytes=8, reserved_bytes=8, in_use_bytes=8)
    assert isinstance(exhausted, MemoryError)
    assert "budget 8" in str(pickle.loads(pickle.dumps(exhausted)))


def test_every_public_error_derives_from_edgerterror() -> None:
    for name in edgert.errors.__all__:
        cls = getattr(edgert, name)
        assert issubclass(cls, edgert.EdgeRTError)
        assert cls.__module__ == "edgert"


@pytest.mark.skipif(cuda.is_available(), reason="checks the no-GPU behaviour")
def test_discovery_without_a_gpu_is_truthful_and_never_raises() -> None:
    status = cuda.probe()
    assert status.available is False
    assert status.device_count == 0
    assert cuda.device_count() == 0
    assert status.reason
    assert status.reason == cuda.unavailable_reason()
    for make in (cuda.Stream, cuda.Event):
        with pytest.raises(edgert.NotSupportedError, match="CUDA is not available") as info:
            make()
        assert "edgert doctor" in str(info.value)
    with pytest.raises(edgert.NotSupportedError):
        cuda.device_properties(0)
    with pytest.raises(edgert.NotSupportedError):
        cuda.compile_module('extern "C" __global__ void k() {}', ["k"])


def test_discovery_without_cuda_python_installed() -> None:
    code = (
        "import sys; sys.modules['cuda.bindings'] = None; sys.modules['cuda'] = None\n"
        "import edgert.cuda as c\n"
        "s = c.probe(); print(s.available, s.device_count, '|', s.reason)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("False 0 |")
    assert "cuda-python is not importable" in out


def test_borrowed_stream_handles() -> None:
    class TorchLike:
        def __cuda_stream__(self) -> tuple[int, int]:
            return (0, 0xBEEF)

    src = TorchLike()
    s = cuda.Stream.from_handle(src)
    assert s.handle == 0xBEEF
    assert s.owned is False
    assert s.__cuda_stream__() == (0, 0xBEEF)
    assert cuda.as_stream_handle(s) == 0xBEEF
    assert cuda.as_stream_handle(0x10) == 0x10
    s.close()
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(edgert.ResourceClosedError):
        s.synchronize()
    with pytest.raises(edgert.InvalidArgumentError, match="not a CUDA stream"):
        cuda.as_stream_handle("stream")


def test_kernel_args_pack_and_update_in_place() -> None:
    args = cuda.KernelArgs(["ptr", "i32", "f32"], [0x1000, 3, 0.5])
    assert (args[0], args[1], args[2]) == (0x1000, 3, 0.5)
    addr = args.address
    args[1] = 9
    assert args[1] == 9
    assert args.address == addr  # updated in place: nothing re-packed for the next launch
    with pytest.raises(edgert.InvalidArgumentError):
        cuda.KernelArgs(["float"])
    with pytest.raises(edgert.InvalidArgumentError):
        cuda.KernelArgs(["ptr"], [1, 2])


# ---------------------------------------------------------------- GPU tier

_SCALE_SRC = r"""
extern "C" __global__ void scale_add(float* x, int n, float a, float b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a + b;
}
"""


def _alloc(nbytes: int) -> tuple[int, int]:
    rt = runtime()
    dptr = check(rt.cudaMalloc(nbytes), call="cudaMalloc")
    hptr = check(rt.cudaHostAlloc(nbytes, rt.cudaHostAllocDefault), call="cudaHostAlloc")
    return int(dptr), int(hptr)


def _free(dptr: int, hptr: int) -> None:
    rt = runtime()
    check(rt.cudaFree(dptr))
    check(rt.cudaFreeHost(hptr))


def _host_array(hptr: int, n: int) -> np.ndarray:
    import ctypes

    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(hptr))


@pytest.mark.gpu
def test_device_properties_are_sane() -> None:
    assert cuda.is_available()
    props = cuda.device_properties(0)
    assert props.index == 0
    assert props.name
    assert props.compute_capability >= (5, 0)
    assert props.total_memory_bytes > 1 << 30
    assert props.multiprocessor_count > 0
    lowest, highest = props.stream_priority_range
    assert highest <= lowest
    status = cuda.probe()
    assert status.driver_version is not None
    assert status.runtime_version is not None
    with pytest.raises(edgert.InvalidArgumentError):
        cuda.device_properties(cuda.device_count())


@pytest.mark.gpu
def test_streams_with_priority() -> None:
    lowest, highest = cuda.device_properties(0).stream_priority_range
    with cuda.Stream(priority="highest") as hi, cuda.Stream() as lo:
        assert hi.priority == highest
        assert lo.priority == lowest
        assert hi.handle != 0
        assert hi.handle != lo.handle
        hi.synchronize()
        assert hi.is_done()
    assert hi.closed
    if highest != lowest:
        with pytest.raises(edgert.InvalidArgumentError, match="outside"):
            cuda.Stream(priority=highest - 1)


@pytest.mark.gpu
def test_events_time_device_work() -> None:
    n = 64 << 20
    rt = runtime()
    dptr = int(check(rt.cudaMalloc(n)))
    try:
        with cuda.Stream() as s, cuda.Event(timing=True) as a, cuda.Event(timing=True) as b:
            a.record(s)
            check(rt.cudaMemsetAsync(dptr, 1, n, s.raw))
            b.record(s)
            b.synchronize()
            assert b.is_done()
            assert cuda.Event.elapsed_ms(a, b) > 0.0
            with cuda.Event() as plain:
                plain.record(s)
                with pytest.raises(edgert.InvalidArgumentError, match="timing"):
                    cuda.Event.elapsed_ms(a, plain)
    finally:
        check(rt.cudaFree(dptr))


@pytest.mark.gpu
def test_graph_capture_and_replay_of_a_copy_and_a_kernel() -> None:
    n = 1 << 16
    nbytes = n * 4
    rt = runtime()
    dptr, hptr = _alloc(nbytes)
    host = _host_array(hptr, n)
    module = cuda.compile_module(_SCALE_SRC, ["scale_add"])
    kernel = module.kernel("scale_add")
    args = cuda.KernelArgs(["ptr", "i32", "f32", "f32"], [dptr, n, 2.0, 1.0])
    try:
        with cuda.Stream() as s:
            def enqueue() -> None:
                check(rt.cudaMemcpyAsync(dptr, hptr, nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyHostToDevice, s.raw))
                kernel.launch(((n + 255) // 256, 1, 1), (256, 1, 1), args, stream=s)
                check(rt.cudaMemcpyAsync(hptr, dptr, nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, s.raw))

            with cuda.capture_graph(s, enqueue) as graph:
                assert graph.node_count == 3
                rng = np.random.default_rng()
                for _ in range(3):
                    data = rng.standard_normal(n).astype(np.float32)
                    host[:] = data
                    graph.launch(s)
                    s.synchronize()
                    np.testing.assert_allclose(host, data * 2.0 + 1.0, rtol=1e-6)
            assert graph.closed
    finally:
        module.close()
        _free(dptr, hptr)


@pytest.mark.gpu
def test_failed_capture_leaves_the_stream_usable() -> None:
    rt = runtime()
    with cuda.Stream() as s:
        with pytest.raises(edgert.CudaError), cuda.GraphCapture(s):
            # A synchronous device-wide call is illegal during capture.
            check(rt.cudaDeviceSynchronize(), call="cudaDeviceSynchronize")
        s.synchronize()
        assert s.is_done()


@pytest.mark.gpu
def test_compile_error_carries_the_compiler_log() -> None:
    with pytest.raises(edgert.CudaError, match="compilation failed") as info:
        cuda.compile_module('extern "C" __global__ void k() { undefined_symbol(); }', ["k"])
    assert "undefined_symbol" in str(info.value)
