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
from typing import Any

from edgert._owner import Owner
from edgert.bench._load_kernels import LoadKernels, LoadKind
from edgert.errors import EdgeRTError, InvalidArgumentError

__all__ = ["GpuLoad", "LoadThroughput", "SessionLoad"]


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
    """What the load is and where it runs."""
    what = ""
    """What the load is (without where)."""
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

    Its kernels are replayed as a CUDA graph of one batch (8 GEMMs or one conv stack, about
    6 ms on an H200) with two graphs in flight.

    Args:
        kind: ``"gemm"`` or ``"conv"`` (:class:`LoadKind`).
        device: The CUDA device.
        partition: A :class:`~edgert.cuda.GpuPartition` to confine the load to; the GEMM sizes
            its persistent grid to the partition's SMs, as cuBLAS does on a green context.
        priority: The load stream's priority.

    Raises:
        InvalidArgumentError: An unknown kind.
        NotSupportedError: No CUDA device, or NVRTC is missing.
        CudaError: Compiling, allocating, capturing or creating the stream failed.
    """

    def __init__(self, kind: LoadKind | str = LoadKind.GEMM, *, device: int = 0,
                 partition: Any = None, priority: Any = None) -> None:
        from edgert.cuda import Event, GraphCapture, Stream, device_properties

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
            self.kernels = LoadKernels(self.kind, sm_count=sms, device=device)
            self._owned.append(self.kernels)
            self.per_graph = self.kernels.per_batch
            self.flop_per_iteration = self.kernels.flop_per_iteration
            self.what = self.kernels.what
            self.description = f"{self.kernels.what} on {where}"
            with GraphCapture(self._stream) as cap:
                self.kernels.enqueue(self._stream)
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
    """A load driven through an InferenceSession (borrowed), two requests in flight.

    Use it for a model file, or with a :class:`LoadExecutable` for a built-in load that runs
    exactly as a perception network would (a session with its own stream, graphs and copies).

    Args:
        session: The session (its partition and priority are the load's); ``slots >= 2``
            keeps the GPU busy while a result is collected.
        inputs: What to feed it every time.
        description: For reports.
        iterations_per_request: Work items one request does (8 GEMMs for the GEMM executable).
        flop_per_iteration: For GFLOP/s, when known.
    """

    def __init__(self, session: Any, inputs: Any, *, description: str,
                 iterations_per_request: int = 1,
                 flop_per_iteration: float | None = None) -> None:
        self._init_thread()
        self._session = session
        self._inputs = inputs
        self._per_request = iterations_per_request
        self._prev: Any = None
        self.description = self.what = description
        self.flop_per_iteration = flop_per_iteration

    @property
    def stream(self) -> Any:
        """The session's compute :class:`~edgert.cuda.Stream`."""
        return self._session.stream

    def _step(self) -> int:
        nxt = self._session.submit(self._inputs)
        prev, self._prev = self._prev, nxt
        if prev is None:
            return 0
        prev.result()
        return self._per_request

    def _finish(self) -> None:
        if self._prev is not None:
            self._prev.result()
            self._prev = None
