"""The host-device path: no GPU (or ``device="host"``), everything in host memory, synchronous.

The executable (ONNX Runtime, or the fake TensorRT module's contexts, which read and write host
addresses) runs inside ``execute_async_v3``, so a request is complete when it has been enqueued.
Rebinding a tensor costs ONNX Runtime about as much as running a small model, so with several
slots the executable stays bound to one *work* set of buffers: a request's staged inputs are
copied into it and its outputs copied out to the slot's own buffers (a few hundred nanoseconds
for small tensors, against microseconds per rebinding). With one slot the slot's buffers are the
work set. In ``zero_copy`` I/O, large contiguous inputs are bound where they are; small ones are
staged.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Hashable, Mapping
from typing import Any

from edgert.errors import EdgeRTError, InferenceError
from edgert.session._options import OutputMode
from edgert.session._outalloc import packed_nbytes
from edgert.session._runner import (
    STAGE_LIMIT_BYTES,
    Runner,
    absent,
    copy_plain,
    executable_errors,
)
from edgert.session._slot import Slot, TensorBuffer
from edgert.session._validate import ExternalArray

_memmove = ctypes.memmove

__all__ = ["HostRunner"]

_now = time.perf_counter_ns


def _raised(err: Exception) -> InferenceError:
    """The error for an exception of the runtime's own type, raised by a run."""
    return InferenceError(f"the executable raised {type(err).__name__}: {err}",
                          hint="see the chained exception")


class HostRunner(Runner):
    """Runs requests synchronously on the host (see the module documentation)."""

    on_device = False
    zero_copy = False
    work_in: list[TensorBuffer] | None = None
    work_out: list[TensorBuffer] = []  # noqa: RUF012 - replaced per instance
    work_sig: object = None
    work_binds: tuple[tuple[str, int], ...] = ()
    work_copy: tuple[int, ...] = ()
    work_in_copy: tuple[int, ...] = ()
    #: The short way of ``infer`` (see the module documentation): ``(input buffers, (name,
    #: output view) pairs, the bindings and the shapes it is valid for, the slot whose buffers
    #: it uses (None: the work set), the outputs written through the allocator (None: none))``,
    #: or None until a plain request has run.
    armed: tuple[tuple[TensorBuffer, ...], tuple[tuple[str, Any], ...], object, object,
                 Slot | None, _Allocated | None] | None = None
    bare = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # timing="stages" takes the general way, which times the run apart from the request.
        self.short_way = self.options.outputs is OutputMode.COPY and not self.record_stages

    def use_work_set(self) -> None:
        """Keep the executable bound to one set of buffers (for more than one slot)."""
        self.work_in = [TensorBuffer(s) for s in self.in_specs]
        self.work_out = [TensorBuffer(s) for s in self.out_specs]
        # Allocated outputs are written into the work set too: memory that moved from slot to
        # slot would make ONNX Runtime rebind them on every request (microseconds each).
        self.work_slot = Slot(-1, self.work_in, self.work_out)

    def _shape_work(self, slot: Slot) -> None:
        assert self.work_in is not None
        self.work_sig = None
        for w, tb in zip(self.work_in, slot.inputs, strict=True):
            if tb.shape is None or tb.objects:
                absent(w)
            else:
                self._fit(w, tb.shape)
        self.work_in_copy = tuple(i for i, tb in enumerate(slot.inputs)
                                  if tb.shape is not None and not tb.objects)
        for w, tb in zip(self.work_out, slot.outputs, strict=True):
            # Allocated and echoed outputs are written straight into the slot's own buffers.
            w.allocated = tb.unbound
            if not w.allocated:
                assert tb.shape is not None
                self._fit(w, tb.shape)
        self.work_binds = tuple((w.spec.name, w.bind_ptr) for w in self.work_in
                                if not w.objects) + tuple(
            (w.spec.name, w.bind_ptr) for w in self.work_out if not w.allocated)
        self.work_copy = tuple(i for i, w in enumerate(self.work_out) if not w.allocated)
        self.work_sig = slot.sig

    def _bind_work(self, slot: Slot) -> None:
        work_in = self.work_in
        assert work_in is not None
        if self.work_sig != slot.sig:
            self._shape_work(slot)
        if not slot.external:
            ins = slot.inputs
            for i in self.work_in_copy:
                work_in[i].view[...] = ins[i].view  # type: ignore[index]
            self.bind_pairs(self.work_binds)
            return
        given = dict(slot.binds)
        pairs = []
        for w, tb in zip(work_in, slot.inputs, strict=True):
            name = tb.spec.name
            if tb.objects:
                continue
            if given[name] != tb.bind_ptr or tb.view is None:
                pairs.append((name, given[name]))  # caller memory bound in place, or absent
            else:
                w.view[...] = tb.view  # type: ignore[index]
                pairs.append((name, w.bind_ptr))
        pairs.extend((w.spec.name, w.bind_ptr) for w in self.work_out if not w.allocated)
        self.bind_pairs(tuple(pairs))

    def extra_buffers(self) -> list[TensorBuffer]:
        """The work set's buffers."""
        return [*(self.work_in or ()), *self.work_out]

    def close(self) -> None:
        """Give the work set's buffers back."""
        for w in (*(self.work_in or ()), *self.work_out):
            w.release()

    def _pinned(self, tb: TensorBuffer, arr: Any) -> ExternalArray | None:
        """In zero-copy I/O, bind large contiguous arrays of the right dtype in place."""
        if not self.zero_copy or arr.nbytes <= STAGE_LIMIT_BYTES or \
                not arr.flags.c_contiguous or arr.dtype != tb.spec.dtype:
            return None
        ptr = int(arr.__array_interface__["data"][0])
        return ExternalArray(ptr, None, tuple(arr.shape), arr.dtype, None, arr)

    def launch(self, slot: Slot, key: Hashable, pipelined: bool,
               wait_now: bool = False) -> None:
        """Run the request now.

        Raises:
            InferenceError: The executable failed (its own message is included).
        """
        sig = slot.sig
        if sig is None:  # never staged, or its reshape failed: nothing in it may run
            raise InferenceError("internal error: a request reached a slot with no shapes",
                                 hint="report this; the session stays usable")
        if self.ctx_sig is not sig and self.ctx_sig != sig:
            self.apply_shapes(sig)
        work = self.work_in is not None
        if work:
            self._bind_work(slot)
        elif self.bound_token is not slot.binds:
            self.bind(slot)
        special = slot.special
        if special:
            self._before(slot)
        start = _now()
        if not self._execute():
            self._replan(slot, work)
            special = slot.special
        slot.t_compute_ns = _now() - start
        slot.timed = 0
        if work:
            outs, work_out = slot.outputs, self.work_out
            for i in self.work_copy:
                outs[i].view[...] = work_out[i].view  # type: ignore[index]
        if special:
            self._after(slot)
        # Outputs written through the allocator may take the short way; nothing else special.
        if self.short_way and not slot.external and not (
                slot.echoes or slot.packed or slot.objects):
            self._arm(slot, work)

    def _arm(self, slot: Slot, work: bool) -> None:
        """Let ``infer`` take the short way while the bindings and shapes stay as they are."""
        token = self.work_binds if work else slot.binds
        armed = self.armed
        if armed is not None and armed[2] is token and armed[3] is self.ctx_sig and \
                armed[4] is (None if work else slot):
            if armed[5] is not None:  # a general run may have moved allocated outputs: let the
                armed[5].forget()      # views go, and with them any block they hold
            return
        self.armed = None
        ins = tuple(self.work_in) if self.work_in is not None else tuple(slot.inputs)
        outs = self.work_out if work else slot.outputs
        if self.bound_token is not token or any(
                tb.shape is None or tb.packed or tb.view is None or
                (self.zero_copy and not tb.small) for tb in ins):
            return  # absent optional inputs, packed data, caller memory bound in place
        allocated = None
        if slot.allocs:  # and nothing else special (the caller checked)
            if self.allocator is None:
                return
            allocated = _Allocated(self.work_slot if work else slot,
                                   tuple(i for i, tb in enumerate(slot.outputs) if tb.allocated),
                                   outs)
        elif any(tb.unbound or tb.view is None for tb in outs):
            return
        self.armed = (ins, tuple((tb.name, None if tb.allocated else tb.view) for tb in outs),
                      token, self.ctx_sig, None if work else slot, allocated)
        # a bare array is the one required input's, as the general way reads it
        self.bare = len(ins) == 1 and self.required == (ins[0].name,)

    def infer_short(self, inputs: Any, start: int) -> Mapping[str, Any] | None:
        """Run ``inputs`` the short way and return owned outputs, or None: take the general way.

        Raises:
            InferenceError: The executable raised.
        """
        armed = self.armed
        if armed is None:
            return None
        ins, outs, token, sig, slot, allocated = armed
        if self.bound_token is not token or self.ctx_sig is not sig or \
                (slot is not None and slot.busy):
            return None
        if not copy_plain(ins, inputs, self.bare, self.refuse):
            return None
        self.last_sig = sig
        if slot is not None:
            slot.generation += 1  # an earlier request's Pending no longer reads this slot
            slot.served += 1
        if allocated is not None:
            assert self.allocator is not None
            self.allocator.start(allocated.target)
        try:  # _execute's body, inline: a call less on the hot path
            ok = self.exe.execute_async_v3(0)
        except EdgeRTError:
            raise
        except Exception as err:  # a runtime's own exception types
            raise _raised(err) from err
        if not ok:
            self.armed = None
            if self._output_moved(outs):
                return None  # a wrong declaration: the general way re-plans and runs again
            raise self._run_failed()
        if allocated is not None:
            return self._owned_allocated(outs, allocated, slot, start)
        if slot is None:
            self.shortcuts += 1  # no slot counts it (a swap frees the old model by this count)
        result = {}  # owned_result's body, inline
        for name, view in outs:
            result[name] = view.copy()
        if self.host_timing:
            self.stats.latency.record(_now() - start)
        return result

    def _owned_allocated(self, outs: tuple[tuple[str, Any], ...], allocated: _Allocated,
                         slot: Slot | None, start: int) -> dict[str, Any] | None:
        """The owned outputs of a short-way run that wrote some through the allocator; None
        (after disarming) if the allocator failed or an output was not reported as it must be:
        the general way then runs the request again and says what went wrong."""
        alloc = self.allocator
        assert alloc is not None
        alloc.slot = None  # no request is running
        if alloc.error is not None:
            alloc.take_error()  # the general way's run meets it again, and reports it
            self.armed = None
            return None
        result: dict[str, Any] = {}
        views = allocated.views
        for i, (name, view) in enumerate(outs):
            if i not in views:
                result[name] = view.copy()
                continue
            tb = allocated.buffers[i]
            shape = tb.notified
            lease = tb.host
            if shape is None or lease is None:
                self.armed = None
                return None
            cached = views[i]
            # The pool hands lease objects out again: the generation tells this acquisition
            # from an earlier one of the same object (a view over the old block held an
            # earlier request's output: found by review).
            generation = lease.generation
            if cached is None or cached[0] is not lease or cached[3] != generation or \
                    cached[1] != shape:
                nbytes = packed_nbytes(tb.spec.element_bits, shape)
                cached = views[i] = (lease, shape, lease.view(tb.spec.dtype, shape),
                                     generation, nbytes)
            if cached[4] > tb.alloc_nbytes:  # wrote more than it asked for: the general way
                self.armed = None             # runs it again and says so
                return None
            result[name] = cached[2].copy()
        if slot is None:
            self.shortcuts += 1
        if self.host_timing:
            self.stats.latency.record(_now() - start)
        return result

    def _output_moved(self, outs: tuple[tuple[str, Any], ...]) -> bool:
        """Whether, after a failed run, the executable reports an output shape other than the
        one its buffer was made for (the run proved a declaration wrong)."""
        exe = self.exe
        for name, view in outs:
            if view is not None and \
                    tuple(int(d) for d in exe.get_tensor_shape(name)) != view.shape:
                return True
        return False

    def disarm(self) -> None:
        """Make the next ``infer`` take the general way (``warmup`` goes through every slot)."""
        self.armed = None

    def _before(self, slot: Slot) -> None:
        if slot.allocs:
            assert self.allocator is not None
            self.allocator.start(slot if self.work_in is None else self.work_slot)
        if slot.objects:
            self.pass_objects(slot)

    def _after(self, slot: Slot) -> None:
        if slot.allocs or slot.echoes:
            self._settle_host(slot)
        if slot.packed:
            self.unpack_outputs(slot)
        if slot.objects:
            self.take_objects(slot)

    def _replan(self, slot: Slot, work: bool) -> None:
        """After a failed run: re-plan outputs the run proved wrongly declared and run again.

        Raises:
            InferenceError: The run failed for another reason, or failed again.
        """
        ok = False
        retries = len(slot.outputs)
        while retries and self.refit_outputs(slot):
            # An output's real shape contradicted the one the executable had reported (a wrong
            # declaration in the model); the executable now leaves it to the allocator. A run
            # stops at the first such output, so there may be more.
            retries -= 1
            if work:
                self.work_sig = None
                self._bind_work(slot)
            else:
                self.bind(slot)
            if slot.special:
                self._before(slot)
            ok = self._execute()
            if ok:
                executable_errors(self.exe)  # drop the lines of the runs that found the shapes
                return
        raise self._run_failed()

    def _run_failed(self) -> InferenceError:
        return InferenceError(f"the executable failed{self.run_errors()}",
                              hint="see the runtime's message; the session stays usable")

    def _execute(self) -> bool:
        try:
            return bool(self.exe.execute_async_v3(0))
        except EdgeRTError:
            raise
        except Exception as err:  # a runtime's own exception types
            raise _raised(err) from err

    def _settle_host(self, slot: Slot) -> None:
        if self.work_in is not None:
            self._take_allocated(slot)
        bound = self.bound
        for tb in slot.echoes:
            src = tb.echo
            assert src is not None
            if tb.nbytes:
                _memmove(tb.host_ptr, bound[src.name], tb.nbytes)
        if self.allocator is not None:
            self.allocator.slot = None
        self.settle(slot)

    def _take_allocated(self, slot: Slot) -> None:
        """Copy the allocated outputs the executable wrote into the work set to ``slot``."""
        work_out = self.work_out
        for i, tb in enumerate(slot.outputs):
            if not tb.allocated:
                continue
            w = work_out[i]
            tb.notified = w.notified
            tb.alloc_nbytes = w.alloc_nbytes
            if tb.notified is None or not w.host_ptr:
                continue  # settle() says what the executable failed to do
            nbytes = packed_nbytes(tb.spec.element_bits, tb.notified)
            if nbytes > w.alloc_nbytes:
                continue  # settle() refuses it
            self.grow_allocated(tb, max(w.alloc_nbytes, 1))
            if nbytes:
                _memmove(tb.host_ptr, w.host_ptr, nbytes)

    def query(self, slot: Slot) -> bool:
        """Host requests are done once enqueued."""
        return True

    def wait(self, slot: Slot, timeout: float) -> bool:
        """Host requests are done once enqueued."""
        return True

    def finish(self, slot: Slot) -> None:
        """Record the request's timings and mark the slot idle."""
        slot.busy = False
        slot.keep = None
        if self.host_timing:
            latency = _now() - slot.t_submit_ns
            slot.t_latency_ns = latency
            stats = self.stats
            stats.latency.record(latency)
            if self.record_stages and slot.t_compute_ns is not None:
                stats.compute.record(slot.t_compute_ns)

    def drain(self) -> None:
        """Nothing runs asynchronously on the host."""


class _Allocated:
    """What the short way needs for outputs written through the allocator: the slot to point
    the allocator at, the buffers it writes, and per output the view last made over them
    (``(lease, shape, view, the lease's generation, bytes)``, remade when any changes and
    dropped whenever the general way runs; never the slot's own views, which the general way
    keeps in step with its results)."""

    __slots__ = ("buffers", "target", "views")

    def __init__(self, target: Slot, indices: tuple[int, ...],
                 buffers: list[TensorBuffer]) -> None:
        self.target = target
        self.buffers = buffers
        self.views: dict[int, tuple[Any, tuple[int, ...], Any, int, int] | None] = \
            dict.fromkeys(indices)

    def forget(self) -> None:
        """Drop every view (the general way ran: the memory under them may have moved)."""
        for i in self.views:
            self.views[i] = None

