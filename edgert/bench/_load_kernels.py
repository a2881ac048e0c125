"""The kernels of the built-in GPU loads, and the load as a TensorRT-shaped Executable.

:class:`LoadKernels` compiles the kernels (NVRTC through :mod:`edgert.cuda`; no torch, no cuBLAS),
holds their buffers (random data: zeros can run faster than real data does) and enqueues one
batch of iterations on any stream. :class:`LoadExecutable` wraps that as an
:class:`~edgert.engine.Executable`, so a load can run through an
:class:`~edgert.InferenceSession` exactly like a perception network would.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

from edgert._executable import Placement, ProfileShape, TensorMode, TensorSpec
from edgert._owner import Owner
from edgert.errors import EdgeRTError, InvalidArgumentError

__all__ = ["LoadExecutable", "LoadKernels", "LoadKind"]

_TILE = 64
_THREADS = 256

_SOURCE = r"""
#define TILE 64
#define BK 16
// C[s] = A[:, s*kc:(s+1)*kc] @ B[s*kc:(s+1)*kc, :] for every slice s: n x n row-major fp32.
// Persistent: each block pulls (slice, tile) units from *counter (zeroed before each launch)
// until all are done; each block makes exactly one grab past the end, so the counter ends at
// units + gridDim.x.
extern "C" __global__ void __launch_bounds__(256)
gemm_persistent(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                int n, int kc, unsigned int* counter) {
    __shared__ float As[BK][TILE + 4];
    __shared__ float Bs[BK][TILE];
    __shared__ unsigned int unit_sh;
    const int tiles = n / TILE;
    const unsigned int per_slice = (unsigned int)(tiles * tiles);
    const unsigned int units = per_slice * (unsigned int)(n / kc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (;;) {
        if (threadIdx.x == 0) unit_sh = atomicAdd(counter, 1u);
        __syncthreads();
        const unsigned int unit = unit_sh;
        __syncthreads();
        if (unit >= units) return;
        const int slice = (int)(unit / per_slice);
        const int t = (int)(unit % per_slice);
        const int row0 = (t / tiles) * TILE, col0 = (t % tiles) * TILE;
        float acc[4][4];
        #pragma unroll
        for (int i = 0; i < 4; ++i)
            #pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
        for (int k0 = slice * kc; k0 < (slice + 1) * kc; k0 += BK) {
            for (int i = threadIdx.x; i < TILE * BK; i += 256) {
                const int r = i / BK, c = i % BK;
                As[c][r] = A[(size_t)(row0 + r) * n + k0 + c];
            }
            for (int i = threadIdx.x; i < TILE * BK; i += 256) {
                const int r = i / TILE, c = i % TILE;
                Bs[r][c] = B[(size_t)(k0 + r) * n + col0 + c];
            }
            __syncthreads();
            #pragma unroll
            for (int k = 0; k < BK; ++k) {
                float a[4], b[4];
                #pragma unroll
                for (int i = 0; i < 4; ++i) a[i] = As[k][ty * 4 + i];
                #pragma unroll
                for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx * 4 + j];
                #pragma unroll
                for (int i = 0; i < 4; ++i)
                    #pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }
        float* Cs = C + (size_t)slice * n * n;
        #pragma unroll
        for (int i = 0; i < 4; ++i)
            #pragma unroll
            for (int j = 0; j < 4; ++j)
                Cs[(size_t)(row0 + ty * 4 + i) * n + col0 + tx * 4 + j] = acc[i][j];
    }
}

// The load executable's output: the units the last GEMM pulled, or the conv stack's first output.
extern "C" __global__ void gemm_units(const unsigned int* counter, float* y) {
    y[0] = (float)counter[0];
}
extern "C" __global__ void first_float(const float* src, float* y) {
    y[0] = src[0];
}

// y = relu(conv3x3(x, w)), padding 1, NCHW fp32, c channels in and out; one thread per output.
extern "C" __global__ void conv3x3(const float* __restrict__ x, const float* __restrict__ w,
                                   float* __restrict__ y, int n, int c, int h, int wd) {
    const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t plane = (size_t)h * wd;
    if (idx >= (size_t)n * c * plane) return;
    const int j = (int)(idx % wd), i = (int)((idx / wd) % h);
    const int k = (int)((idx / plane) % c), b = (int)(idx / (plane * c));
    float acc = 0.0f;
    for (int ci = 0; ci < c; ++ci) {
        const float* xp = x + ((size_t)b * c + ci) * plane;
        const float* wp = w + ((size_t)k * c + ci) * 9;
        for (int di = -1; di <= 1; ++di) {
            const int ii = i + di;
            if (ii < 0 || ii >= h) continue;
            for (int dj = -1; dj <= 1; ++dj) {
                const int jj = j + dj;
                if (jj < 0 || jj >= wd) continue;
                acc = fmaf(xp[ii * wd + jj], wp[(di + 1) * 3 + dj + 1], acc);
            }
        }
    }
    y[idx] = fmaxf(acc, 0.0f);
}
"""


class LoadKind(str, Enum):
    """The built-in loads."""

    GEMM = "gemm"
    """Persistent fp32 GEMM, holding every SM of its partition until it finishes."""
    CONV = "conv"
    """A stack of direct 3x3 convolutions, many short blocks per kernel."""


def _close_all(owners: list[Any]) -> None:
    for owner in reversed(owners):
        owner.close()


class LoadKernels(Owner):
    """The compiled kernels and buffers of one built-in load, sized for ``sm_count`` SMs.

    Args:
        kind: ``"gemm"`` or ``"conv"``.
        sm_count: SMs the load will run on (the persistent GEMM launches one block per free
            slot on each).
        device: The CUDA device.

    Raises:
        InvalidArgumentError: An unknown kind.
        NotSupportedError: No CUDA device, or NVRTC is missing.
        CudaError: Compiling or allocating failed.
    """

    def __init__(self, kind: LoadKind | str, *, sm_count: int, device: int = 0) -> None:
        from edgert.cuda import KernelArgs, compile_module
        from edgert.memory import DeviceBuffer

        try:
            self.kind = LoadKind(kind)
        except ValueError:
            raise InvalidArgumentError(f"unknown load {kind!r}",
                                       hint="use 'gemm', 'conv' or a model path") from None
        self.device = device
        self._owned: list[Any] = []
        self._own(functools.partial(_close_all, self._owned), "LoadKernels")
        try:
            module = compile_module(_SOURCE, ["gemm_persistent", "gemm_units", "first_float",
                                              "conv3x3"],
                                    device=device, program_name="edgert_load.cu")
            self._owned.append(module)
            rng = np.random.default_rng(0)

            def buffer(nbytes: int, *, data: bool = False, scale: float = 1.0) -> Any:
                buf = DeviceBuffer(nbytes, device=device)
                self._owned.append(buf)
                if data:
                    buf.copy_from(rng.uniform(-scale, scale, nbytes // 4).astype(np.float32))
                else:
                    buf.fill(0)
                return buf

            self._block = (_THREADS, 1, 1)
            if self.kind is LoadKind.GEMM:
                n, kc = 2048, 256
                self._kernel = module.kernel("gemm_persistent")
                self._out_kernel = module.kernel("gemm_units")
                self.grid_blocks = sm_count * self._kernel.max_blocks_per_sm(_THREADS)
                self.units = (n // _TILE) ** 2 * (n // kc)
                self.buffers = [buffer(n * n * 4, data=True), buffer(n * n * 4, data=True),
                                buffer(n * n * 4 * (n // kc)), buffer(4)]
                a, b, c, counter = self.buffers
                self._args = [KernelArgs(["ptr", "ptr", "ptr", "i32", "i32", "ptr"],
                                         [a.ptr, b.ptr, c.ptr, n, kc, counter.ptr])]
                self.per_batch = 8  # about 6 ms of work on an H200
                self.flop_per_iteration = 2.0 * n * n * n
                self.what = (f"persistent fp32 GEMM ({n // kc} x {n}x{n}x{kc}), "
                             f"{self.grid_blocks} blocks")
            else:
                batch, ch, hw, layers = 8, 64, 128, 4
                self._kernel = module.kernel("conv3x3")
                self._out_kernel = module.kernel("first_float")
                elems = batch * ch * hw * hw
                x0, x1 = buffer(elems * 4, data=True), buffer(elems * 4, data=True)
                # He-uniform: activations keep their scale through any number of layers.
                w = buffer(ch * ch * 9 * 4, data=True, scale=(6.0 / (ch * 9)) ** 0.5)
                bufs = (x0, x1)
                self.buffers = [x0, x1, w, bufs[layers % 2]]  # the last is the stack's output
                self._args = [KernelArgs(["ptr", "ptr", "ptr", "i32", "i32", "i32", "i32"],
                                         [bufs[i % 2].ptr, w.ptr, bufs[(i + 1) % 2].ptr,
                                          batch, ch, hw, hw]) for i in range(layers)]
                self.grid_blocks = -(-elems // _THREADS)
                self.units = 0
                self.per_batch = 1  # about 6 ms of work on an H200
                self.flop_per_iteration = 2.0 * elems * ch * 9 * layers
                self.what = (f"{layers} fp32 3x3 convolutions (batch {batch}, {ch} ch, "
                             f"{hw}x{hw}), {self.grid_blocks} blocks each")
        except BaseException:
            self.close()
            raise

    def enqueue(self, stream: Any) -> None:
        """Enqueue ``per_batch`` iterations on ``stream`` (capturable into a graph).

        Raises:
            CudaError: A launch failed.
        """
        self._check_open()
        grid = (self.grid_blocks, 1, 1)
        for _ in range(self.per_batch if self.kind is LoadKind.GEMM else 1):
            if self.kind is LoadKind.GEMM:
                self.buffers[3].fill(0, stream=stream, nbytes=4)
            for args in self._args:
                self._kernel.launch(grid, self._block, args, stream=stream)

    def write_output(self, y_address: int, stream: Any) -> None:
        """Write one float to ``y_address``: the units the last GEMM pulled (GEMM), or the first
        value of the conv stack's output (conv).

        Raises:
            CudaError: The launch failed.
        """
        from edgert.cuda import KernelArgs

        args = KernelArgs(["ptr", "ptr"], [self.buffers[3].ptr, y_address])
        self._out_kernel.launch((1, 1, 1), (1, 1, 1), args, stream=stream)


class LoadExecutable(Owner):
    """A built-in load as an Executable: ``x`` (1,) in, ``y`` (1,) out, float32.

    Each ``execute_async_v3`` enqueues one batch of the load (8 GEMMs or one conv stack). ``y``
    is, for the GEMM, the number of work units the last GEMM pulled (``units + grid_blocks``
    when it ran to completion), for the convolutions the first value of the stack's output.
    The kernels are borrowed: close them after the executable.
    """

    def __init__(self, kernels: LoadKernels) -> None:
        self._k = kernels
        self._y = 0
        self._streams: dict[int, Any] = {}
        self._tensors = (
            TensorSpec(name="x", mode=TensorMode.INPUT, dtype=np.dtype(np.float32), shape=(1,),
                       trt_dtype_name="FLOAT", profiles=(ProfileShape((1,), (1,), (1,)),)),
            TensorSpec(name="y", mode=TensorMode.OUTPUT, dtype=np.dtype(np.float32),
                       shape=(1,), trt_dtype_name="FLOAT"),
        )

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """``x`` then ``y``, both (1,) float32."""
        return self._tensors

    @property
    def placement(self) -> Placement:
        """Device memory."""
        return Placement.DEVICE

    @property
    def graph_capturable(self) -> bool:
        """Always true; the load is kernel launches and a memset, all capturable."""
        return True

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Only ``x`` with shape (1,)."""
        return name == "x" and tuple(shape) == (1,)

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        """(1,) for both tensors."""
        return (1,)

    def set_tensor_address(self, name: str, address: int) -> bool:
        """Remember where ``y`` goes (``x`` is not read)."""
        if name == "y":
            self._y = int(address)
        return name in ("x", "y")

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Enqueue one batch of the load on the stream; False if a launch was refused."""
        from edgert.cuda import Stream

        if self.closed or self._k.closed:
            return False
        stream = self._streams.get(stream_handle)
        if stream is None:
            stream = self._streams[stream_handle] = Stream.from_handle(
                stream_handle, device=self._k.device)
        try:
            self._k.enqueue(stream)
            self._k.write_output(self._y, stream)
        except EdgeRTError:
            return False
        return True

    def close(self) -> None:
        """Forget the adopted streams. Idempotent."""
        self._streams.clear()
        super().close()
