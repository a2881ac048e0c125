"""KernelExecutable: the bundled control policy as real CUDA kernels, behind the Executable seam.

Where no TensorRT engine exists (no builder on this machine, CI-built GPU hosts), ``edgert bench``,
the GPU tests and the benchmarks still need something a session can drive that really runs on the
GPU. This executable compiles the multilayer perceptron of :mod:`edgert.models` with NVRTC and
behaves like a TensorRT execution context: named tensors (``obs`` in, ``actions`` out), a dynamic
batch dimension with a (min, opt, max) profile, raw tensor addresses, ``execute_async_v3`` on a
stream, and CUDA graph capture. Its outputs match :func:`edgert.models.policy_reference`.

Two kernel plans:

* ``fused=True`` (default): one launch for the whole network. Each batch row is spread over
  ``SPLIT`` blocks that each compute the first layer and a slice of the second; the last block
  of a row to finish (an atomic counter, reset by that block) computes the output layer.
* ``fused=False``: one plain ``y = relu(x @ W + b)`` kernel per layer, the simplest correct form.

Example::

    from edgert.kernels import KernelExecutable
    with KernelExecutable() as exe, InferenceSession(exe) as session:
        actions = session.infer({"obs": obs})["actions"]
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert._executable import Placement, ProfileShape, TensorMode, TensorSpec
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError

__all__ = ["KernelExecutable"]

_THREADS = 256
_SPLIT = 8
_LINEAR_THREADS = 128

_SOURCE = r"""
#define IN {n_in}
#define H1 {h1}
#define H2 {h2}
#define OUT {n_out}
#define THREADS {threads}
#define SPLIT {split}
#define CHUNK2 ((H2 + SPLIT - 1) / SPLIT)
#define KS2 (THREADS / CHUNK2)
#define KLEN2 ((H1 + KS2 - 1) / KS2)
#define KS3 (THREADS / OUT)
#define KLEN3 ((H2 + KS3 - 1) / KS3)

extern "C" __global__ void linear(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, float* __restrict__ y,
                                  int batch, int n_in, int n_out, int relu)
{{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int row = blockIdx.y;
    if (j >= n_out || row >= batch) return;
    const float* xr = x + (size_t)row * n_in;
    float acc = 0.0f;
    for (int k = 0; k < n_in; ++k) acc = fmaf(xr[k], w[(size_t)k * n_out + j], acc);
    acc += b[j];
    y[(size_t)row * n_out + j] = relu ? fmaxf(acc, 0.0f) : acc;
}}

extern "C" __global__ void __launch_bounds__(THREADS)
mlp3(const float* __restrict__ x, const float* __restrict__ w1, const float* __restrict__ b1,
     const float* __restrict__ w2, const float* __restrict__ b2, const float* __restrict__ w3,
     const float* __restrict__ b3, float* __restrict__ y, float* h2buf,
     unsigned int* counters, int batch)
{{
    __shared__ float xs[IN];
    __shared__ float h1[H1];
    __shared__ float h2[H2];
    __shared__ float red[THREADS];
    __shared__ bool last;
    const int row = blockIdx.y;
    const int split = blockIdx.x;
    const int t = threadIdx.x;
    if (row >= batch) return;
    const float* xr = x + (size_t)row * IN;
    for (int k = t; k < IN; k += THREADS) xs[k] = xr[k];
    __syncthreads();
    for (int j = t; j < H1; j += THREADS) {{
        // Every weight load is issued before the first FMA needs one: the layer costs about
        // one memory round trip instead of one per unrolled group.
        float a = 0.0f;
        #pragma unroll
        for (int k = 0; k < IN; ++k) a = fmaf(xs[k], __ldg(&w1[k * H1 + j]), a);
        h1[j] = fmaxf(a + b1[j], 0.0f);
    }}
    __syncthreads();
    {{
        const int c = t % CHUNK2, g = t / CHUNK2, j = split * CHUNK2 + c;
        float a = 0.0f;
        if (g < KS2 && j < H2) {{
            const int k0 = g * KLEN2;
            #pragma unroll
            for (int kk = 0; kk < KLEN2; ++kk) {{
                const int k = k0 + kk;
                if (k < H1) a = fmaf(h1[k], __ldg(&w2[k * H2 + j]), a);
            }}
        }}
        red[t] = a;
        __syncthreads();
        if (t < CHUNK2 && j < H2) {{
            float s = 0.0f;
            for (int q = 0; q < KS2; ++q) s += red[q * CHUNK2 + t];
            h2buf[(size_t)row * H2 + j] = fmaxf(s + b2[j], 0.0f);
        }}
    }}
    __threadfence();
    __syncthreads();
    if (t == 0) last = (atomicAdd(&counters[row], 1u) == SPLIT - 1);
    __syncthreads();
    if (!last) return;
    for (int k = t; k < H2; k += THREADS) h2[k] = __ldcg(&h2buf[(size_t)row * H2 + k]);
    __syncthreads();
    {{
        const int o = t % OUT, g = t / OUT;
        float a = 0.0f;
        if (g < KS3) {{
            const int k0 = g * KLEN3;
            #pragma unroll
            for (int kk = 0; kk < KLEN3; ++kk) {{
                const int k = k0 + kk;
                if (k < H2) a = fmaf(h2[k], __ldg(&w3[k * OUT + o]), a);
            }}
        }}
        red[t] = a;
        __syncthreads();
        if (t < OUT) {{
            float s = 0.0f;
            for (int q = 0; q < KS3; ++q) s += red[q * OUT + t];
            y[(size_t)row * OUT + t] = s + b3[t];
        }}
    }}
    if (t == 0) counters[row] = 0u;
}}
"""


def _bundled_layers() -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    from edgert.models import WEIGHT_NAMES, load_policy_weights

    w = load_policy_weights()
    return [(w[WEIGHT_NAMES[i]], w[WEIGHT_NAMES[i + 1]]) for i in range(0, len(WEIGHT_NAMES), 2)]


def _layers_from(weights: Mapping[str, npt.ArrayLike]
                 ) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    from edgert.models import WEIGHT_NAMES

    try:
        arrays = [np.ascontiguousarray(weights[n], dtype=np.float32) for n in WEIGHT_NAMES]
    except KeyError as err:
        raise InvalidArgumentError(f"weights lack {err.args[0]!r}",
                                   hint=f"pass all of {', '.join(WEIGHT_NAMES)}") from None
    return [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)]


def _release(owned: list[Any]) -> None:
    for obj in reversed(owned):
        obj.close()
    owned.clear()


class KernelExecutable(Owner):
    """The bundled MLP as NVRTC-compiled CUDA kernels, shaped like a TensorRT context.

    Args:
        weights: ``fc1.weight`` ... ``fc3.bias`` arrays (weights stored ``(in, out)``); default
            the bundled policy's.
        device: The CUDA device.
        fused: One kernel for the whole network (default), or one per layer.
        max_batch: The profile's largest batch; scratch memory is sized for it.
        input_name: Name of the input tensor.
        output_name: Name of the output tensor.

    Raises:
        NotSupportedError: No CUDA device, or NVRTC is unusable.
        InvalidArgumentError: Weights with inconsistent shapes, or a bad ``max_batch``.
        CudaError: Compilation, allocation or the weight upload failed.
    """

    def __init__(self, weights: Mapping[str, npt.ArrayLike] | None = None, *, device: int = 0,
                 fused: bool = True, max_batch: int | None = None, input_name: str | None = None,
                 output_name: str | None = None) -> None:
        from edgert.cuda import KernelArgs, compile_module, require
        from edgert.memory import DeviceBuffer
        from edgert.models import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

        require(device)
        layers = _bundled_layers() if weights is None else _layers_from(weights)
        dims = [layers[0][0].shape[0]]
        for w, b in layers:
            if w.ndim != 2 or w.shape[0] != dims[-1] or b.shape != (w.shape[1],):
                raise InvalidArgumentError(
                    f"layer weights do not chain: {[(w.shape, b.shape) for w, b in layers]}")
            dims.append(w.shape[1])
        n_in, h1, h2, n_out = dims
        max_batch = MAX_BATCH if max_batch is None else max_batch
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not \
                1 <= max_batch <= 65535:
            raise InvalidArgumentError(f"max_batch must be an int in 1..65535, not {max_batch!r}")
        if fused and (-(-h2 // _SPLIT) > _THREADS or n_out > _THREADS):
            raise InvalidArgumentError("these layer sizes do not fit the fused kernel",
                                       hint="use fused=False")
        self._in_name = input_name or INPUT_NAME
        self._out_name = output_name or OUTPUT_NAME
        self._device = device
        self._fused = fused
        self._max_batch = max_batch
        self._dims = (n_in, n_out)
        self._owned: list[Any] = []
        self._own(functools.partial(_release, self._owned), "KernelExecutable")
        try:
            source = _SOURCE.format(n_in=n_in, h1=h1, h2=h2, n_out=n_out, threads=_THREADS,
                                    split=_SPLIT)
            module = compile_module(source, ["linear", "mlp3"], device=device,
                                    program_name="edgert_mlp.cu")
            self._owned.append(module)

            def upload(arr: npt.NDArray[Any]) -> int:
                buf = DeviceBuffer(max(arr.nbytes, 4), device=device)
                self._owned.append(buf)
                buf.copy_from(np.ascontiguousarray(arr))
                return buf.ptr

            def scratch(nbytes: int) -> int:
                buf = DeviceBuffer(nbytes, device=device)
                self._owned.append(buf)
                buf.fill(0)
                return buf.ptr

            params = [(upload(w), upload(b)) for w, b in layers]
        except BaseException:
            self.close()
            raise
        self._batch = 1
        self._launches: list[tuple[Any, tuple[int, int, int], tuple[int, int, int], Any]] = []
        # Argument index of the input/output pointer and of the batch, per launch.
        self._in_slots: list[int] = []
        self._out_slots: list[int] = []
        if fused:
            h2buf = scratch(max_batch * h2 * 4)
            counters = scratch(max_batch * 4)
            args = KernelArgs(["ptr"] * 10 + ["i32"],
                              [0, params[0][0], params[0][1], params[1][0], params[1][1],
                               params[2][0], params[2][1], 0, h2buf, counters, 1])
            self._launches.append((module.kernel("mlp3"), (_SPLIT, 1, 1), (_THREADS, 1, 1), args))
            self._in_slots, self._out_slots = [0], [7]
        else:
            acts = [scratch(max_batch * h1 * 4), scratch(max_batch * h2 * 4)]
            kernel = module.kernel("linear")
            sizes = [(n_in, h1), (h1, h2), (h2, n_out)]
            for i, ((wp, bp), (k, n)) in enumerate(zip(params, sizes, strict=True)):
                src = 0 if i == 0 else acts[i - 1]
                dst = 0 if i == 2 else acts[i]
                args = KernelArgs(["ptr", "ptr", "ptr", "ptr", "i32", "i32", "i32", "i32"],
                                  [src, wp, bp, dst, 1, k, n, int(i < 2)])
                grid = (-(-n // _LINEAR_THREADS), 1, 1)
                self._launches.append((kernel, grid, (_LINEAR_THREADS, 1, 1), args))
            self._in_slots, self._out_slots = [0], [3]
        self._plan: list[tuple[Any, tuple[int, int, int], tuple[int, int, int], Any]] = []
        self._raw_plan: list[tuple[Any, int, int, int, int]] = []
        from edgert.cuda._api import driver

        self._cu_launch = driver().cuLaunchKernel
        self._set_batch(1)
        self._addresses: dict[str, int] = {}
        self._ready = False
        self._streams: dict[int, Any] = {}
        self._errors: collections.deque[str] = collections.deque(maxlen=32)
        self._tensors = (
            TensorSpec(name=self._in_name, mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                       shape=(-1, n_in), trt_dtype_name="FLOAT",
                       profiles=(ProfileShape((1, n_in), (1, n_in), (max_batch, n_in)),)),
            TensorSpec(name=self._out_name, mode=TensorMode.OUTPUT, dtype=np.dtype(np.float32),
                       shape=(-1, n_out), trt_dtype_name="FLOAT"),
        )

    # -- the Executable protocol ------------------------------------------------------------

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """``obs`` (batch, 48) then ``actions`` (batch, 12), float32."""
        return self._tensors

    @property
    def placement(self) -> Placement:
        """Tensors live in device memory (or mapped host memory, through its device address)."""
        return Placement.DEVICE

    @property
    def graph_capturable(self) -> bool:
        """Plain kernel launches capture into CUDA graphs."""
        return True

    @property
    def fused(self) -> bool:
        """Whether the whole network is one kernel."""
        return self._fused

    def _fail(self, message: str) -> bool:
        self._errors.append(message)
        return False

    def last_errors(self) -> tuple[str, ...]:
        """Why recent calls returned False, oldest first; clears the list."""
        lines = tuple(self._errors)
        self._errors.clear()
        return lines

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Set the batch; False (reason in :meth:`last_errors`) outside ``1..max_batch``."""
        self._check_open()
        dims = tuple(int(d) for d in shape)
        n_in = self._dims[0]
        if name != self._in_name:
            return self._fail(f"set_input_shape: {name!r} is not an input "
                              f"(the input is {self._in_name!r})")
        if len(dims) != 2 or dims[1] != n_in or not 1 <= dims[0] <= self._max_batch:
            return self._fail(f"set_input_shape: {dims} is outside (1..{self._max_batch}, "
                              f"{n_in})")
        self._batch = dims[0]
        self._set_batch(dims[0])
        return True

    def _set_batch(self, batch: int) -> None:
        plan = []
        for kernel, grid, block, args in self._launches:
            args[len(args) - 1 if self._fused else 4] = batch
            plan.append((kernel, (grid[0], batch, 1), block, args))
        self._plan = plan
        # What cuLaunchKernel takes, prepared once: the launch is all a TensorRT enqueue costs
        # in C++, so the Python here should cost no more than a hand-written launch.
        self._raw_plan = [(k.handle, g[0], g[1], b[0], a.address) for k, g, b, a in plan]

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        """The current shape of ``obs`` or ``actions``."""
        self._check_open()
        if name == self._in_name:
            return (self._batch, self._dims[0])
        if name == self._out_name:
            return (self._batch, self._dims[1])
        self._fail(f"get_tensor_shape: no tensor named {name!r}")
        return ()

    def set_tensor_address(self, name: str, address: int) -> bool:
        """Bind ``obs`` or ``actions`` to device-visible memory at ``address``."""
        self._check_open()
        if name == self._in_name:
            kernel_args, slots = self._launches[0][3], self._in_slots
        elif name == self._out_name:
            kernel_args, slots = self._launches[-1][3], self._out_slots
        else:
            return self._fail(f"set_tensor_address: no tensor named {name!r}")
        for i in slots:
            kernel_args[i] = int(address)
        self._addresses[name] = int(address)
        self._ready = len(self._addresses) == 2
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Enqueue the network on the stream; False if an address is unset or a launch fails."""
        if self._owner_closed:
            self._check_open()
        if not self._ready:
            return self._fail("execute_async_v3: set the address of every tensor first")
        raw = self._streams.get(stream_handle)
        if raw is None:
            from edgert.cuda._api import runtime

            raw = self._streams[stream_handle] = runtime().cudaStream_t(
                init_value=stream_handle)
        launch = self._cu_launch
        for func, gx, gy, bx, args in self._raw_plan:
            err = launch(func, gx, gy, 1, bx, 1, 1, 0, raw, args, 0)[0]
            if err:
                return self._fail(f"execute_async_v3: cuLaunchKernel failed with {err!r}")
        return True

    def close(self) -> None:
        """Free the compiled module, weights and scratch memory; idempotent."""
        self._streams = {}
        super().close()
