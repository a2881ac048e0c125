"""The output side of a runner: shapes known only at run time, strings, packed and echoed outputs.

An output whose shape follows from the input shapes is a pooled buffer bound by address. One
whose size is known only once the model has run is written through the session's
:class:`~edgert.session._outalloc.SessionOutputAllocator` (grow-only pooled memory, never bound
by address) and gets its real shape in :meth:`OutputPlan.settle`; an output that is also a graph
input is copied from that input; strings pass as numpy object arrays; packed sub-byte outputs are
handed out unpacked. A run that shows an output's declared shape was wrong re-plans it
(:meth:`OutputPlan.refit_outputs`).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

import numpy as np

from edgert._executable import Executable, TensorSpec
from edgert.errors import InferenceError, NotSupportedError
from edgert.session._outalloc import SessionOutputAllocator, packed_nbytes
from edgert.session._packed import unpack
from edgert.session._slot import Signature, Slot, TensorBuffer

__all__ = ["OutputPlan", "executable_errors", "view_args"]

_log = logging.getLogger("edgert.session")


def executable_errors(exe: Executable) -> str:
    """The executable's own error lines (TensorRT, ONNX Runtime), formatted for a message."""
    fetch = getattr(exe, "last_errors", None)
    lines: tuple[str, ...] = tuple(fetch()) if callable(fetch) else ()
    return (": " + "; ".join(lines)) if lines else ""


def view_args(spec: TensorSpec, shape: tuple[int, ...], nbytes: int) -> tuple[
        np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape of a host view: packed sub-byte tensors are viewed as their bytes."""
    if spec.element_bits == 8 * spec.dtype.itemsize:
        return spec.dtype, shape
    return np.dtype(np.uint8), (nbytes,)


class OutputPlan:
    """The output half of :class:`~edgert.session._runner.Runner` (a base class of it)."""

    exe: Executable
    out_specs: tuple[TensorSpec, ...]
    echo_of: dict[int, int]
    allocator: SessionOutputAllocator | None
    alloc_registered: set[str]
    warned: set[str]
    slots: list[Slot]
    in_set: frozenset[str]
    copies: bool
    bound_token: object
    host_pool: Any
    device_pool: Any

    # -- what the runner provides ---------------------------------------------------------

    def _fit(self, tb: TensorBuffer, shape: tuple[int, ...]) -> bool:
        raise NotImplementedError

    def buffers_moved(self, slot: Slot) -> None:
        raise NotImplementedError

    def wants_host(self, tb: TensorBuffer) -> bool:
        raise NotImplementedError

    def wants_device(self, tb: TensorBuffer) -> bool:
        raise NotImplementedError

    def place_pointers(self, tb: TensorBuffer) -> None:
        raise NotImplementedError

    # -- outputs --------------------------------------------------------------------------

    def _output_shapes(self, sig: Signature) -> list[
            tuple[int, ...] | None]:
        """Each output's shape for ``sig``; None for one the executable writes through the
        session's output allocator (registered here the first time it is needed)."""
        shapes: list[tuple[int, ...] | None] = []
        exe = self.exe
        for i, spec in enumerate(self.out_specs):
            j = self.echo_of.get(i)
            if j is not None:
                shapes.append(sig[j])
                continue
            if spec.dtype.kind == "O":
                shapes.append(())  # strings: the executable hands out a new array per run
                continue
            shape = tuple(int(d) for d in exe.get_tensor_shape(spec.name))
            if (spec.unknown_rank or len(shape) == len(spec.shape)) and \
                    all(d >= 0 for d in shape):
                shapes.append(shape)
                continue
            self._register_allocator(spec.name, shape)
            shapes.append(None)
        return shapes

    def _register_allocator(self, name: str, shape: tuple[int, ...]) -> None:
        if name in self.alloc_registered:
            return
        register = getattr(self.exe, "set_output_allocator", None)
        if not callable(register):
            raise NotSupportedError(
                f"output {name!r} has shape {shape} after the input shapes were set (its size "
                f"is known only once the model has run), and this executable offers no "
                f"set_output_allocator{executable_errors(self.exe)}",
                hint="give the executable set_output_allocator (see edgert.OutputAllocator), "
                     "or fix the output's shape in the model")
        if self.allocator is None:
            self.allocator = SessionOutputAllocator(self)
        if not register(name, self.allocator):
            raise NotSupportedError(
                f"the executable refused an output allocator for {name!r}"
                f"{executable_errors(self.exe)}",
                hint="its output shape must then follow from the input shapes")
        self.alloc_registered.add(name)

    def _fit_outputs(self, slot: Slot, sig: Signature) -> bool:
        grown = False
        for i, (tb, shape) in enumerate(zip(slot.outputs, self._output_shapes(sig),
                                            strict=True)):
            j = self.echo_of.get(i)
            tb.echo = None if j is None else slot.inputs[j]
            if shape is None:
                tb.allocated = True
                tb.view = tb.dview = None
                tb.shape = tb.notified = None
                tb.nbytes = 0
                tb.small = False
                continue
            tb.allocated = False
            grown |= self._fit(tb, shape)
        return grown

    def refit_outputs(self, slot: Slot) -> bool:
        """After a run showed that an output's shape differs from the one the executable had
        reported (a wrong declaration), reshape the outputs of ``slot`` and forget the shapes of
        every other slot. True if any output of ``slot`` changed how it is written.

        Raises:
            NotSupportedError: As for :meth:`reshape`.
            PoolExhausted: The pool cannot hold the larger buffers.
        """
        sig = slot.sig
        if sig is None:
            return False
        before = [tb.allocated for tb in slot.outputs]
        shapes_before = [tb.shape for tb in slot.outputs]
        # Unsettled until the end: an exception midway (even KeyboardInterrupt) makes the next
        # request reshape from scratch instead of trusting half-updated views and bindings.
        slot.sig = None
        slot.unsettled = True
        if self._fit_outputs(slot, sig):
            self.buffers_moved(slot)
        if before == [tb.allocated for tb in slot.outputs] and \
                shapes_before == [tb.shape for tb in slot.outputs]:
            slot.sig = sig
            slot.unsettled = False
            return False
        external, binds = slot.external, dict(slot.binds)
        h2d, keep = slot.h2d, slot.keep
        slot.rebuild(copies=self.copies)
        if external:  # keep the caller memory the inputs are bound to
            slot.external = True
            slot.binds = tuple((n, binds.get(n, a)) if n in self.in_set else (n, a)
                               for n, a in slot.binds)
            slot.h2d, slot.keep = h2d, keep
        slot.sig = sig
        slot.unsettled = False
        self.bound_token = None
        for other in self.slots:
            if other is not slot:
                other.sig = None
                for tb in other.inputs:
                    tb.shape = None  # the next request takes the checked path and reshapes
        return True

    def settle(self, slot: Slot) -> None:
        """Give allocated outputs their real shapes and copy outputs that echo an input.

        Called once the slot's request has run (on a device: has completed).

        Raises:
            InferenceError: An output allocator callback failed, or the executable did not
                report an output's shape or wrote more than it asked for.
        """
        changed = False
        alloc = self.allocator
        err = None if alloc is None else alloc.take_error()
        if err is not None:
            hint = ("raise the pool's budget (pool=BufferPool.for_host(max_bytes=...)) for "
                    "outputs this large") if isinstance(err, MemoryError) else \
                "the executable broke the OutputAllocator contract; see the chained exception"
            raise InferenceError(f"the output allocator failed: {err}", hint=hint) from err
        for tb in slot.allocs:
            shape = tb.notified
            if shape is None:
                raise InferenceError(
                    f"the executable ran but did not report the shape of output "
                    f"{tb.name!r}{executable_errors(self.exe)}")
            spec = tb.spec
            nbytes = packed_nbytes(spec.element_bits, shape)
            if nbytes > tb.alloc_nbytes and nbytes:
                raise InferenceError(
                    f"output {tb.name!r} has shape {shape} ({nbytes} bytes), more than the "
                    f"{tb.alloc_nbytes} bytes the executable asked the session for")
            if shape != tb.shape or tb.view is None or tb.nbytes != nbytes:
                self._warn_declared(spec, shape)
                tb.shape = shape
                tb.nbytes = nbytes
                self.view_allocated(tb)
                changed = True
        if changed:
            slot.results = MappingProxyType({tb.name: tb.view for tb in slot.outputs})
            slot.results_device = MappingProxyType({tb.name: tb.dview for tb in slot.outputs})

    def pass_objects(self, slot: Slot) -> None:
        """Give the executable the slot's string inputs (they never live in raw memory).

        Raises:
            InferenceError: The executable cannot take them.
        """
        put = getattr(self.exe, "set_tensor_value", None)
        for tb in slot.objects:
            if tb.spec.is_input and tb.view is not None and (
                    not callable(put) or not put(tb.name, tb.view)):
                raise InferenceError(f"the executable refused string input {tb.name!r}"
                                         f"{executable_errors(self.exe)}")

    def take_objects(self, slot: Slot) -> None:
        """Hand out the string outputs the executable produced.

        Raises:
            InferenceError: The executable produced none.
        """
        get = getattr(self.exe, "get_tensor_value", None)
        results = dict(slot.results)
        for tb in slot.objects:
            if not tb.spec.is_input:
                value = get(tb.name) if callable(get) else None
                if value is None:
                    raise InferenceError(f"the executable produced no value for string output "
                                         f"{tb.name!r}{executable_errors(self.exe)}")
                tb.view = value
                tb.shape = tuple(value.shape)
                results[tb.name] = value
        slot.results = MappingProxyType(results)

    def run_errors(self) -> str:
        """The executable's error lines and a failed allocator callback, for a message."""
        text = executable_errors(self.exe)
        alloc = self.allocator
        err = None if alloc is None else alloc.take_error()
        if err is not None:
            text += f"{'; ' if text else ': '}the output allocator failed: {err}"
        return text

    def _warn_declared(self, spec: TensorSpec, shape: tuple[int, ...]) -> None:
        if spec.name in self.warned or spec.unknown_rank:
            return
        if len(shape) == len(spec.shape) and all(
                d < 0 or d == a for d, a in zip(spec.shape, shape, strict=True)):
            return
        self.warned.add(spec.name)
        _log.warning("output %r has shape %s, which its declared shape %s does not allow; "
                     "edgert returns the real shape (the model's declaration is wrong)",
                     spec.name, shape, spec.shape)

    def view_allocated(self, tb: TensorBuffer) -> None:
        """Make the host view (and device view) of an allocated output with its real shape."""
        assert tb.shape is not None
        spec = tb.spec
        if tb.host is not None:
            tb.view = tb.host.view(*view_args(spec, tb.shape, tb.nbytes))
        else:
            tb.view = None

    def grow_allocated(self, tb: TensorBuffer, nbytes: int) -> int:
        """Memory of at least ``nbytes`` for an allocated output; returns the bound address.

        Raises:
            PoolExhausted: The pool cannot serve it.
        """
        grown = False
        if self.wants_host(tb) and (tb.host is None or tb.host.nbytes < nbytes):
            old, tb.host = tb.host, None  # never keep a released lease if the pool refuses
            tb.host = _regrow(old, self.host_pool, nbytes)
            grown = True
        if self.wants_device(tb) and (tb.device is None or tb.device.nbytes < nbytes):
            old, tb.device = tb.device, None
            tb.device = _regrow(old, self.device_pool, nbytes)
            grown = True
        if grown or not tb.bind_ptr:
            tb.host_ptr = tb.host.ptr if tb.host is not None else 0
            tb.view = tb.dview = None
            self.place_pointers(tb)
        return tb.bind_ptr

    def unpack_outputs(self, slot: Slot) -> None:
        """Hand out packed sub-byte outputs unpacked (ml_dtypes arrays), where ml_dtypes exists."""
        results = dict(slot.results)
        for tb in slot.packed:
            if tb.view is not None and tb.shape is not None:
                results[tb.name] = unpack(tb.spec, tb.view, tb.shape)
        slot.results = MappingProxyType(results)


def _regrow(lease: Any, pool: Any, nbytes: int) -> Any:
    """Give ``lease`` (if any) back and take one of at least ``nbytes`` from ``pool``.

    Raises:
        PoolExhausted: The pool cannot serve it (the old lease is already given back).
    """
    if lease is not None:
        lease.release()
    return pool.acquire(pool.capacity_for(nbytes))
