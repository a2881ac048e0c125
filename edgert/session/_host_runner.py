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
from collections.abc import Hashable
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError, InferenceError
from edgert.session._options import TimingMode
from edgert.session._runner import STAGE_LIMIT_BYTES, Runner, absent, executable_errors
from edgert.session._slot import Slot, TensorBuffer
from edgert.session._validate import ExternalArray

_copyto = np.copyto
_memmove = ctypes.memmove

__all__ = ["HostRunner"]

_now = time.perf_counter_ns


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

    def use_work_set(self) -> None:
        """Keep the executable bound to one set of buffers (for more than one slot)."""
        self.work_in = [TensorBuffer(s) for s in self.in_specs]
        self.work_out = [TensorBuffer(s) for s in self.out_specs]

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
                _copyto(work_in[i].view, ins[i].view)  # type: ignore[arg-type]
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
                _copyto(w.view, tb.view)  # type: ignore[arg-type]
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
        if self.ctx_sig is not sig and self.ctx_sig != sig:
            assert sig is not None
            self.apply_shapes(sig)
        work = self.work_in is not None
        if work:
            self._bind_work(slot)
        elif self.bound_token is not slot.binds:
            self.bind(slot)
        special = slot.special
        if special:
            self._before(slot)
        exe = self.exe
        start = _now()
        try:
            ok = exe.execute_async_v3(0)
        except EdgeRTError:
            raise
        except Exception as err:  # a runtime's own exception types
            raise InferenceError(f"the executable raised {type(err).__name__}: {err}",
                                 hint="see the chained exception") from err
        if not ok:
            self._replan(slot, work)
            special = slot.special
        slot.t_compute_ns = _now() - start
        slot.timed = 0
        if work:
            outs, work_out = slot.outputs, self.work_out
            for i in self.work_copy:
                _copyto(outs[i].view, work_out[i].view)  # type: ignore[arg-type]
        if special:
            self._after(slot)

    def _before(self, slot: Slot) -> None:
        if slot.allocs:
            assert self.allocator is not None
            self.allocator.slot = slot
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
        raise InferenceError(f"the executable failed{self.run_errors()}",
                             hint="see the runtime's message; the session stays usable")

    def _execute(self) -> bool:
        exe = self.exe
        try:
            return bool(exe.execute_async_v3(0))
        except EdgeRTError:
            raise
        except Exception as err:  # a runtime's own exception types
            raise InferenceError(f"the executable raised {type(err).__name__}: {err}",
                                 hint="see the chained exception") from err

    def _settle_host(self, slot: Slot) -> None:
        bound = self.bound
        for tb in slot.echoes:
            src = tb.echo
            assert src is not None
            if tb.nbytes:
                _memmove(tb.host_ptr, bound[src.name], tb.nbytes)
        if self.allocator is not None:
            self.allocator.slot = None
        self.settle(slot)

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
        if self.options.timing is not TimingMode.OFF:
            latency = _now() - slot.t_submit_ns
            slot.t_latency_ns = latency
            stats = self.stats
            stats.latency.record(latency)
            if slot.t_compute_ns is not None:
                stats.compute.record(slot.t_compute_ns)

    def drain(self) -> None:
        """Nothing runs asynchronously on the host."""
