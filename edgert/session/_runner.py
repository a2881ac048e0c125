"""What the CUDA and host runners share: staging inputs, shapes, buffers and bindings.

The hot path is :meth:`Runner.stage`: when every input is a numpy array of the model's dtype and
of the previous request's shape, it is one ``np.copyto`` per input into the slot's staging view.
Anything else goes through :meth:`Runner._stage_slow`, which checks everything before anything is
enqueued (so a rejected request leaves the session usable), reshapes the executable and the
slot's buffers when the shapes changed, and binds caller memory where no copy is needed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from edgert._executable import Executable, TensorSpec
from edgert.errors import EdgeRTError, InferenceError, InputError, NotSupportedError
from edgert.session._options import ContiguityMode, OutputMode, SessionOptions
from edgert.session._pending import SessionStats
from edgert.session._slot import Slot, TensorBuffer
from edgert.session._validate import (
    ExternalArray,
    check_dtype,
    check_names,
    check_shape,
    external_array,
)

__all__ = ["Runner", "executable_errors"]

_ndarray = np.ndarray
_copyto = np.copyto
# Inputs up to this size are always staged: one memcpy on the host is cheaper than asking CUDA
# whether the caller's memory is already pinned.
STAGE_LIMIT_BYTES = 64 * 1024


def executable_errors(exe: Executable) -> str:
    """The executable's own error lines (TensorRT, ONNX Runtime), formatted for a message."""
    fetch = getattr(exe, "last_errors", None)
    lines: tuple[str, ...] = tuple(fetch()) if callable(fetch) else ()
    return (": " + "; ".join(lines)) if lines else ""


class Runner:
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
        self.profile = options.profile
        self.cast = options.cast
        self.refuse = options.contiguous is ContiguityMode.REFUSE
        self.device_outputs = options.outputs is OutputMode.DEVICE
        self.ctx_sig: tuple[tuple[int, ...], ...] | None = None
        self.bound: dict[str, int] = {}
        self.bound_token: object = None
        self.stream: Any = None

    # -- the hot path ---------------------------------------------------------------------

    def stage(self, slot: Slot, inputs: Any) -> Hashable:
        """Check the inputs and stage them into ``slot``; return the graph key.

        Raises:
            InputError: The inputs were rejected (nothing was enqueued).
            PoolExhausted: Larger buffers were needed and the pool could not serve them.
        """
        if type(inputs) is dict and len(inputs) == self.n_in and not slot.external:
            refuse = self.refuse
            for tb in slot.inputs:
                arr = inputs.get(tb.name)
                if (type(arr) is _ndarray and arr.dtype is tb.dtype and arr.shape == tb.shape
                        and tb.small and (not refuse or arr.flags.c_contiguous)):
                    _copyto(tb.view, arr)  # type: ignore[arg-type]
                else:
                    return self._stage_slow(slot, inputs)
            return slot.sig
        return self._stage_slow(slot, inputs)

    # -- everything else ------------------------------------------------------------------

    def _as_mapping(self, inputs: Any) -> Mapping[str, Any]:
        if isinstance(inputs, Mapping):
            return inputs
        if self.n_in == 1:
            return {self.in_names[0]: inputs}
        raise InputError(
            f"inputs must be a mapping of name to array; the model has {self.n_in} inputs "
            f"({', '.join(self.in_names)})", hint="pass a dict such as {'name': array}")

    def _classify(self, tb: TensorBuffer, obj: Any) -> tuple[np.ndarray[Any, Any] | None,
                                                             ExternalArray | None]:
        """Split an input into a numpy array to stage, or caller memory to use in place."""
        spec = tb.spec
        if isinstance(obj, _ndarray):
            return obj, self._pinned(tb, obj)
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
        shape = spec.shape if not spec.is_dynamic else tb.shape
        if shape is None:
            raise InputError(
                f"input {spec.name!r} is dynamic, so a raw buffer does not say its shape",
                hint="pass buffer.view(dtype, shape) instead")
        try:
            arr = buf.view(spec.dtype, shape)
        except EdgeRTError as err:
            raise InputError(f"input {spec.name!r}: the buffer does not hold a "
                             f"{spec.dtype}{list(shape)}: {err.message}") from err
        return arr, self._pinned(tb, arr)

    def _stage_slow(self, slot: Slot, inputs: Any) -> Hashable:
        inputs = self._as_mapping(inputs)
        if len(inputs) != self.n_in or any(n not in inputs for n in self.in_names):
            check_names(inputs, self.in_names)
        plan: list[tuple[np.ndarray[Any, Any] | None, ExternalArray | None]] = []
        shapes = []
        for tb in slot.inputs:
            spec = tb.spec
            arr, ext = self._classify(tb, inputs[spec.name])
            if ext is not None:
                if ext.dtype != spec.dtype:
                    raise InputError(f"input {spec.name!r} has dtype {ext.dtype}, the model "
                                     f"wants {spec.dtype}",
                                     hint="caller memory is used in place and cannot be cast: "
                                          "convert it first")
                shape = ext.shape
            else:
                assert arr is not None
                if check_dtype(spec, arr.dtype, cast=self.cast):
                    arr = arr.astype(spec.dtype, casting="same_kind")
                if self.refuse and not arr.flags.c_contiguous:
                    raise InputError(f"input {spec.name!r} is not C-contiguous",
                                     hint="pass np.ascontiguousarray(x), or create the session "
                                          "with contiguous='copy'")
                shape = arr.shape
            check_shape(spec, shape, self.profile)
            plan.append((arr, ext))
            shapes.append(shape)
        sig = tuple(shapes)
        if sig != slot.sig:
            self.reshape(slot, sig)
        staged = slot.sig
        assert staged is not None
        external = False
        for tb, (arr, ext) in zip(slot.inputs, plan, strict=True):
            if ext is None:
                _copyto(tb.view, arr)  # type: ignore[arg-type]
            else:
                external = True
        if not external:
            if slot.external:
                slot.rebuild(copies=self.copies)
            return staged
        return self._use_external(slot, staged, plan)

    def _use_external(self, slot: Slot, sig: Hashable, plan: list[
            tuple[np.ndarray[Any, Any] | None, ExternalArray | None]]) -> Hashable:
        """Bind (or copy from) caller memory; the key adds the addresses used."""
        slot.rebuild(copies=self.copies)
        binds = dict(slot.binds)
        h2d = []
        addrs: list[int] = []
        keep = []
        for tb, (_arr, ext) in zip(slot.inputs, plan, strict=True):
            name = tb.spec.name
            src = tb.host_ptr
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
        slot.h2d = h2d
        slot.binds = tuple(binds.items())
        slot.keep = keep
        slot.external = True
        return (sig, tuple(addrs))

    # -- shapes and buffers ---------------------------------------------------------------

    def apply_shapes(self, sig: tuple[tuple[int, ...], ...]) -> None:
        """Set the executable's input shapes to ``sig``.

        Raises:
            InputError: The executable refused a shape (its own reason is in the message).
        """
        exe = self.exe
        self.ctx_sig = None
        for spec, shape in zip(self.in_specs, sig, strict=True):
            if spec.is_dynamic and not exe.set_input_shape(spec.name, shape):
                raise InputError(f"the executable refused shape {shape} for input "
                                 f"{spec.name!r}{executable_errors(exe)}",
                                 hint="check the shape against the engine's profile")
        self.ctx_sig = sig

    def _output_shapes(self) -> list[tuple[int, ...]]:
        shapes = []
        for spec in self.out_specs:
            shape = tuple(int(d) for d in self.exe.get_tensor_shape(spec.name))
            if len(shape) != len(spec.shape) or any(d < 0 for d in shape):
                raise NotSupportedError(
                    f"output {spec.name!r} has shape {shape} after the input shapes were set: "
                    f"its size depends on the data{executable_errors(self.exe)}",
                    hint="sessions need output shapes that follow from the input shapes")
            shapes.append(shape)
        return shapes

    def reshape(self, slot: Slot, sig: tuple[tuple[int, ...], ...]) -> None:
        """Shape the executable and ``slot``'s buffers for ``sig`` (checked already).

        Raises:
            InputError: The executable refused a shape.
            NotSupportedError: An output's shape depends on the data.
            PoolExhausted: The pool cannot hold the larger buffers.
        """
        slot.sig = None
        self.apply_shapes(sig)
        out_shapes = self._output_shapes()
        grown = False
        for tb, shape in zip(slot.inputs, sig, strict=True):
            grown |= self._fit(tb, shape)
        for tb, shape in zip(slot.outputs, out_shapes, strict=True):
            grown |= self._fit(tb, shape)
        if grown:
            self.buffers_moved(slot)
        slot.sig = sig
        slot.keep = None
        slot.rebuild(copies=self.copies)

    # -- what each device does -------------------------------------------------------------

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
        nbytes = spec.nbytes(shape)
        grown = False
        tb.view = None
        tb.dview = None
        if self.wants_host(tb) and (tb.host is None or tb.host.nbytes < nbytes):
            if tb.host is not None:
                tb.host.release()
                tb.host = None
            pool = self.host_pool
            tb.host = pool.acquire(pool.capacity_for(max(nbytes, 1)))
            grown = True
        if self.wants_device(tb) and (tb.device is None or tb.device.nbytes < nbytes):
            if tb.device is not None:
                tb.device.release()
                tb.device = None
            pool = self.device_pool
            tb.device = pool.acquire(pool.capacity_for(max(nbytes, 1)))
            grown = True
        tb.shape = shape
        tb.nbytes = nbytes
        tb.small = nbytes <= STAGE_LIMIT_BYTES
        if tb.host is not None:
            tb.host_ptr = tb.host.ptr
            view_dtype, view_shape = ((spec.dtype, shape) if spec.element_bits ==
                                      8 * spec.dtype.itemsize else (np.dtype(np.uint8), (nbytes,)))
            tb.view = tb.host.view(view_dtype, view_shape)
        self.place(tb)
        return grown

    def place(self, tb: TensorBuffer) -> None:
        """Set ``tb``'s bound and copy addresses (and device view) for this device."""
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
        bound = self.bound
        exe = self.exe
        for name, addr in binds:
            if bound.get(name) != addr:
                if not exe.set_tensor_address(name, addr):
                    bound.pop(name, None)
                    raise InferenceError(f"the executable refused address 0x{addr:x} for "
                                         f"tensor {name!r}{executable_errors(exe)}")
                bound[name] = addr
        self.bound_token = binds
