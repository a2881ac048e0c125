"""What the CUDA and host runners share: staging inputs, shapes, buffers and bindings.

The hot path is :meth:`Runner.stage`: when every input is a numpy array of the model's dtype and
of the previous request's shape, it is one ``np.copyto`` per input into the slot's staging view.
Anything else goes through :meth:`Runner._stage_slow`, which checks everything before anything is
enqueued (so a rejected request leaves the session usable), reshapes the executable and the
slot's buffers when the shapes changed, and binds caller memory where no copy is needed.
The output side (run-time output shapes, strings, packed and echoed outputs) is
:class:`~edgert.session._run_outputs.OutputPlan`, a base class of :class:`Runner`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert._executable import Executable, TensorSpec
from edgert.errors import EdgeRTError, InferenceError, InputError
from edgert.session._options import ContiguityMode, OutputMode, SessionOptions, TimingMode
from edgert.session._outalloc import SessionOutputAllocator, packed_nbytes
from edgert.session._packed import pack_into, packed_error, packed_shape
from edgert.session._pending import SessionStats
from edgert.session._run_outputs import OutputPlan, executable_errors, view_args
from edgert.session._slot import Signature, Slot, TensorBuffer
from edgert.session._validate import (
    ExternalArray,
    cast_input,
    check_dtype,
    check_names,
    check_shape,
    external_array,
)

if TYPE_CHECKING:
    from edgert.session._graphs import GraphCache

_now = time.perf_counter_ns

__all__ = ["Runner", "executable_errors"]

_ndarray = np.ndarray
_copyto = np.copyto
# Inputs up to this size are always staged: one memcpy on the host is cheaper than asking CUDA
# whether the caller's memory is already pinned.
STAGE_LIMIT_BYTES = 64 * 1024


def copy_plain(ins: tuple[TensorBuffer, ...], inputs: Any, bare: bool, refuse: bool) -> bool:
    """Copy a plain request into the buffers of ``infer``'s short way; False: not plain.

    Plain: a dict of exactly these tensors (or, with ``bare``, one array for the one required
    input), each a numpy array of the buffer's dtype and shape (C-contiguous where ``refuse``).
    After False the buffers may hold part of the request: they are staging, and the general
    way stages again.
    """
    if type(inputs) is dict:
        if len(inputs) != len(ins):
            return False
        for tb in ins:
            arr = inputs.get(tb.name)
            if type(arr) is not _ndarray or arr.dtype is not tb.dtype or \
                    arr.shape != tb.shape or (refuse and not arr.flags.c_contiguous):
                return False
            tb.view[...] = arr  # type: ignore[index]
        return True
    if type(inputs) is _ndarray and bare:
        tb = ins[0]
        if inputs.dtype is not tb.dtype or inputs.shape != tb.shape or \
                (refuse and not inputs.flags.c_contiguous):
            return False
        tb.view[...] = inputs  # type: ignore[index]
        return True
    return False


def absent(tb: TensorBuffer) -> None:
    """Mark an optional input left out of a request: bound to address 0 (the model's default)."""
    tb.shape = None
    tb.view = None
    tb.nbytes = 0
    tb.small = False
    tb.bind_ptr = tb.dev_ptr = 0


_NONE = object()  # a sentinel that no array element can be


class Runner(OutputPlan):
    """Request mechanics shared by the GPU and host device paths.

    Args:
        exe: The executable.
        options: The session's options.
        slots: The session's slots.
        stats: Where timings go.
        host_pool: Pool of host memory (pinned, mapped or OS-locked).
        device_pool: Pool of device memory, for copy mode on a GPU.
        copies: Whether inputs and outputs are copied between host and device buffers.
    """

    on_device = False
    #: Whether ``infer`` may ask :meth:`infer_short` first (owned outputs; on a GPU also the
    #: views of a session with one slot).
    short_way = False
    #: Requests :meth:`infer_short` ran (they use no slot, so no slot generation counts them).
    shortcuts = 0

    def __init__(self, exe: Executable, *, options: SessionOptions, slots: list[Slot],
                 stats: SessionStats, host_pool: Any, device_pool: Any, copies: bool) -> None:
        self.exe = exe
        self.options = options
        self.slots = slots
        self.stats = stats
        self.host_pool = host_pool
        self.device_pool = device_pool
        self.copies = copies
        self.in_specs = tuple(t for t in exe.tensors if t.is_input)
        self.out_specs = tuple(t for t in exe.tensors if not t.is_input)
        self.in_names = tuple(t.name for t in self.in_specs)
        self.n_in = len(self.in_specs)
        self.required = tuple(t.name for t in self.in_specs if not t.optional)
        self.profile = options.profile
        self.cast = options.cast
        self.refuse = options.contiguous is ContiguityMode.REFUSE
        self.device_outputs = options.outputs is OutputMode.DEVICE
        self.ctx_sig: Signature | None = None
        #: A plain enqueue ran since the executable's shapes were last set (TensorRT: the first
        #: enqueue after a shape change cannot be captured into a CUDA graph).
        self.ctx_warm = False
        #: The input shapes of the previous request, whichever way it went (for whole buffers;
        #: warm-up runs are not requests and leave it as it was).
        self.last_sig: Signature | None = None
        self.bound: dict[str, int] = {}
        self.bound_token: object = None
        self.stream: Any = None
        self.in_set = frozenset(self.in_names)
        in_index = {name: j for j, name in enumerate(self.in_names)}
        # Outputs that are graph inputs too: the session copies the input; binding them by
        # name would give the executable the input's name twice.
        self.echo_of = {i: in_index[t.name] for i, t in enumerate(self.out_specs)
                        if t.name in in_index}
        self.allocator: SessionOutputAllocator | None = None
        self.alloc_registered: set[str] = set()
        #: The CUDA graphs of a GPU runner that captures; None where requests are never
        #: captured (the host, ``cuda_graph="off"``, uncapturable executables).
        self.graphs: GraphCache | None = None
        self.warned: set[str] = set()
        self.host_timing = options.timing is not TimingMode.OFF
        #: ``timing="stages"``: enqueue times (and, where the device has them, stage times)
        #: go into the session's stats too; ``"host"`` records latency only (issue 15).
        self.record_stages = options.timing is TimingMode.STAGES

    # -- a request's state: only the runner writes it --------------------------------------

    def request(self, slot: Slot, key: Hashable, start: int, pipelined: bool | None) -> None:
        """Begin the request staged in ``slot`` and enqueue it; a failure is kept in the slot.

        The way in of a request's life (``finish`` is the way out): a new generation, no
        error, cleared timings, then ``launch``; ``busy`` once enqueued, or the failure kept
        for ``result()``/``infer`` to raise. ``pipelined`` None means ``infer``: the request
        is waited for at once.
        """
        slot.generation += 1
        slot.served += 1
        slot.error = None
        timed = self.host_timing
        if timed:
            slot.t_submit_ns = start
            slot.t_latency_ns = slot.t_device_ns = None
            slot.t_h2d_ns = slot.t_compute_ns = slot.t_d2h_ns = None
        try:
            if pipelined is None:
                self.launch(slot, key, False, True)
            else:
                self.launch(slot, key, pipelined)
        except EdgeRTError as err:
            self.fail(slot, err)
            return
        slot.busy = True
        if timed:
            enqueue = _now() - start
            slot.t_enqueue_ns = enqueue
            if self.record_stages:
                self.stats.enqueue.record(enqueue)

    def fail(self, slot: Slot, err: EdgeRTError) -> None:
        """End the slot's request with ``err`` (wrapped in an InferenceError) before it ran."""
        try:
            self.drain()  # partial work of the failed request must not linger
        except Exception:
            pass
        if isinstance(err, InferenceError):
            slot.error = err
        else:
            failure = InferenceError(f"the request could not be enqueued: {err.message}",
                                     hint=err.hint)
            failure.__cause__ = err
            slot.error = failure
        slot.keep = None
        slot.busy = False

    def disown(self) -> None:
        """Make the requests made so far uncollectable (their ``result()`` raises)."""
        for slot in self.slots:
            slot.generation += 1

    # -- the hot path ---------------------------------------------------------------------

    def stage(self, slot: Slot, inputs: Any) -> Hashable:
        """Check the inputs and stage them into ``slot``; return the graph key.

        Raises:
            InputError: The inputs were rejected (nothing was enqueued).
            PoolExhausted: Larger buffers were needed and the pool could not serve them.
        """
        if type(inputs) is dict and len(inputs) == self.n_in and not slot.external and \
                slot.sig is not None:
            refuse = self.refuse
            for tb in slot.inputs:
                arr = inputs.get(tb.name)
                if (type(arr) is _ndarray and arr.dtype is tb.dtype and arr.shape == tb.shape
                        and tb.small and (not refuse or arr.flags.c_contiguous)):
                    tb.view[...] = arr  # type: ignore[index]
                else:
                    return self._stage_slow(slot, inputs)
            self.last_sig = slot.sig
            return slot.sig
        return self._stage_slow(slot, inputs)

    # -- everything else ------------------------------------------------------------------

    def _as_mapping(self, inputs: Any) -> Mapping[str, Any]:
        if isinstance(inputs, Mapping):
            return inputs
        if len(self.required) == 1:
            return {self.required[0]: inputs}
        raise InputError(
            f"inputs must be a mapping of name to array; the model has {self.n_in} inputs "
            f"({', '.join(self.in_names)})", hint="pass a dict such as {'name': array}")

    def _classify(self, tb: TensorBuffer, obj: Any) -> tuple[np.ndarray[Any, Any] | None,
                                                             ExternalArray | None]:
        """Split an input into a numpy array to stage, or caller memory to use in place."""
        spec = tb.spec
        if isinstance(obj, _ndarray):
            return obj, None if tb.packed else self._pinned(tb, obj)
        if hasattr(obj, "ptr") and hasattr(obj, "kind") and hasattr(obj, "view"):
            return self._from_host_buffer(tb, obj)
        if self.on_device:
            ext = external_array(spec.name, obj, int(getattr(self.stream, "handle", 0)),
                                 device=getattr(self.stream, "device", None))
            if ext is not None:
                return None, ext
        elif hasattr(obj, "__cuda_array_interface__"):
            raise InputError(f"input {spec.name!r} is in device memory, but this session runs on "
                             "the host", hint="pass a numpy array")
        if isinstance(obj, (list, tuple, int, float, np.generic)):
            raise InputError(f"input {spec.name!r} is a {type(obj).__name__}, not an array",
                             hint=f"pass np.asarray(x, dtype=np.{spec.dtype.name})")
        raise InputError(f"input {spec.name!r} has an unsupported type {type(obj).__name__}",
                         hint="pass a numpy array, a HostBuffer or a device array "
                              "(__cuda_array_interface__ or DLPack)")

    def _pinned(self, tb: TensorBuffer, arr: np.ndarray[Any, Any]) -> ExternalArray | None:
        """Describe ``arr`` as caller memory usable without staging, or None (stage it)."""
        return None

    def _from_host_buffer(self, tb: TensorBuffer, buf: Any) -> tuple[
            np.ndarray[Any, Any] | None, ExternalArray | None]:
        spec = tb.spec
        shape = spec.shape if not spec.is_dynamic else self._buffer_shape(spec, buf)
        try:
            arr = buf.view(spec.dtype, shape)
        except EdgeRTError as err:
            raise InputError(f"input {spec.name!r}: the buffer does not hold a "
                             f"{spec.dtype}{list(shape)}: {err.message}") from err
        return arr, self._pinned(tb, arr)

    def _buffer_shape(self, spec: TensorSpec, buf: Any) -> tuple[int, ...]:
        """The shape a whole buffer gives a dynamic input: its size fills the one dynamic
        dimension, or, with several, the previous request's shape of exactly its size.

        Found by a new user's trial: the shape used to be the slot's last one, so with two slots
        the same 4-row buffer was read as 1 row on every other request, with no error.
        """
        nbytes = int(buf.nbytes)
        dynamic = [axis for axis, d in enumerate(spec.shape) if d < 0]
        fixed = math.prod(d for d in spec.shape if d >= 0) * spec.dtype.itemsize
        if len(dynamic) == 1 and fixed and spec.element_bits % 8 == 0:
            if nbytes % fixed == 0:
                shape = list(spec.shape)
                shape[dynamic[0]] = nbytes // fixed
                return tuple(shape)
            said = f"it is not a whole number of {fixed}-byte steps of dimension {dynamic[0]}"
        else:
            last = self.last_sig
            previous = None if last is None else last[self.in_names.index(spec.name)]
            if previous is None:
                said = "no earlier request gave its shape"
            elif spec.nbytes(previous) == nbytes:
                return previous
            else:
                said = f"the previous request's shape {previous} needs {spec.nbytes(previous)} " \
                       "bytes"
        raise InputError(f"input {spec.name!r} is dynamic {list(spec.shape)} and the buffer "
                         f"({nbytes} bytes) does not say its shape: {said}",
                         hint="pass buffer.view(dtype, shape) instead")

    def _stage_slow(self, slot: Slot, inputs: Any) -> Hashable:
        inputs = self._as_mapping(inputs)
        if len(inputs) != self.n_in or any(n not in inputs for n in self.in_names):
            check_names(inputs, self.in_names, self.required)
        plan: list[tuple[np.ndarray[Any, Any] | None, ExternalArray | None]] = []
        shapes: list[tuple[int, ...] | None] = []
        stage_dev: set[int] = set()
        for tb in slot.inputs:
            spec = tb.spec
            if spec.optional and spec.name not in inputs:
                plan.append((None, None))  # the model's own default is used
                shapes.append(None)
                continue
            arr, ext = self._classify(tb, inputs[spec.name])
            if ext is not None:
                if ext.dtype != spec.dtype:
                    raise InputError(f"input {spec.name!r} has dtype {ext.dtype}, the model "
                                     f"wants {spec.dtype}",
                                     hint="caller memory is used in place and cannot be cast: "
                                          "convert it first")
                shape = ext.shape
            elif tb.packed:
                assert arr is not None
                shape = self._packed_shape(tb, arr)
            elif tb.objects:
                assert arr is not None
                if arr.dtype.kind not in "OU":
                    # bytes too (kind S): ONNX Runtime reads b'hello' as the text "b'hello'"
                    # (found by a hostile-input trial).
                    raise InputError(f"input {spec.name!r} holds strings; got a {arr.dtype} "
                                     "array",
                                     hint="pass a numpy array of str (decode bytes first: "
                                          "x.astype(str), or np.char.decode(x, 'utf-8'))")
                if arr.dtype.kind == "O":
                    # ONNX Runtime turns any object into its str(): None became 'None', 0
                    # became '0' and b'hi' became "b'hi'", a wrong answer with no error
                    # (new-user and hostile-input trials).
                    bad = next((v for v in arr.flat if not isinstance(v, str)), _NONE)
                    if bad is not _NONE:
                        raise InputError(
                            f"input {spec.name!r} holds strings; its object array contains "
                            f"{type(bad).__name__} {bad!r}",
                            hint="pass str elements only, e.g. np.array(['text'], "
                                 "dtype=object); decode bytes first (b.decode('utf-8'))")
                shape = arr.shape
            else:
                assert arr is not None
                if check_dtype(spec, arr.dtype, cast=self.cast):
                    arr = cast_input(spec, arr)
                if self.refuse and not arr.flags.c_contiguous:
                    raise InputError(f"input {spec.name!r} is not C-contiguous",
                                     hint="pass np.ascontiguousarray(x), or create the session "
                                          "with contiguous='copy'")
                shape = arr.shape
            check_shape(spec, shape, self.profile)
            if ext is not None and self._aliases(ext, plan):
                # Bound in place, it would be read while the session writes that memory (a
                # previous output fed back, with slots=1 the very buffer this run writes).
                if arr is not None:
                    ext = None  # staged like any other array
                else:
                    stage_dev.add(len(plan))
            plan.append((arr, ext))
            shapes.append(shape)
        sig = tuple(shapes)
        self.last_sig = sig
        if sig != slot.sig:
            self.reshape(slot, sig)
        staged = slot.sig
        assert staged is not None
        external = False
        for tb, (arr, ext) in zip(slot.inputs, plan, strict=True):
            if ext is not None:
                external = True
            elif tb.packed:
                assert arr is not None
                assert tb.view is not None
                pack_into(tb.spec, arr, tb.view)
            elif tb.objects:
                assert arr is not None
                tb.view = np.array(arr, dtype=object)  # its own copy: ORT reads it at the run
            elif arr is not None:
                _copyto(tb.view, arr)  # type: ignore[arg-type]
        if not external:
            if slot.external:
                slot.rebuild(copies=self.copies)
            return staged
        return self._use_external(slot, staged, plan, stage_dev)

    def _packed_shape(self, tb: TensorBuffer, arr: np.ndarray[Any, Any]) -> tuple[int, ...]:
        spec = tb.spec
        shape = packed_shape(spec, arr)
        if shape is not None:
            return shape
        if not spec.is_dynamic and arr.dtype == np.uint8 and arr.ndim == 1 and \
                arr.size == spec.nbytes():
            return spec.shape  # its packed bytes
        raise packed_error(spec, arr)

    def _owned_ranges(self) -> list[tuple[int, int]]:
        """``(start, end)`` of every host and device buffer the session's slots (and work set)
        hold: staging, landing, mapped and device memory."""
        ranges = []
        buffers = [tb for slot in self.slots for tb in (*slot.inputs, *slot.outputs)]
        buffers.extend(self.extra_buffers())
        for tb in buffers:
            for lease in (tb.host, tb.device):
                if lease is None or lease.released:
                    continue
                n = int(lease.nbytes)
                ranges.append((int(lease.ptr), int(lease.ptr) + n))
                if lease is tb.host and self.on_device:
                    try:
                        dptr = lease.device_ptr  # mapped memory's device alias
                    except EdgeRTError:
                        continue
                    if dptr:
                        ranges.append((int(dptr), int(dptr) + n))
        return ranges

    def extra_buffers(self) -> list[TensorBuffer]:
        """Buffers the runner holds beyond the slots' (the host runner's work set)."""
        return []

    def _aliases(self, ext: ExternalArray, earlier: list[
            tuple[np.ndarray[Any, Any] | None, ExternalArray | None]]) -> bool:
        """Whether caller memory overlaps a buffer the session owns or an earlier input."""
        n = max(math.prod(ext.shape) * ext.dtype.itemsize, 1)
        mine = [(p, p + n) for p in (ext.host_ptr, ext.device_ptr) if p]
        ranges = self._owned_ranges()
        for _arr, other in earlier:
            if other is not None:
                m = max(math.prod(other.shape) * other.dtype.itemsize, 1)
                ranges.extend((p, p + m) for p in (other.host_ptr, other.device_ptr) if p)
        return any(a < e and s < b for a, b in mine for s, e in ranges)

    def _use_external(self, slot: Slot, sig: Hashable, plan: list[
            tuple[np.ndarray[Any, Any] | None, ExternalArray | None]],
                      stage_dev: set[int] | None = None) -> Hashable:
        """Bind (or copy from) caller memory; the key adds the addresses used.

        Device inputs in ``stage_dev`` overlap the session's own memory: they are copied into
        the slot's device buffer on the stream before the executable runs.
        """
        slot.rebuild(copies=self.copies)
        binds = dict(slot.binds)
        h2d = []
        d2d = []
        addrs: list[int] = []
        keep = []
        for i, (tb, (_arr, ext)) in enumerate(zip(slot.inputs, plan, strict=True)):
            name = tb.spec.name
            src = tb.host_ptr
            if ext is not None and stage_dev and i in stage_dev:
                assert ext.device_ptr is not None
                keep.append(ext.keep)
                d2d.append((tb.bind_ptr, ext.device_ptr, tb.nbytes))
                addrs.append(ext.device_ptr)
                continue
            if ext is not None:
                keep.append(ext.keep)
                if self.copies and ext.host_ptr is not None and not tb.host_resident:
                    src = ext.host_ptr  # pinned caller memory: copy from it, not from staging
                    addrs.append(src)
                else:
                    addr = ext.device_ptr if self.on_device and not tb.host_resident \
                        else ext.host_ptr
                    if addr is None:
                        raise InputError(f"input {name!r} is not addressable by this "
                                         "executable", hint="pass a numpy array")
                    binds[name] = addr
                    addrs.append(addr)
                    continue
            if self.copies and not tb.host_resident and tb.nbytes:
                h2d.append((tb.dev_ptr, src, tb.nbytes))
        slot.external = True  # first: an interruption below leaves the slot to be rebuilt
        slot.h2d = h2d
        slot.d2d = d2d
        slot.binds = tuple(binds.items())
        slot.keep = keep
        return (sig, tuple(addrs))

    # -- shapes and buffers ---------------------------------------------------------------

    def apply_shapes(self, sig: Signature) -> None:
        """Set the executable's input shapes to ``sig``.

        Raises:
            InputError: The executable refused a shape (its own reason is in the message).
        """
        exe = self.exe
        self.ctx_sig = None
        self.ctx_warm = False
        for spec, shape in zip(self.in_specs, sig, strict=True):
            if spec.is_dynamic and shape is not None and not exe.set_input_shape(spec.name,
                                                                                  shape):
                raise InputError(f"the executable refused shape {shape} for input "
                                 f"{spec.name!r}{executable_errors(exe)}",
                                 hint="check the shape against the engine's profile")
        self.ctx_sig = sig

    def reshape(self, slot: Slot, sig: Signature) -> None:
        """Shape the executable and ``slot``'s buffers for ``sig`` (checked already).

        Raises:
            InputError: The executable refused a shape.
            NotSupportedError: An output's shape is known only at run time and the executable
                cannot write it through an output allocator.
            PoolExhausted: The pool cannot hold the larger buffers.
        """
        slot.sig = None
        if slot.unsettled:  # an earlier reshape stopped midway: nothing it left may be trusted
            self.buffers_moved(slot)
        slot.unsettled = True
        grown = False
        try:
            self.apply_shapes(sig)
            # The slot's buffers and views are about to change: a Pending of an earlier request
            # on it must not read them (found by review: after a reshape that failed midway one
            # read a lease already given back to the pool). A refused shape changed nothing.
            slot.generation += 1
            for tb, shape in zip(slot.inputs, sig, strict=True):
                if shape is None:
                    absent(tb)
                else:
                    grown |= self._fit(tb, shape)
            grown |= self._fit_outputs(slot, sig)
            if grown:
                self.buffers_moved(slot)
            slot.keep = None
            slot.rebuild(copies=self.copies)
        except BaseException:
            # Refused by the executable, or half reshaped (a pool ran out midway): leases may
            # have been released and shapes changed. No request may trust these buffers -- each
            # input's shape is forgotten, so staging reshapes again (found by review: after a
            # refused shape, a request of the old shape ran with another slot's shapes) -- and
            # nothing that names their old addresses survives.
            # Everything up to the signature is settled only once all of this has run: an
            # exception anywhere above (KeyboardInterrupt too: found by a trial, a batch-5
            # request then returned one row) leaves slot.sig None and the slot unsettled.
            for tb in slot.inputs:
                tb.shape = None
            self.buffers_moved(slot)
            slot.unsettled = False
            raise
        slot.sig = sig
        slot.unsettled = False

    # -- what each device does -------------------------------------------------------------

    def infer_short(self, inputs: Any, start: int) -> Mapping[str, Any] | None:
        """Run a request a shorter way and return its outputs as ``infer`` would, or None (the
        general way)."""
        return None

    def disarm(self) -> None:
        """Make the next ``infer`` take the general way."""

    def owned_result(self, outs: tuple[tuple[str, Any], ...], start: int) -> dict[str, Any]:
        """The end of a short way: a copy of each output view, and the request's latency."""
        result = {}
        for name, view in outs:
            result[name] = view.copy()
        if self.host_timing:
            self.stats.latency.record(_now() - start)
        return result

    def launch(self, slot: Slot, key: Hashable, pipelined: bool,
               wait_now: bool = False) -> None:
        """Enqueue (or, on the host, run) the request staged in ``slot``.

        ``wait_now``: ``finish`` is called at once (``infer``).
        """
        raise NotImplementedError

    def query(self, slot: Slot) -> bool:
        """Whether the slot's request has finished. Never blocks."""
        raise NotImplementedError

    def wait(self, slot: Slot, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the slot's request; True if it finished."""
        raise NotImplementedError

    def finish(self, slot: Slot) -> None:
        """Wait for the slot's request, record its timings, mark the slot idle."""
        raise NotImplementedError

    def drain(self) -> None:
        """Wait for all enqueued work, ignoring errors."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner itself made."""

    def buffers_moved(self, slot: Slot) -> None:
        """Forget everything that holds the slot's old addresses."""
        self.bound_token = None

    def wants_host(self, tb: TensorBuffer) -> bool:
        """Whether ``tb`` needs a host lease."""
        return True

    def wants_device(self, tb: TensorBuffer) -> bool:
        """Whether ``tb`` needs a device lease."""
        return False

    def _fit(self, tb: TensorBuffer, shape: tuple[int, ...]) -> bool:
        """Shape ``tb`` for ``shape``, growing its leases if needed; True if any moved."""
        spec: TensorSpec = tb.spec
        if tb.objects:
            tb.shape = shape
            tb.view = tb.dview = None
            tb.nbytes = 0
            tb.small = False
            tb.bind_ptr = tb.host_ptr = tb.dev_ptr = 0
            return False
        nbytes = packed_nbytes(spec.element_bits, shape)
        grown = False
        tb.view = None
        tb.dview = None
        # Each lease is dropped from the buffer before it is released: an exception between
        # the two (KeyboardInterrupt too) must never leave a released lease in use (found by a
        # trial: "double release" and released-lease errors on every later request).
        if self.wants_host(tb) and (tb.host is None or tb.host.nbytes < nbytes):
            old, tb.host = tb.host, None
            if old is not None:
                old.release()
            pool = self.host_pool
            tb.host = pool.acquire(pool.capacity_for(max(nbytes, 1)))
            grown = True
        if self.wants_device(tb) and (tb.device is None or tb.device.nbytes < nbytes):
            old, tb.device = tb.device, None
            if old is not None:
                old.release()
            pool = self.device_pool
            tb.device = pool.acquire(pool.capacity_for(max(nbytes, 1)))
            grown = True
        tb.shape = shape
        tb.nbytes = nbytes
        tb.small = nbytes <= STAGE_LIMIT_BYTES and not tb.packed
        if tb.host is not None:
            tb.host_ptr = tb.host.ptr
            tb.view = tb.host.view(*view_args(spec, shape, nbytes))
        self.place(tb)
        return grown

    def place(self, tb: TensorBuffer) -> None:
        """Set ``tb``'s bound and copy addresses (and device view) for this device."""
        self.place_pointers(tb)

    def place_pointers(self, tb: TensorBuffer) -> None:
        """Set ``tb``'s bound and copy addresses for this device."""
        tb.bind_ptr = tb.host_ptr
        tb.dev_ptr = 0

    def bind(self, slot: Slot) -> None:
        """Give the executable the slot's addresses (only those that changed).

        Raises:
            InferenceError: The executable refused an address.
        """
        self.bind_pairs(slot.binds)

    def bind_pairs(self, binds: tuple[tuple[str, int], ...]) -> None:
        """Give the executable these ``(name, address)`` pairs (only those that changed).

        Raises:
            InferenceError: The executable refused an address.
        """
        if self.bound_token is binds:
            return
        # Forgotten first: a refusal midway leaves some addresses moved, and the slot the token
        # named must bind again (found by review: it read the refused request's input instead).
        self.bound_token = None
        bound = self.bound
        exe = self.exe
        for name, addr in binds:
            if bound.get(name) != addr:
                # Forgotten before the call: an interrupt right after it returns must not leave
                # the old address on record while the executable holds the new one.
                bound.pop(name, None)
                if not exe.set_tensor_address(name, addr):
                    raise InferenceError(f"the executable refused address 0x{addr:x} for "
                                         f"tensor {name!r}{executable_errors(exe)}")
                bound[name] = addr
        self.bound_token = binds

