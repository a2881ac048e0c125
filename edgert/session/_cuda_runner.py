"""The GPU path: copies, enqueue and CUDA graphs on the session's streams.

One request, copy mode, plain: record ``start``; H2D copies; record ``h2d``; enqueue the
executable; record ``compute``; D2H copies; record ``end``. With several slots and ``submit``,
the three stages run on three streams (H2D, compute, D2H) chained by the slot's events, so the
copies of one request overlap the compute of another; all computes stay on the one compute
stream because an execution context runs one enqueue at a time. With graphs, the whole request
(events included, as external event-record nodes) is captured once per key and replayed with one
``cudaGraphLaunch``. Every cuda-python function is bound once; the hot path makes no wrapper
objects.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from typing import Any

from edgert._executable import Executable
from edgert.cuda import CudaGraph, Event, GraphCapture, Stream
from edgert.cuda._api import cuda_error, event_query_fn, raise_cuda, runtime
from edgert.cuda._memapi import pointer_info
from edgert.errors import CudaError, EdgeRTError, InferenceError
from edgert.session._adaptive import ADAPTIVE_SPIN_MIN_NS, AdaptiveSync
from edgert.session._graphs import GraphCache
from edgert.session._options import GraphMode, OutputMode, SessionOptions, SyncMode, TimingMode
from edgert.session._pending import SessionStats
from edgert.session._runner import STAGE_LIMIT_BYTES, Runner, copy_plain
from edgert.session._slot import Slot, TensorBuffer
from edgert.session._validate import ExternalArray

__all__ = ["CudaRunner"]

_now = time.perf_counter_ns
_NOT_READY = 600  # cudaErrorNotReady
# With cuda_graph="auto", a pipelined submit that copies at least this much runs on the three
# streams rather than from a graph. Measured on an H100 (benchmarks/session.py, copy I/O):
# batch 256 (60 KiB copied) 42.7k requests/s pipelined vs 26k from graphs; batch 1 (240 B)
# 60k from graphs vs 45k pipelined, where the host's enqueue cost dominates.
PIPELINE_MIN_BYTES = 16 * 1024


class CudaRunner(Runner, AdaptiveSync):
    """Runs requests on a CUDA device (see the module documentation)."""

    on_device = True
    #: The short way of ``infer`` (see :meth:`infer_short`): ``(slot, its input
    #: buffers, (name, output view) pairs, the graph to launch, the event that ends it, the
    #: slot's signature then)``, set by a plain ``infer`` that replayed a graph, or None.
    armed: tuple[Slot, tuple[TensorBuffer, ...], tuple[tuple[str, Any], ...], Any, Any,
                 object] | None = None
    bare = False

    def __init__(self, exe: Executable, *, options: SessionOptions, slots: list[Slot],
                 stats: SessionStats, host_pool: Any, device_pool: Any, copies: bool,
                 stream: Stream, h2d_stream: Stream | None, d2h_stream: Stream | None,
                 graphs: GraphCache | None) -> None:
        super().__init__(exe, options=options, slots=slots, stats=stats, host_pool=host_pool,
                         device_pool=device_pool, copies=copies)
        rt = runtime()
        self.stream = stream
        self.s = stream.raw
        self.s_handle = stream.handle
        self.h2d_s = h2d_stream.raw if h2d_stream is not None else None
        self.d2h_s = d2h_stream.raw if d2h_stream is not None else None
        self.graphs = graphs
        self.graph_events = True  # timing events inside graphs (external event-record nodes)
        self.memcpy = rt.cudaMemcpyAsync
        self.kind_h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.kind_d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        # cudaMemcpyDefault: the direction follows from the (unified) addresses.
        self.kind_any = rt.cudaMemcpyKind.cudaMemcpyDefault
        self.rec = rt.cudaEventRecord
        self.rec_flags = rt.cudaEventRecordWithFlags
        self.rec_external = int(getattr(rt, "cudaEventRecordExternal", 1))
        self.stream_wait = rt.cudaStreamWaitEvent
        self.ev_sync = rt.cudaEventSynchronize
        self.ev_query = rt.cudaEventQuery
        self.elapsed = rt.cudaEventElapsedTime
        self.graph_launch = rt.cudaGraphLaunch
        self.stream_sync = rt.cudaStreamSynchronize
        self.stream_query = rt.cudaStreamQuery
        self.stages = options.timing is TimingMode.STAGES
        self.stream_wait_ok = options.sync is SyncMode.SPIN and not self.stages
        self.adaptive = options.sync is SyncMode.ADAPTIVE
        self.expect_ns = 0  # learned completion time after the enqueue (adaptive sync)
        self.spin_budget_ns = ADAPTIVE_SPIN_MIN_NS
        self.slept = 0  # adaptive waits that ran past their spin and slept
        self.fast_query = event_query_fn() if self.adaptive else None
        self._sleeper: tuple[Stream, Any] | None = None  # side stream + blocking-sync event
        self.pipeline_first = h2d_stream is not None and options.cuda_graph is GraphMode.AUTO
        self._foreign_event: Any = None
        # The short way of infer: owned outputs; views where they are what the general way
        # returns too, with one slot (with more, the general way turns to the next slot's
        # buffers on each request). timing="stages" reads each request's events: the general
        # way.
        self.short_views = options.outputs is OutputMode.VIEW and len(slots) == 1
        self.short_way = (not self.stages and graphs is not None and
                          (options.outputs is OutputMode.COPY or self.short_views))

    # -- memory ---------------------------------------------------------------------------

    def wants_host(self, tb: TensorBuffer) -> bool:
        """Staging/landing host memory: always in zero-copy, for copied tensors in copy mode."""
        if not self.copies or tb.host_resident or tb.spec.is_input:
            return True
        return not self.device_outputs

    def wants_device(self, tb: TensorBuffer) -> bool:
        """Device memory: in copy mode, for tensors the executable reads on the device."""
        return self.copies and not tb.host_resident

    def place(self, tb: TensorBuffer) -> None:
        """Bind device memory (copy), mapped memory (zero-copy) or host memory (host tensors)."""
        self.place_pointers(tb)
        if self.device_outputs and not tb.spec.is_input:
            self._device_view(tb)

    def place_pointers(self, tb: TensorBuffer) -> None:
        """Set the bound and copy addresses of ``tb`` for its placement and I/O mode."""
        if tb.host_resident:
            tb.dev_ptr = 0
            tb.bind_ptr = tb.host_ptr
        elif self.copies:
            tb.dev_ptr = tb.bind_ptr = tb.device.ptr
        else:
            tb.dev_ptr = tb.bind_ptr = tb.host.device_ptr

    def _device_view(self, tb: TensorBuffer) -> None:
        lease = tb.device if self.copies and tb.device is not None else tb.host
        assert tb.shape is not None
        tb.dview = lease.device_view(tb.spec.dtype, tb.shape, stream=self.stream)

    def view_allocated(self, tb: TensorBuffer) -> None:
        """Host view and, for ``outputs="device"``, device view with the real shape."""
        super().view_allocated(tb)
        if self.device_outputs:
            self._device_view(tb)

    def buffers_moved(self, slot: Slot) -> None:
        """Captured graphs name the old addresses: drop the slot's graphs."""
        super().buffers_moved(slot)
        self.armed = None
        if self.graphs is not None:
            self.graphs.drop_slot(slot.index)

    def _pinned(self, tb: TensorBuffer, arr: Any) -> ExternalArray | None:
        """Large contiguous arrays in page-locked memory are used where they are."""
        if arr.nbytes <= STAGE_LIMIT_BYTES or not arr.flags.c_contiguous or \
                arr.dtype != tb.spec.dtype:
            return None
        ptr = int(arr.__array_interface__["data"][0])
        try:
            info = pointer_info(ptr)
        except CudaError:
            return None
        if info.memory_type != "host":
            return None
        return ExternalArray(ptr, info.device_ptr, tuple(arr.shape), arr.dtype, None, arr)

    def _use_external(self, slot: Slot, sig: Hashable, plan: Any,
                      stage_dev: set[int] | None = None) -> Hashable:
        # A producer that wrote on another stream: our compute stream waits for it (before any
        # capture, so the wait is never part of a graph and replays still honour it).
        for _arr, ext in plan:
            if ext is not None and ext.stream is not None and ext.stream != self.s_handle:
                self._wait_foreign(ext.stream)
        return super()._use_external(slot, sig, plan, stage_dev)

    def _wait_foreign(self, handle: int) -> None:
        ev = self._foreign_event
        if ev is None:
            ev = self._foreign_event = Event(device=self.stream.device)
        err = self.rec(ev.raw, handle)[0]  # 1 and 2 are the legacy / per-thread streams
        if err:
            raise_cuda(err, call="cudaEventRecord")
        err = self.stream_wait(self.s, ev.raw, 0)[0]
        if err:
            raise_cuda(err, call="cudaStreamWaitEvent")

    # -- enqueue --------------------------------------------------------------------------

    def launch(self, slot: Slot, key: Hashable, pipelined: bool,
               wait_now: bool = False) -> None:
        """Enqueue the request staged in ``slot``: replay, capture, or plain.

        Args:
            slot: The slot holding the staged request.
            key: Its graph key.
            pipelined: Spread a plain request over the copy and compute streams (``submit``
                with several slots). With ``cuda_graph="auto"``, such requests that copy at
                least ``PIPELINE_MIN_BYTES`` are not replayed from graphs: one graph runs its
                copies and compute in order on one stream, so consecutive requests cannot
                overlap, while the three streams can.
            wait_now: ``finish`` follows at once (``infer``): a plain request that spins and
                records no timings then needs no completion event, as a stream synchronize
                waits for it (one event record less per request).

        Raises:
            InferenceError: The executable refused the request.
            CudaError: A CUDA call failed.
        """
        graphs = self.graphs
        armed = self.armed
        self.armed = None
        # An output written through the allocator may move or change size on any run: such
        # requests are never captured (TensorRT forbids it as well).
        if graphs is not None and not slot.allocs and not (
                pipelined and self.pipeline_first and slot.copy_bytes >= PIPELINE_MIN_BYTES):
            entry: Any = graphs.get(slot.index, key)
            if entry is None and graphs.should_capture(key, slot.sig):
                if not self.ctx_warm or self.ctx_sig != slot.sig:
                    # TensorRT's enqueueV3 documentation: with dynamic shapes, the first enqueue
                    # after setInputShape fails under stream capture; enqueue once before (as
                    # trtexec does). Found by review: alternating shapes captured right after
                    # each change, failed, and never got graphs. The whole request, copies
                    # included: a bare enqueue read inputs not yet copied (a second review).
                    self._enqueue(slot, False)
                    self.ctx_warm = True
                entry = self._capture(slot, key)
            if entry is not None:
                self._replay(slot, entry)
                if wait_now and self.short_way and not slot.special and not slot.external:
                    if armed is not None and armed[0] is slot and armed[3] is entry.exec \
                            and armed[5] is slot.sig:
                        self.armed = armed  # the same request again: nothing to rebuild
                    else:
                        self._arm(slot, entry)
                return
        if wait_now and self.stream_wait_ok:
            self._enqueue_untimed(slot)
            slot.wait_stream = True
        elif pipelined and self.h2d_s is not None:
            self._enqueue_pipelined(slot)
        else:
            self._enqueue(slot, False)
        self.ctx_warm = True
        if graphs is not None:
            graphs.ran_plainly(slot.sig)

    def _arm(self, slot: Slot, entry: Any) -> None:
        """Let ``infer`` replay ``entry`` the short way while the slot stays as it is now."""
        ins = tuple(slot.inputs)
        if any(tb.shape is None or not tb.small or tb.view is None for tb in ins) or \
                any(tb.unbound or tb.view is None for tb in slot.outputs):
            return  # absent optional inputs, large or packed inputs, run-time-shaped outputs
        self.armed = (slot, ins, tuple((tb.name, tb.view) for tb in slot.outputs), entry.exec,
                      slot.ev_end, slot.sig)
        # a bare array is the one required input's, as the general way reads it
        self.bare = len(ins) == 1 and self.required == (ins[0].name,)

    def infer_short(self, inputs: Any, start: int) -> Mapping[str, Any] | None:
        """Run ``inputs`` the short way and return its outputs, or None: take the general way.

        Once a plain ``infer`` replayed a captured graph (one that wrote no output through the
        allocator and bound no caller memory), a request of plain numpy arrays of the same
        shapes and dtypes is copied into that slot's staging buffers, the graph launched and
        waited for, and the outputs copied out (``outputs="view"``: the slot's views, as the
        general way returns them), past staging, keys and the slot's bookkeeping.
        The general way re-arms (or disarms) it on every request it runs.

        Raises:
            InferenceError: The launch or the request failed on the device.
        """
        armed = self.armed
        if armed is None:
            return None
        slot, ins, outs, graph_exec, ev, sig = armed
        # A reshape begins by clearing the slot's signature: one that failed midway leaves
        # buffers the graph does not name.
        if slot.busy or slot.sig is not sig or \
                not copy_plain(ins, inputs, self.bare, self.refuse):
            return None  # a submitted request owns the slot, it changed, or not plain
        self.last_sig = sig
        slot.generation += 1  # an earlier request's Pending no longer reads this slot
        slot.served += 1
        s = self.s
        err = self.graph_launch(graph_exec, s)[0]
        if not err and not self.graph_events:
            err = self.rec(ev, s)[0]
        if err:
            self.armed = None
            self.fail(slot, cuda_error(err, call="cudaGraphLaunch"))
            assert slot.error is not None
            raise slot.error
        err = self._adaptive_wait(ev) if self.adaptive else self.ev_sync(ev)[0]
        if err:
            self.armed = None
            raise _device_failure(err)
        if self.short_views:
            if self.host_timing:
                self.stats.latency.record(_now() - start)
            return slot.results
        return self.owned_result(outs, start)

    def disarm(self) -> None:
        """Make the next ``infer`` take the general way (``warmup`` goes through every slot)."""
        self.armed = None

    def _replay(self, slot: Slot, entry: Any) -> None:
        s = self.s
        if self.graph_events:
            err = self.graph_launch(entry.exec, s)[0]
            if err:
                raise_cuda(err, call="cudaGraphLaunch")
            slot.timed = 2 if self.stages else 0
            return
        # Events could not be captured: time (and mark completion) around the launch.
        if self.stages:
            self.rec(slot.ev_start, s)
        err = self.graph_launch(entry.exec, s)[0]
        if err:
            raise_cuda(err, call="cudaGraphLaunch")
        self.rec(slot.ev_end, s)
        slot.timed = 1 if self.stages else 0

    def _execute(self, slot: Slot) -> None:
        sig = slot.sig
        if sig is None:  # never staged, or its reshape failed: nothing in it may run
            raise InferenceError("internal error: a request reached a slot with no shapes",
                                 hint="report this; the session stays usable")
        if self.ctx_sig is not sig and self.ctx_sig != sig:
            self.apply_shapes(sig)
        if self.bound_token is not slot.binds:
            self.bind(slot)
        special = slot.special
        if special or slot.d2d:
            self._before_execute(slot)
        if not self.exe.execute_async_v3(self.s_handle):
            raise InferenceError(f"the executable failed to enqueue{self.run_errors()}",
                                 hint="see the runtime's message above; the session stays usable")
        if special:
            self._after_execute(slot)

    def _before_execute(self, slot: Slot) -> None:
        """Point the output allocator at the slot; copy caller device memory that overlaps the
        session's own buffers into the slot's input buffers."""
        if slot.allocs:
            assert self.allocator is not None
            self.allocator.start(slot)
        s = self.s
        for dst, src, n in slot.d2d:
            err = self.memcpy(dst, src, n, self.kind_any, s)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")

    def _after_execute(self, slot: Slot) -> None:
        """Copy echoed inputs into their outputs and allocated outputs to the host.

        The executable asked for its allocated outputs' memory while it enqueued (TensorRT
        calls ``reallocate_output`` inside ``enqueueV3``), so their sizes are known here; the
        whole block is copied, the real shape is applied once the request completes.
        """
        s = self.s
        memcpy = self.memcpy
        bound = self.bound
        for tb in slot.echoes:
            src = tb.echo
            assert src is not None
            if tb.nbytes and not tb.host_resident:
                err = memcpy(tb.bind_ptr, bound[src.name], tb.nbytes, self.kind_any, s)[0]
                if err:
                    raise_cuda(err, call="cudaMemcpyAsync")
        if self.copies and not self.device_outputs:
            kind = self.kind_d2h
            for tb in slot.allocs:
                if tb.alloc_nbytes and not tb.host_resident:
                    err = memcpy(tb.host_ptr, tb.dev_ptr, tb.alloc_nbytes, kind, s)[0]
                    if err:
                        raise_cuda(err, call="cudaMemcpyAsync")

    def _enqueue_untimed(self, slot: Slot) -> None:
        """The plain request that ``infer`` waits for at once, with no events: copies and the
        executable, nothing else (the common control-loop case, kept free of branches)."""
        s = self.s
        memcpy = self.memcpy
        kind = self.kind_h2d
        for dst, src, n in slot.h2d:
            err = memcpy(dst, src, n, kind, s)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        self._execute(slot)
        kind = self.kind_d2h
        for dst, src, n in slot.d2h:
            err = memcpy(dst, src, n, kind, s)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        slot.timed = 0

    def _enqueue(self, slot: Slot, capturing: bool, end_event: bool = True) -> None:
        s = self.s
        memcpy = self.memcpy
        events = not capturing or self.graph_events
        if capturing:
            flags = self.rec_external
            rec_flags = self.rec_flags

            def rec(ev: Any, stream: Any) -> tuple[Any, ...]:
                return rec_flags(ev, stream, flags)  # type: ignore[no-any-return]
        else:
            rec = self.rec
        ev = slot.ev_start
        if ev is not None and events:
            rec(ev, s)
        kind = self.kind_h2d
        for dst, src, n in slot.h2d:
            err = memcpy(dst, src, n, kind, s)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        ev = slot.ev_h2d
        if ev is not None and events and self.stages:
            rec(ev, s)
        self._execute(slot)
        ev = slot.ev_compute
        if ev is not None and events and self.stages:
            rec(ev, s)
        kind = self.kind_d2h
        for dst, src, n in slot.d2h:
            err = memcpy(dst, src, n, kind, s)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        if events and end_event:
            err = rec(slot.ev_end, s)[0]
            if err:
                raise_cuda(err, call="cudaEventRecord")
        slot.timed = 2 if self.stages else 0

    def _enqueue_pipelined(self, slot: Slot) -> None:
        h, s, d = self.h2d_s, self.s, self.d2h_s
        memcpy, rec, wait = self.memcpy, self.rec, self.stream_wait
        if self.stages:
            rec(slot.ev_start, h)
        kind = self.kind_h2d
        for dst, src, n in slot.h2d:
            err = memcpy(dst, src, n, kind, h)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        rec(slot.ev_h2d, h)
        wait(s, slot.ev_h2d, 0)
        self._execute(slot)
        rec(slot.ev_compute, s)
        wait(d, slot.ev_compute, 0)
        kind = self.kind_d2h
        for dst, src, n in slot.d2h:
            err = memcpy(dst, src, n, kind, d)[0]
            if err:
                raise_cuda(err, call="cudaMemcpyAsync")
        err = rec(slot.ev_end, d)[0]
        if err:
            raise_cuda(err, call="cudaEventRecord")
        slot.timed = 2 if self.stages else 0

    def _capture(self, slot: Slot, key: Hashable) -> Any:
        graphs = self.graphs
        assert graphs is not None
        for _attempt in range(2):
            try:
                with GraphCapture(self.stream) as cap:
                    self._enqueue(slot, True)
                graph = cap.graph
                try:
                    graph.upload(self.stream)
                except BaseException:
                    graph.close()  # not left to the garbage collector (found by review)
                    raise
            except EdgeRTError as err:
                if self.graph_events and isinstance(err, CudaError):
                    # Some drivers refuse event-record nodes: time around the launch instead.
                    self.graph_events = False
                    continue
                graphs.failed(key, err)
                return None
            entry = _Captured(graph)
            graphs.put(slot.index, key, entry)
            return entry
        graphs.failed(key, RuntimeError("capture failed with and without event nodes"))
        return None

    # -- completion -----------------------------------------------------------------------

    def query(self, slot: Slot) -> bool:
        """Whether the slot's request has finished (or failed). Never blocks."""
        if slot.wait_stream:
            err = self.stream_query(self.s)[0]
            return not err or int(err) != _NOT_READY
        err = self.ev_query(slot.ev_end)[0]
        return not err or int(err) != _NOT_READY

    def wait(self, slot: Slot, timeout: float) -> bool:
        """Poll until the slot's request finishes or ``timeout`` seconds pass; True if done."""
        deadline = time.monotonic() + timeout
        pause = 20e-6
        while not self.query(slot):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 1e-3)
        return True

    def finish(self, slot: Slot) -> None:
        """Wait for the slot's request, record its timings, and mark the slot idle."""
        if slot.wait_stream:
            slot.wait_stream = False
            err = self.stream_sync(self.s)[0]
        elif self.adaptive:
            err = self._adaptive_wait(slot.ev_end)
        else:
            err = self.ev_sync(slot.ev_end)[0]
        slot.busy = False
        slot.keep = None
        if err:
            slot.error = _device_failure(err)
            self.armed = None  # the next request takes the general way, which reports afresh
            return
        if slot.special:
            try:
                if slot.allocs or slot.echoes:
                    self.settle(slot)
                if slot.packed:
                    self.unpack_outputs(slot)
            except InferenceError as failure:
                slot.error = failure
                return
        if self.host_timing:
            latency = _now() - slot.t_submit_ns
            slot.t_latency_ns = latency
            self.stats.latency.record(latency)
        if slot.timed:
            self._read_events(slot)

    def _read_events(self, slot: Slot) -> None:
        elapsed = self.elapsed
        stats = self.stats
        start, end = slot.ev_start, slot.ev_end
        err, ms = elapsed(start, end)
        device = None if err else int(ms * 1e6)
        slot.t_device_ns = device
        h2d = compute = d2h = None
        if slot.timed == 2 and slot.ev_h2d is not None:
            err, ms = elapsed(start, slot.ev_h2d)
            h2d = None if err else int(ms * 1e6)
            err, ms = elapsed(slot.ev_h2d, slot.ev_compute)
            compute = None if err else int(ms * 1e6)
            err, ms = elapsed(slot.ev_compute, end)
            d2h = None if err else int(ms * 1e6)
        elif slot.timed == 2:
            compute = device
        slot.t_h2d_ns, slot.t_compute_ns, slot.t_d2h_ns = h2d, compute, d2h
        if device is not None:
            stats.device.record(device)
        if h2d is not None:
            stats.h2d.record(h2d)
        if compute is not None:
            stats.compute.record(compute)
        if d2h is not None:
            stats.d2h.record(d2h)

    def close(self) -> None:
        """Destroy the event used to wait for foreign streams and the adaptive sleeper."""
        self.armed = None
        if self._foreign_event is not None:
            self._foreign_event.close()
            self._foreign_event = None
        sleeper, self._sleeper = self._sleeper, None
        if sleeper is not None:
            sleeper[1].close()
            sleeper[0].close()

    def drain(self) -> None:
        """Wait for everything enqueued on the session's streams; errors are dropped."""
        for s in (self.h2d_s, self.s, self.d2h_s):
            if s is not None:
                self.stream_sync(s)


def _device_failure(err: Any) -> InferenceError:
    """The error of a request that failed on the device, from the CUDA error of its wait."""
    cause = cuda_error(err, call="cudaEventSynchronize")
    failure = InferenceError(f"the request failed on the device: {cause.message}",
                             hint=cause.hint)
    failure.__cause__ = cause
    return failure


class _Captured:
    """A captured graph with its executable handle bound for the launch call."""

    __slots__ = ("exec", "graph")

    def __init__(self, graph: CudaGraph) -> None:
        self.graph = graph
        # The launch is the whole hot path of a replay: call cudaGraphLaunch on the handle
        # rather than through CudaGraph.launch's checks.
        self.exec = graph.exec_handle

    def close(self) -> None:
        self.graph.close()
