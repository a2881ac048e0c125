"""InferenceSession: asynchronous, pipelined, zero-copy, graph-captured inference.

A session owns its execution context (when it made it from an Engine), its streams, events,
graphs and buffers. Requests rotate through ``slots``; each slot has its own buffers and events,
so up to ``slots`` requests are in flight. See docs/sessions.md for the recipes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from edgert._executable import Executable
from edgert._options import check_or_create_options
from edgert._owner import Owner
from edgert.errors import (
    ConcurrentUseError,
    InferenceError,
    InputError,
    InvalidArgumentError,
    RequestTimeoutError,
)
from edgert.session._options import (
    BusyMode,
    GraphMode,
    OutputMode,
    SessionOptions,
    SessionOverrides,
    TimingMode,
)
from edgert.session._pending import Pending, RequestTimings, SessionStats
from edgert.session._resources import Resources
from edgert.session._runner import Runner
from edgert.session._setup import DeviceChoice, build_runner
from edgert.session._slot import Slot
from edgert.session._swap import SwapResult, apply_pending_swap, swap_model
from edgert.session._use import UseGuard
from edgert.session._warmup import failure_hint, warmup_requests, warmup_runs

if TYPE_CHECKING:
    from edgert._protocols import SupportsCudaStream, TensorInput
    from edgert.cuda import GpuPartition, Stream
    from edgert.engine import Engine
    from edgert.memory import BufferPool
    from edgert.session._pending import Output

__all__ = ["InferenceSession"]

_now = time.perf_counter_ns


class InferenceSession(Owner):
    """Runs an Engine (or any Executable) on a CUDA stream, or on the host.

    Args:
        model: An :class:`~edgert.engine.Engine` (the session makes and owns one execution
            context of it; several sessions may share one engine) or an
            :class:`~edgert.engine.Executable` (borrowed: the caller closes it).
        options: A :class:`SessionOptions`; the option keywords below override its fields
            (unknown keywords raise :class:`~edgert.InvalidArgumentError`).
        device: A CUDA device ordinal, ``"host"``, or None: device 0 when CUDA is usable and
            the model runs on a device, else the host.
        stream: Run on this stream (an edgert Stream, a raw handle, or any ``__cuda_stream__``
            object) instead of a stream the session makes. Never the legacy default stream.
        priority: Priority of the stream the session makes: ``"highest"``, ``"lowest"``, an int
            in the device's range, or None (default priority).
        partition: A :class:`~edgert.cuda.GpuPartition`: the session's streams are made on it,
            so every copy, kernel, graph and TensorRT enqueue runs on its SMs only (with
            ``priority`` as the streams' priority). Close the session before the partition.
        io: ``"copy"``, ``"zero_copy"`` or ``"auto"`` (:class:`IoMode`).
        slots: Requests in flight at once (each with its own buffers and events).
        cuda_graph: ``"auto"``, ``"on"``, ``"off"`` (or True/False) (:class:`GraphMode`).
        pool: A host :class:`~edgert.memory.BufferPool` for staging/landing (mapped for
            zero-copy); default: the session makes and owns one.
        device_pool: A device BufferPool for copy mode; default: the session makes one.
        sync: ``"adaptive"`` (spin for about as long as recent requests took, then sleep),
            ``"blocking"`` (sleep until the GPU signals) or ``"spin"`` (:class:`SyncMode`).
        outputs: ``"copy"`` (arrays the caller owns), ``"view"`` (zero-copy views reused
            ``slots`` requests later) or ``"device"`` (:class:`OutputMode`).
        when_busy: ``"wait"`` or ``"raise"`` when every slot is in flight (:class:`BusyMode`).
        timing: ``"host"`` (round-trip and enqueue latency), ``"stages"`` (CUDA events per
            stage as well) or ``"off"`` (:class:`TimingMode`).
        cast: Convert inputs of another dtype (``same_kind``) instead of refusing them;
            values that do not fit are refused, never wrapped.
        contiguous: ``"copy"`` or ``"refuse"`` non-contiguous numpy inputs.
        profile: Optimization profile of the context made from an Engine.
        max_graphs: CUDA graphs kept per slot.
        stats_capacity: Samples each latency recorder keeps for percentiles.

    Raises:
        InvalidArgumentError: An option is out of range or contradicts the model or device.
        NotSupportedError: What was asked needs what this machine lacks (CUDA, mapped memory,
            graph capture of this executable).
        EngineLoadError: The engine could not make an execution context.
        CudaError: Creating streams, events or buffers failed.
    """

    def __init__(self, model: Engine | Executable, options: SessionOptions | None = None, *,
                 device: int | str | None = None,
                 stream: Stream | int | SupportsCudaStream | None = None,
                 priority: int | str | None = None, pool: BufferPool | None = None,
                 device_pool: BufferPool | None = None, partition: GpuPartition | None = None,
                 **overrides: Unpack[SessionOverrides]) -> None:
        options = check_or_create_options(SessionOptions, options, overrides,
                                          what="InferenceSession")
        self._use = UseGuard()  # one thread at a time, safe from Ctrl-C (see _use.py)
        self._swap_pending: Any = None  # a prepared hot swap (edgert.session._swap)
        self._partition = partition  # a hot swap keeps the model on these SMs
        self._resources = Resources()
        # reap=True: a leaked session's release (stream synchronize, event syncs, pool frees)
        # runs on edgert's reaper thread, never on the thread that runs the GC (issue 12).
        self._own(self._resources.release, "InferenceSession", reap=True)
        self._stats = SessionStats(options.stats_capacity)
        self._requests = _Requests(self)
        try:
            choice = build_runner(model, options, self._stats, self._resources, device=device,
                                  stream=stream, priority=priority, pool=pool,
                                  device_pool=device_pool, partition=partition)
        except BaseException:
            self.close()
            raise
        self._choice: DeviceChoice = choice
        self._options = choice.options
        self._runner: Runner = choice.runner
        self._slots: list[Slot] = choice.runner.slots
        self._n = len(self._slots)
        self._next = 0
        self._after = [(i + 1) % self._n for i in range(self._n)]
        self._outputs_mode = OutputMode(self._options.outputs)
        self._timing = self._options.timing is not TimingMode.OFF
        self._raise_when_busy = self._options.when_busy is BusyMode.RAISE
        self._pipelined = choice.pipelined

    # -- description ----------------------------------------------------------------------

    @property
    def options(self) -> SessionOptions:
        """The options in force, with ``auto`` modes resolved."""
        return self._options

    @property
    def device(self) -> int | str:
        """The CUDA device ordinal, or ``"host"``."""
        return self._choice.device

    @property
    def executable(self) -> Executable:
        """The executable the session drives."""
        return self._runner.exe

    @property
    def stream(self) -> Stream | None:
        """The compute :class:`~edgert.cuda.Stream` (None on the host)."""
        return self._choice.stream

    @property
    def stats(self) -> SessionStats:
        """Per-stage latency recorders (preallocated; recording allocates nothing)."""
        return self._stats

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's inputs, in order."""
        return self._runner.in_names

    @property
    def output_names(self) -> tuple[str, ...]:
        """The model's outputs, in order."""
        return tuple(s.name for s in self._runner.out_specs)

    @property
    def graph_count(self) -> int:
        """CUDA graphs held now, over all slots."""
        graphs = self._runner.graphs
        return 0 if graphs is None else graphs.count()

    @property
    def graph_captures(self) -> int:
        """CUDA graphs captured since the session was made (re-captures included)."""
        graphs = self._runner.graphs
        return 0 if graphs is None else graphs.captures

    @property
    def graph_blocker(self) -> str | None:
        """Why this session never captures requests into CUDA graphs; None if it may.

        Data-dependent output shapes come first: their outputs are written through an output
        allocator during each run, which a graph cannot replay, on any device.
        """
        exe = self._runner.exe
        dds = sorted(self._runner.alloc_registered) or list(
            getattr(exe, "data_dependent_outputs", ()))
        if dds:
            return (f"data-dependent output shape{'s' if len(dds) > 1 else ''} "
                    f"({', '.join(dds)}), written through an output allocator during each run")
        if self.device == "host":
            return "the session runs on the host"
        if self._options.cuda_graph is not GraphMode.OFF:
            return None
        return ("cuda_graph='off' was asked for" if exe.graph_capturable
                else "the executable cannot be captured (its runtime forbids it)")

    # -- requests -------------------------------------------------------------------------

    def infer(self, inputs: TensorInput | Mapping[str, TensorInput]) -> Mapping[str, Output]:
        """Run one request and wait for it.

        Args:
            inputs: ``{name: array}`` (or a bare array for a one-input model): numpy arrays
                (staged into pinned memory), views of edgert host buffers or leases (copied
                from where they are), HostBuffers, or device arrays
                (``__cuda_array_interface__``/DLPack; bound without a copy).

        Returns:
            The outputs by name (see ``outputs=``). Views stay valid until this slot is used
            again, ``slots`` requests later.

        Raises:
            InputError: The inputs were rejected before anything was enqueued.
            InferenceError: The executable or the device failed the request.
            ConcurrentUseError: Another thread is using the session right now.
            PoolExhausted: Larger buffers were needed and the pool could not serve them.
            ResourceClosedError: The session is closed.
        """
        start = _now()
        use = self._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if not use.wait_for_swap(me):
                raise self._concurrent()
        use.inside = True
        try:
            if self._owner_closed:
                self._check_open()
            if self._swap_pending is not None:
                apply_pending_swap(self)
            runner = self._runner
            if runner.short_way:  # here, not in _infer: a call less on the hot path
                short = runner.infer_short(inputs, start)
                if short is not None:
                    return short
            return self._infer(inputs, start)
        finally:
            use.inside = False
            del use.owner[0]

    def _infer(self, inputs: Any, start: int) -> Mapping[str, Output]:
        """``infer``'s general way, once the use lock is held and a pending swap taken."""
        runner = self._runner
        slot = self._slots[self._next]
        if slot.busy:
            runner.finish(slot)  # a request submitted earlier: wait so the slot is free
        key = runner.stage(slot, inputs)
        self._next = self._after[slot.index]
        runner.request(slot, key, start, None)
        if slot.busy:
            runner.finish(slot)
        if slot.error is not None:
            raise slot.error
        mode = self._outputs_mode
        if mode is OutputMode.VIEW:
            return slot.results
        if mode is OutputMode.COPY:
            return {name: view.copy() for name, view in slot.results.items()}
        return slot.results_device

    def submit(self, inputs: TensorInput | Mapping[str, TensorInput]) -> Pending:
        """Enqueue one request and return at once.

        Args:
            inputs: As for :meth:`infer`. Caller memory used in place (device arrays, large
                pinned arrays) must not change until the request is done.

        Returns:
            A :class:`Pending`; its ``result()`` raises what the request ran into.

        Raises:
            InputError: The inputs were rejected before anything was enqueued.
            RequestTimeoutError: Every slot is busy and ``when_busy="raise"``.
            ConcurrentUseError: Another thread is using the session right now.
            PoolExhausted: Larger buffers were needed and the pool could not serve them.
            ResourceClosedError: The session is closed.
        """
        start = _now()
        use = self._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if not use.wait_for_swap(me):
                raise self._concurrent()
        use.inside = True
        try:
            if self._owner_closed:
                self._check_open()
            if self._swap_pending is not None:
                apply_pending_swap(self)
            slot = self._slots[self._next]
            if slot.busy:
                if self._raise_when_busy:
                    raise RequestTimeoutError(
                        f"all {self._n} slots hold requests in flight",
                        hint="collect results first, raise slots=, or use when_busy='wait'")
                self._runner.finish(slot)  # wait so the slot is free
            runner = self._runner
            key = runner.stage(slot, inputs)
            self._next = self._after[slot.index]
            runner.request(slot, key, start, self._pipelined)
            return Pending(self._requests, slot, slot.generation)
        finally:
            use.inside = False
            del use.owner[0]

    def _outputs(self, slot: Slot) -> Mapping[str, Output]:
        mode = self._outputs_mode
        if mode is OutputMode.VIEW:
            return slot.results
        if mode is OutputMode.DEVICE:
            return slot.results_device
        return {name: view.copy() for name, view in slot.results.items()}

    def _concurrent(self) -> ConcurrentUseError:
        if self._use.forked:
            return ConcurrentUseError(
                "another thread was inside this session when the process forked; that thread "
                "does not exist in this child and its request is left half-done here, so the "
                "session serves no request",
                hint="close() it and create a new session in the child (or fork before "
                     "starting threads that use sessions)")
        return ConcurrentUseError(
            "this InferenceSession is being used by another thread right now",
            hint="give each thread its own session (sessions may share one Engine), or "
                 "serialize calls with a lock")

    # -- housekeeping ---------------------------------------------------------------------

    def warmup(self, shapes: Sequence[Mapping[str, Sequence[int]]] | None = None, *,
               runs: int = 2) -> None:
        """Run zero-filled requests so buffers, shapes and graphs are ready before real work.

        Each shape set runs ``runs`` times on every slot: the first run of a shape is the
        warm-up a graph capture needs, the next captures it. Warm-up runs are not recorded in
        :attr:`stats` (which counts the requests you make).

        Args:
            shapes: Input shapes to prepare, one mapping per signature; default the profile's
                opt shapes (where the model has no profile, 1 for every dynamic dimension).
            runs: Runs per shape set and slot.

        Raises:
            InvalidArgumentError: ``shapes`` is not a list of mappings, or ``runs`` not an int
                >= 1.
            InputError: A shape is outside the profile, not a shape, or for an input the model
                does not have.
            InferenceError: A run failed (the message names the shapes it ran).
        """
        use = self._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if not use.wait_for_swap(me):
                raise self._concurrent()
        use.inside = True
        try:
            self._check_open()
            if self._swap_pending is not None:
                apply_pending_swap(self)  # warm the model that will serve, never swap midway
            runner = self._runner
            for slot in self._slots:
                if slot.busy:
                    runner.finish(slot)  # a request submitted earlier: its timings are real
            specs, profile = runner.in_specs, self._options.profile
            runs = warmup_runs(runs)
            requests = warmup_requests(shapes, specs, profile)
            unprofiled = shapes is None and any(s.is_dynamic and not s.profiles for s in specs)
            kept, runner.stats = runner.stats, SessionStats(1)  # warm-up runs are not requests
            last = runner.last_sig  # nor the previous request a whole buffer is read with
            try:
                for arrays in requests:
                    try:
                        for _ in range(runs * self._n):
                            runner.disarm()  # every slot, not the short way of infer
                            self._infer(arrays, _now())
                    except (InputError, InferenceError) as err:
                        ran = {k: tuple(v.shape) for k, v in arrays.items()}
                        cls = InputError if isinstance(err, InputError) else InferenceError
                        raise cls(f"warm-up with input shapes {ran} failed: {err.message}",
                                  # infer's hints speak of arrays: a runtime's only
                                  hint=failure_hint(None if cls is InputError else err.hint,
                                                    specs, profile, unprofiled)
                                  ) from err
            finally:
                runner.stats = kept
                runner.last_sig = last
        finally:
            use.inside = False
            del use.owner[0]

    def swap(self, model: Engine | Executable, *, handoff_s: float = 0.5,
             timeout_s: float | None = None,
             warmup_shapes: Sequence[Mapping[str, Sequence[int]]] | None = None,
             warmup_runs: int = 2, stream: Stream | int | SupportsCudaStream | None = None,
             priority: int | str | None = None, pool: BufferPool | None = None,
             device_pool: BufferPool | None = None) -> SwapResult:
        """Replace the model between two requests, without stalling the request that swaps.

        Call it from another thread than the one making requests. The new model is loaded,
        given its own context, buffers and stream, warmed and graph-captured on this thread;
        then the next request takes it at its start (docs/lifecycle.md, "Swapping a model in a
        running control loop"). If no request comes within ``handoff_s``, the session is idle
        and the swap is applied here. Run the control loop with the garbage collector frozen
        (``RealtimePolicy(freeze_gc=True)``): a collection started by the swap's allocations
        holds the interpreter for every thread (a warning says so once).

        Args:
            model: An Engine or Executable with the same input/output names and dtypes.
            handoff_s: How long to wait for a request to take the swap.
            timeout_s: Give up (nothing changed) if the swap cannot be applied by then.
            warmup_shapes: Input shapes to warm; default the model's opt shapes and the shapes
                the session started with.
            warmup_runs: Warm-up runs per shape set and slot.
            stream: Stream for the new model (default: a new one, on the session's partition
                if it has one; on CUDA only).
            priority: Priority of that new stream (default: the current stream's priority).
            pool: Host pool for the new model's buffers (default: its own).
            device_pool: Device pool for them.

        Returns:
            A :class:`~edgert.session.SwapResult` with the timings and the garbage
            collections that ran meanwhile.

        Raises:
            InvalidArgumentError: Different input/output names or dtypes, or input shapes the
                new model refuses; raised before anything changed.
            ConcurrentUseError: Another swap is in progress.
            RequestTimeoutError: Not applied within ``timeout_s``; nothing changed.
            EngineLoadError: The new model could not make its context; nothing changed.
            ResourceClosedError: The session is closed.
        """
        return swap_model(self, InferenceSession, model, handoff_s=handoff_s, timeout_s=timeout_s,
                          warmup_shapes=warmup_shapes, warmup_runs=warmup_runs, stream=stream,
                          priority=priority, pool=pool, device_pool=device_pool)

    def synchronize(self) -> None:
        """Wait for every request in flight (their results stay collectable).

        Raises:
            ConcurrentUseError: Another thread is using the session right now.
        """
        use = self._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if not use.wait_for_swap(me):
                raise self._concurrent()
        use.inside = True
        try:
            self._check_open()
            for slot in self._slots:
                if slot.busy:
                    self._runner.finish(slot)
        finally:
            use.inside = False
            del use.owner[0]

    def close(self) -> None:
        """Wait for work in flight, then release graphs, buffers, events, streams, pools and
        the context the session made. Idempotent.

        Raises:
            ConcurrentUseError: Another thread is using the session right now.
        """
        if self._owner_closed:
            return
        use = self._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if use.forked:  # the holder does not exist in this forked child: take it over
                use.owner[0] = me
                use.inside = False
                use.forked = False
                continue
            if not use.wait_for_swap(me):
                raise self._concurrent()
        use.inside = True
        try:
            super().close()
        finally:
            use.inside = False
            del use.owner[0]

    def __repr__(self) -> str:
        if self.closed:
            return "<edgert.InferenceSession closed>"
        o = self._options
        return (f"<edgert.InferenceSession device={self.device} io={o.io} slots={o.slots} "
                f"cuda_graph={o.cuda_graph} outputs={o.outputs}>")


class _Requests:
    """The session as its :class:`Pending` requests see it (a :class:`RequestSource`)."""

    __slots__ = ("_s",)

    def __init__(self, session: InferenceSession) -> None:
        self._s = session

    def done(self, slot: Slot, generation: int) -> bool:
        if slot.generation != generation or not slot.busy:
            return True
        return self._s._runner.query(slot)

    def result(self, slot: Slot, generation: int, timeout: float | None) -> Mapping[str, Output]:
        s = self._s
        use = s._use
        me = get_ident()
        while use.owner.setdefault(0, me) != me or use.inside:
            if not use.wait_for_swap(me):
                raise s._concurrent()
        use.inside = True
        try:
            s._check_open()
            if slot.generation != generation:
                if all(slot is not mine for mine in s._slots):  # the model's, swapped out
                    raise InferenceError(
                        "the session's model was swapped after this request was submitted: "
                        "it ran on the old model, whose results cannot be collected",
                        hint="collect results before swapping, or submit again "
                             "(docs/lifecycle.md, hot swap)")
                raise InferenceError(
                    f"this request's slot {slot.index} was reused by a later request; its "
                    "outputs are gone",
                    hint="call result() before submitting `slots` more requests, or raise "
                         "slots=")
            if slot.busy:
                if timeout is not None:
                    if not isinstance(timeout, (int, float)) or math.isnan(timeout) or \
                            timeout < 0:
                        raise InvalidArgumentError(f"timeout must be seconds >= 0, not "
                                                   f"{timeout!r}")
                    if not s._runner.wait(slot, float(timeout)):
                        raise RequestTimeoutError(
                            f"the request did not finish within {timeout} s",
                            hint="wait longer, or check that the device is not stalled")
                s._runner.finish(slot)
            if slot.error is not None:
                raise slot.error
            return s._outputs(slot)
        finally:
            use.inside = False
            del use.owner[0]

    def timings(self, slot: Slot, generation: int) -> RequestTimings | None:
        if not self._s._timing or slot.generation != generation or slot.busy or \
                slot.error is not None:
            return None
        return RequestTimings(enqueue_ns=slot.t_enqueue_ns, h2d_ns=slot.t_h2d_ns,
                              compute_ns=slot.t_compute_ns, d2h_ns=slot.t_d2h_ns,
                              device_ns=slot.t_device_ns, latency_ns=slot.t_latency_ns)
