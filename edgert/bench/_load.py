"""Background loads on one GPU: what a control model has to share the GPU with.

``gemm`` is a persistent-style fp32 GEMM kernel: one block per free slot on every SM of its
stream's partition, each block pulling tiles from a global counter until the product is done, so
while it runs no SM is free (what cuBLAS's large GEMMs and NCCL do, and why stream priority does
not help behind them). ``conv`` is a stack of direct 3x3 convolutions, each a grid of many short
blocks (what most perception networks look like: the block scheduler can slip a high-priority
kernel in between). Both are NVRTC kernels through :mod:`edgert.cuda` (no torch, no cuBLAS).
:class:`SessionLoad` runs any model back to back through an :class:`~edgert.InferenceSession`.

A load counts the work it finished between :meth:`start` and :meth:`stop`; the rate is its
throughput (GFLOP/s for the kernels, inferences/s for a model). The kernel loads replay a CUDA
graph of several iterations with two graphs in flight, so the GPU stays busy even while their
Python thread waits for the GIL behind a control loop in the same process.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from edgert._owner import Owner
from edgert.errors import EdgeRTError, InvalidArgumentError

__all__ = ["GpuLoad", "LoadKind", "LoadThroughput", "SessionLoad"]

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
    """Persistent fp32 GEMM: holds every SM of its partition until it finishes."""
    CONV = "conv"
    """A stack of direct 3x3 convolutions: many short blocks per kernel."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadThroughput:
    """What a load finished between start and stop.

    Attributes:
        description: What the load is and where it ran.
        iterations: Work items finished (GEMMs, conv stacks or inferences).
        elapsed_s: Seconds from start to the last finished item.
        rate_per_s: Iterations per second.
        gflops: GFLOP/s for the kernel loads, None for a model.
    """

    description: str
    iterations: int
    elapsed_s: float
    rate_per_s: float
    gflops: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"description": self.description, "iterations": self.iterations,
                "elapsed_s": self.elapsed_s, "rate_per_s": self.rate_per_s,
                "gflops": self.gflops}


class _Background(Owner):
    """A thread that runs :meth:`_step` back to back between start() and stop()."""

    description = ""
    flop_per_iteration: float | None = None

    def _init_thread(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterations = 0
        self._t0 = self._t1 = 0
        self._error: BaseException | None = None

    def _step(self) -> int:
        raise NotImplementedError

    def _finish(self) -> None:
        """Wait for work still in flight (called on the load's thread after the last step)."""

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                done = self._step()
                if done:
                    self._iterations += done
                    self._t1 = time.perf_counter_ns()
            self._finish()
        except BaseException as err:  # re-raised by stop() on the caller's thread
            self._error = err

    def start(self) -> None:
        """Start the load on a background thread.

        Raises:
            ResourceClosedError: The load is closed.
            InvalidArgumentError: It is already running.
        """
        self._check_open()
        if self._thread is not None:
            raise InvalidArgumentError("the load is already running", hint="stop() it first")
        self._stop.clear()
        self._iterations = 0
        self._error = None
        self._t0 = self._t1 = time.perf_counter_ns()
        self._thread = threading.Thread(target=self._loop, name="edgert-load", daemon=True)
        self._thread.start()

    def stop(self) -> LoadThroughput:
        """Stop the load, wait for its work to finish, and say how much it did.

        Raises:
            InvalidArgumentError: The load is not running.
            EdgeRTError: The load failed (its own error).
        """
        thread = self._thread
        if thread is None:
            raise InvalidArgumentError("the load is not running", hint="start() it first")
        self._stop.set()
        thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        elapsed = max(self._t1 - self._t0, 1) / 1e9
        rate = self._iterations / elapsed
        flop = self.flop_per_iteration
        return LoadThroughput(description=self.description, iterations=self._iterations,
                              elapsed_s=elapsed, rate_per_s=rate,
                              gflops=None if flop is None else rate * flop / 1e9)

    def measure(self, duration_s: float) -> LoadThroughput:
        """Run the load alone for ``duration_s`` seconds and return its throughput.

        Raises:
            EdgeRTError: The load failed.
        """
        self.start()
        time.sleep(duration_s)
        return self.stop()

    def close(self) -> None:
        """Stop the load (if running) and free its memory, kernels and stream."""
        if self._thread is not None:
            try:
                self.stop()
            except EdgeRTError:
                pass
        super().close()


def _close_all(owners: list[Any]) -> None:
    for owner in reversed(owners):
        owner.close()


class GpuLoad(_Background):
    """A built-in load (``gemm`` or ``conv``) on its own stream, optionally on a partition.

    Args:
        kind: ``"gemm"`` or ``"conv"`` (:class:`LoadKind`).
        device: The CUDA device.
        partition: A :class:`~edgert.cuda.GpuPartition` to confine the load to; the GEMM sizes
            its persistent grid to the partition's SMs, as cuBLAS does on a green context.
        priority: The load stream's priority.

    Raises:
        InvalidArgumentError: An unknown kind.
        NotSupportedError: No CUDA device, or NVRTC is missing.
        CudaError: Compiling, allocating or creating the stream failed.
    """

    def __init__(self, kind: LoadKind | str = LoadKind.GEMM, *, device: int = 0,
                 partition: Any = None, priority: Any = None) -> None:
        from edgert.cuda import (
            Event,
            GraphCapture,
            KernelArgs,
            Stream,
            compile_module,
            device_properties,
        )
        from edgert.memory import DeviceBuffer

        try:
            self.kind = LoadKind(kind)
        except ValueError:
            raise InvalidArgumentError(f"unknown load {kind!r}",
                                       hint="use 'gemm', 'conv' or a model path") from None
        self._init_thread()
        self._owned: list[Any] = []
        self._own(functools.partial(_close_all, self._owned), "GpuLoad")
        self._in_flight = 0
        try:
            sms = partition.sm_count if partition is not None else \
                device_properties(device).multiprocessor_count
            where = (f"{partition.name} ({sms} SMs)" if partition is not None
                     else f"all {sms} SMs")
            self._stream = (partition.stream(priority=priority) if partition is not None
                            else Stream(device=device, priority=priority))
            self._owned.append(self._stream)
            module = compile_module(_SOURCE, ["gemm_persistent", "conv3x3"], device=device,
                                    program_name="edgert_load.cu")
            self._owned.append(module)
            rng = np.random.default_rng(0)

            def buffer(nbytes: int, *, data: bool = False, scale: float = 1.0) -> Any:
                buf = DeviceBuffer(nbytes, device=device)
                self._owned.append(buf)
                if data:  # real numbers: zeros can run faster than real data does
                    buf.copy_from(rng.uniform(-scale, scale, nbytes // 4).astype(np.float32))
                else:
                    buf.fill(0)
                return buf

            block = (_THREADS, 1, 1)
            if self.kind is LoadKind.GEMM:
                n, kc = 2048, 256
                kernel = module.kernel("gemm_persistent")
                self.grid_blocks = sms * kernel.max_blocks_per_sm(_THREADS)
                self.units = (n // _TILE) ** 2 * (n // kc)
                self.buffers = [buffer(n * n * 4, data=True), buffer(n * n * 4, data=True),
                                buffer(n * n * 4 * (n // kc)), buffer(4)]
                a, b, c, counter = self.buffers
                args = KernelArgs(["ptr", "ptr", "ptr", "i32", "i32", "ptr"],
                                  [a.ptr, b.ptr, c.ptr, n, kc, counter.ptr])
                self.per_graph = 8  # about 6 ms of work on an H200

                def enqueue() -> None:
                    for _ in range(self.per_graph):
                        counter.fill(0, stream=self._stream, nbytes=4)
                        kernel.launch((self.grid_blocks, 1, 1), block, args,
                                      stream=self._stream)

                self.flop_per_iteration = 2.0 * n * n * n
                self.description = (f"persistent fp32 GEMM ({n // kc} x {n}x{n}x{kc}), "
                                    f"{self.grid_blocks} blocks on {where}")
            else:
                batch, ch, hw, layers = 8, 64, 128, 4
                kernel = module.kernel("conv3x3")
                elems = batch * ch * hw * hw
                x0, x1 = buffer(elems * 4, data=True), buffer(elems * 4, data=True)
                # He-uniform: activations keep their scale through any number of layers.
                w = buffer(ch * ch * 9 * 4, data=True, scale=(6.0 / (ch * 9)) ** 0.5)
                self.buffers = [x0, x1, w]
                bufs = (x0, x1)
                conv_args = [KernelArgs(["ptr", "ptr", "ptr", "i32", "i32", "i32", "i32"],
                                        [bufs[i % 2].ptr, w.ptr, bufs[(i + 1) % 2].ptr, batch,
                                         ch, hw, hw]) for i in range(layers)]
                self.grid_blocks = -(-elems // _THREADS)
                self.per_graph = 1  # about 6 ms of work on an H200

                def enqueue() -> None:
                    for args in conv_args:
                        kernel.launch((self.grid_blocks, 1, 1), block, args,
                                      stream=self._stream)

                self.flop_per_iteration = 2.0 * elems * ch * 9 * layers
                self.description = (f"{layers} fp32 3x3 convolutions (batch {batch}, {ch} ch, "
                                    f"{hw}x{hw}), {self.grid_blocks} blocks each, on {where}")
            with GraphCapture(self._stream) as cap:
                enqueue()
            self._graph = cap.graph
            self._owned.append(self._graph)
            self._graph.upload(self._stream)
            # Blocking-sync events: the load's thread sleeps, and holds no GIL, while it waits.
            self._events = [Event(blocking_sync=True, device=device) for _ in range(2)]
            self._owned.extend(self._events)
            self._stream.synchronize()
        except BaseException:
            self.close()
            raise

    @property
    def stream(self) -> Any:
        """The load's :class:`~edgert.cuda.Stream`."""
        return self._stream

    def _step(self) -> int:
        i = self._in_flight
        self._graph.launch(self._stream)
        self._events[i % 2].record(self._stream)  # its last user (graph i - 2) has finished
        self._in_flight = i + 1
        if i == 0:
            return 0
        self._events[(i - 1) % 2].synchronize()  # graph i - 1: graph i keeps the GPU busy
        return self.per_graph

    def _finish(self) -> None:
        self._stream.synchronize()
        self._in_flight = 0


class SessionLoad(_Background):
    """A model run back to back through an InferenceSession (borrowed) as the load.

    Args:
        session: The session (its partition and priority are the load's).
        inputs: What to feed it every time.
        description: For reports.
    """

    def __init__(self, session: Any, inputs: Any, *, description: str) -> None:
        self._init_thread()
        self._session = session
        self._inputs = inputs
        self.description = description

    @property
    def stream(self) -> Any:
        """The session's compute :class:`~edgert.cuda.Stream`."""
        return self._session.stream

    def _step(self) -> int:
        self._session.infer(self._inputs)
        return 1
