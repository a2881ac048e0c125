"""The ONNX Runtime executable: IOBinding on caller-provided host pointers, no allocation per run.

Inputs and outputs are bound to the raw addresses given by ``set_tensor_address``, with the ONNX
element type (so bfloat16, float8 and 4-bit tensors bind too, which ORT's own ``run()`` cannot
take). Bindings are renewed only for tensors whose address or shape changed since the last run
(binding one tensor costs about as much as running a small model), so a steady control loop runs
with no binding and no allocation. ``execute_async_v3`` runs synchronously on the calling thread;
the stream handle is ignored.

Outputs whose shape does not follow from the input shapes (unnamed or fresh symbolic dimensions,
unknown rank, data-dependent values, or a declaration the model got wrong) are written through the
session's :class:`~edgert.engine.OutputAllocator`. The first run of each input-shape signature lets
ONNX Runtime allocate them and copies them into the allocator's memory; the shapes it saw are
remembered per signature, and later runs bind the allocator's (pooled, grow-only) memory with those
shapes directly. ONNX Runtime refuses to write a pre-bound output whose shape differs (verified: it
raises before writing), so an output whose shape turns out to vary with the data is re-run once and
from then on always left to ONNX Runtime. An output whose declared shape proves wrong reports -1
from ``get_tensor_shape`` afterwards, and the run that found it fails so the session can re-plan it
(the session then re-runs the request).

String tensors cannot live in raw memory: they are passed as numpy object arrays through
``set_tensor_value`` / ``get_tensor_value``.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgert._executable import OutputAllocator, Placement, TensorSpec
from edgert._owner import Owner
from edgert.engine._onnx import OnnxLoaded
from edgert.errors import ResourceClosedError

__all__ = ["OnnxExecutable"]

_OBJECT = np.dtype(object)
# ORT's words when a pre-bound output does not fit what the run computed (ORT 1.17-1.32).
_OUTPUT_NAME_RE = re.compile(r"for output:? '?([^'\s]+)")
_MISMATCH_WORDS = ("computed output shape", "Invalid rank for output",
                   "invalid dimensions for output", "re-use buffer")
_MAX_SIGNATURES = 64  # input-shape signatures whose output shapes are remembered
_ALIGNMENT = 64


class _SessionHolder:
    __slots__ = ("binding", "session")

    def __init__(self, session: Any, binding: Any) -> None:
        self.session: Any = session
        self.binding: Any = binding

    def release(self) -> None:
        self.binding = None
        self.session = None


def _from_ort(err: Exception) -> bool:
    """Whether ONNX Runtime raised ``err`` (its pybind types, or a C++ exception pybind made a
    RuntimeError), as opposed to a signal handler that ran meanwhile: a handler's own exception
    came back as "the executable failed" with the exception lost (found by a trial)."""
    return isinstance(err, RuntimeError) or type(err).__module__.startswith("onnxruntime")


def _binding_runner(session: Any, binding: Any) -> Callable[[], object]:
    """A call that runs ``session`` on ``binding``.

    ``InferenceSession.run_with_iobinding`` (ONNX Runtime 1.32) looks for WebGPU graph capture
    in Python on every run, about half a microsecond, a twentieth of a small model's whole
    request; it then calls the C++ session's ``run_with_iobinding``, as every earlier version
    does. edgert never enables graph capture (it passes no provider options), so where those
    parts are as expected the C++ call is made directly; otherwise, the public method.
    """
    inner = getattr(session, "_sess", None)
    raw = getattr(binding, "_iobinding", None)
    run = getattr(inner, "run_with_iobinding", None)
    capture = getattr(inner, "is_webgpu_graph_capture_enabled", None)
    if raw is not None and callable(run) and getattr(binding, "_session", inner) is inner and \
            not (callable(capture) and capture()):
        return functools.partial(run, raw, None)
    return functools.partial(session.run_with_iobinding, binding)


def _nbytes(spec: TensorSpec, shape: Sequence[int]) -> int:
    return (math.prod(shape) * spec.element_bits + 7) // 8


class OnnxExecutable(Owner):
    """Runs an ONNX model on host memory through the Executable protocol.

    Attributes:
        engine: The edgert Engine this executable belongs to (kept alive by it).
    """

    def __init__(self, *, engine: object, loaded: OnnxLoaded) -> None:
        self.engine = engine
        session = loaded.session
        self._holder = _SessionHolder(session, session.io_binding())
        self._own(self._holder.release, "ONNX Runtime executable")
        self._binding = self._holder.binding
        self._run = _binding_runner(session, self._binding)
        self._tensors = loaded.tensors
        self._in = {t.name: t for t in loaded.tensors if t.is_input}
        self._out = {t.name: t for t in loaded.tensors if not t.is_input}
        self._types = loaded.onnx_types
        self._output_dims = loaded.output_dims
        self._inputs = tuple(self._in)
        # An output that is also a graph input is the input itself: the session copies it.
        self._outputs = tuple(n for n in self._out if n not in self._in)
        self._strings = frozenset(n for n in self._outputs if self._out[n].dtype == _OBJECT)
        self._string_inputs = tuple(n for n in self._inputs if self._in[n].dtype == _OBJECT)
        # Static inputs start with their shape; dynamic ones with their profile's opt, if any.
        self._shapes: dict[str, tuple[int, ...]] = {}
        for t in self._in.values():
            if not t.is_dynamic:
                self._shapes[t.name] = t.shape
            elif t.profiles:
                self._shapes[t.name] = t.profiles[0].opt
        self._addresses: dict[str, int] = {}
        self._values: dict[str, Any] = {}
        self._dirty: set[str] = set(self._in) | set(self._outputs)
        self._errors: collections.deque[str] = collections.deque(maxlen=64)
        self._allocators: dict[str, OutputAllocator] = {}
        self._wrong: set[str] = set()  # outputs whose declared shape proved wrong
        self._varying: set[str] = set()  # outputs whose shape varies within a signature
        self._learned: collections.OrderedDict[tuple[Any, ...], dict[str, tuple[int, ...]]] = \
            collections.OrderedDict()
        self._sig: tuple[Any, ...] = ()
        self._late: tuple[str, ...] = ()  # outputs written through an allocator this signature
        self._slow = False  # late outputs, strings, or nothing to run
        self._bound_out: dict[str, tuple[int, tuple[int, ...]] | None] = {}
        self._order: list[str] = []  # output names in the order first bound (get_outputs order)
        self._inputs_bound: set[str] = set()
        self._results: dict[str, Any] = {}

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """Every tensor, inputs first, then outputs."""
        return self._tensors

    @property
    def placement(self) -> Placement:
        """ONNX Runtime reads and writes host memory."""
        return Placement.HOST

    @property
    def graph_capturable(self) -> bool:
        """Host work cannot be captured into a CUDA graph."""
        return False

    def _fail(self, message: str) -> bool:
        self._errors.append(message)
        return False

    # -- shapes ---------------------------------------------------------------------------

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Set an input's shape; False (with a reason in ``last_errors()``) if not allowed."""
        self._check_open()
        spec = self._in.get(name)
        if spec is None:
            return self._fail(f"set_input_shape: {name!r} is not an input of this model "
                              f"(inputs: {', '.join(self._inputs)})")
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims) or (not spec.unknown_rank and (
                len(dims) != len(spec.shape) or any(
                    s >= 0 and d != s for d, s in zip(dims, spec.shape, strict=True)))):
            return self._fail(f"set_input_shape: shape {dims} does not fit input {name!r} of "
                              f"shape {spec.shape} (-1 = any)")
        if spec.profiles and not spec.profiles[0].contains(dims):
            p = spec.profiles[0]
            return self._fail(f"set_input_shape: shape {dims} of input {name!r} is outside its "
                              f"profile (min {p.min}, max {p.max})")
        if self._shapes.get(name) != dims:
            self._shapes[name] = dims
            self._dirty.add(name)
            self._dirty.update(self._outputs)
        return True

    def _output_shape(self, name: str) -> tuple[int, ...]:
        dims = self._output_dims[name]
        if dims is None:  # unknown rank
            return (-1,)
        if name in self._wrong:
            return tuple(-1 for _ in dims) or (-1,)
        out = []
        for d in dims:
            if isinstance(d, int):
                out.append(d)
            elif d is None or d[0] not in self._shapes:
                out.append(-1)
            else:
                shape = self._shapes[d[0]]
                out.append(shape[d[1]] if d[1] < len(shape) else -1)
        return tuple(out)

    def shape_follows_inputs(self, name: str) -> bool:
        """Whether output ``name``'s shape follows from the input shapes (so a session binds it
        to pooled memory), as the model declares it and as runs have shown so far."""
        dims = self._output_dims.get(name)
        return dims is not None and name not in self._wrong and name not in self._strings \
            and all(d is not None for d in dims)

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        """An input's current shape, or an output's shape inferred from the inputs (-1 unknown).

        A name that is both an input and an output is answered as the input.
        """
        self._check_open()
        if name in self._in:
            return self._shapes.get(name, self._in[name].shape)
        if name in self._out:
            if name in self._strings:
                return (-1,)
            return self._output_shape(name)
        self._fail(f"get_tensor_shape: no tensor named {name!r}")
        return ()

    # -- memory ---------------------------------------------------------------------------

    def set_tensor_address(self, name: str, address: int) -> bool:
        """Bind a tensor to host memory at ``address``; rebinding happens at the next run.

        Address 0 for an optional input (an initializer the model lets callers override)
        means: use the model's own value.
        """
        self._check_open()
        spec = self._in.get(name) or self._out.get(name)
        if spec is None:
            return self._fail(f"set_tensor_address: no tensor named {name!r}")
        if spec.dtype == _OBJECT:
            return self._fail(f"set_tensor_address: {name!r} holds strings, which do not live "
                              "in raw memory; use set_tensor_value")
        address = int(address)
        if not address and not spec.optional:
            return self._fail(f"set_tensor_address: address 0 for tensor {name!r}")
        if self._addresses.get(name) != address:
            self._addresses[name] = address
            self._dirty.add(name)
        return True

    def set_tensor_value(self, name: str, value: Any) -> bool:
        """Give a string input as a numpy array of ``str`` objects (copied at the next run)."""
        self._check_open()
        spec = self._in.get(name)
        if spec is None or spec.dtype != _OBJECT:
            return self._fail(f"set_tensor_value: {name!r} is not a string input")
        self._values[name] = value
        return True

    def get_tensor_value(self, name: str) -> Any:
        """A string output of the last run, as a numpy object array (None before a run)."""
        return self._results.get(name)

    def set_output_allocator(self, name: str, allocator: OutputAllocator) -> bool:
        """Write output ``name`` through ``allocator`` whenever its shape is not known before
        the run (see :class:`~edgert.engine.OutputAllocator`)."""
        self._check_open()
        if name not in self._out or name in self._in or name in self._strings:
            return self._fail(f"set_output_allocator: {name!r} is not an output this "
                              "executable writes to raw memory")
        self._allocators[name] = allocator
        self._dirty.add(name)
        return True

    # -- binding --------------------------------------------------------------------------

    def _bind_out(self, name: str, address: int, shape: tuple[int, ...]) -> None:
        self._binding.bind_output(name, "cpu", 0, self._types[name], shape, address)
        self._bound_out[name] = (address, shape)
        if name not in self._order:
            self._order.append(name)

    def _bind_ort(self, name: str) -> None:
        # Before every run: after a run the binding holds the value ORT allocated, and would
        # hand it back as pre-allocated memory of that (old) shape.
        self._binding.bind_output(name, "cpu")
        self._bound_out[name] = None
        if name not in self._order:
            self._order.append(name)

    def _rebind_inputs(self, names: list[str]) -> bool:
        binding = self._binding
        if any(not self._addresses.get(n) and n in self._inputs_bound and self._in[n].optional
               for n in names):
            # An optional input goes back to the model's default: ORT cannot unbind one name.
            binding.clear_binding_inputs()
            self._inputs_bound.clear()
            names = list(self._inputs)
        for name in names:
            spec = self._in[name]
            if spec.dtype == _OBJECT:
                continue  # bound from its value at each run
            address = self._addresses.get(name)
            if not address:
                if spec.optional:
                    continue
                return self._fail(f"execute: the address of input {name!r} is not set; call "
                                  "set_tensor_address first")
            shape = self._shapes.get(name)
            if shape is None:
                return self._fail(f"execute: the shape of dynamic input {name!r} is not set; "
                                  "call set_input_shape first")
            binding.bind_input(name, "cpu", 0, self._types[name], shape, address)
            self._inputs_bound.add(name)
        return True

    def _rebind(self) -> bool:
        dirty = self._dirty
        if not self._rebind_inputs([n for n in self._inputs if n in dirty]):
            return False
        self._sig = tuple(self._shapes.get(n) if self._addresses.get(n) or
                          not self._in[n].optional else None for n in self._inputs)
        late = []
        for name in self._outputs:
            if name in self._strings:
                continue
            shape = self._output_shape(name)
            if -1 in shape:
                if name not in self._allocators:
                    return self._fail(
                        f"execute: the shape of output {name!r} is known only once the model "
                        "has run, and no output allocator was set for it")
                late.append(name)
                continue
            if name not in dirty and self._bound_out.get(name) is not None:
                continue
            address = self._addresses.get(name)
            if not address:
                return self._fail(f"execute: the address of output {name!r} is not set; call "
                                  "set_tensor_address first")
            self._bind_out(name, address, shape)
        self._late = tuple(late)
        self._slow = bool(self._late or self._string_inputs or self._strings or
                          not self._outputs)
        dirty.clear()
        return True

    def _prepare_late(self, learned: dict[str, tuple[int, ...]] | None) -> bool:
        """Bind each late output to allocator memory of its learned shape, or leave it to ORT."""
        for name in self._late:
            shape = None if learned is None or name in self._varying else learned.get(name)
            if shape is None:
                self._bind_ort(name)
                continue
            spec = self._out[name]
            bound = self._bound_out.get(name)
            previous = bound[0] if bound is not None else 0
            address = self._allocators[name].reallocate_output(
                name, previous, max(_nbytes(spec, shape), 1), _ALIGNMENT)
            if not address:
                return self._fail(f"execute: the output allocator gave no memory for {name!r}")
            if bound != (address, shape):
                self._bind_out(name, address, shape)
        return True

    # -- running --------------------------------------------------------------------------

    def _mismatched(self, text: str) -> set[str]:
        """Outputs ORT refused to write into the memory bound for them (empty: another error)."""
        if not any(w in text for w in _MISMATCH_WORDS):
            return set()
        bound = {n for n, b in self._bound_out.items() if b is not None}
        named = {m for m in _OUTPUT_NAME_RE.findall(text) if m in bound}
        return named or bound

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Run the model now, synchronously (``stream_handle`` is ignored)."""
        if self._owner_closed:
            self._check_open()
        if self._dirty and not self._rebind():
            return False
        if self._slow:
            if self._string_inputs or self._strings:
                return self._execute_run()
            if self._late:
                return self._execute_late()
            return True  # every output is an input: nothing to compute
        try:
            self._run()  # a RunOptions object costs ~100 us per run (ORT 1.31)
        except Exception as err:  # ORT raises its own pybind types; the protocol says False
            if not _from_ort(err):
                raise  # a signal handler's exception, raised while ORT ran: the caller's own
            return self._failed_run(err)
        return True

    def _failed_run(self, err: Exception) -> bool:
        text = str(err).strip()
        wrong = self._mismatched(text) - set(self._late)
        if wrong:
            # Declared shapes ORT itself could not check: they are wrong. The session re-plans
            # these outputs (they now report -1), runs the request again and, seeing the real
            # shape, warns once.
            self._wrong |= wrong
            self._dirty.update(wrong)
        return self._fail(f"ONNX Runtime: {text}")

    def _execute_run(self) -> bool:
        """Models with string tensors: ORT's IOBinding refuses strings, so they go through
        ``run()``, with the numeric inputs read in place and the outputs copied where bound."""
        feeds: dict[str, Any] = {}
        for name in self._inputs:
            spec = self._in[name]
            if spec.dtype == _OBJECT:
                value = self._values.get(name)
                if value is None:
                    return self._fail(f"execute: string input {name!r} has no value; call "
                                      "set_tensor_value first")
                feeds[name] = value
                continue
            address = self._addresses.get(name)
            if not address:
                continue  # an optional input left to its default
            shape = self._shapes[name]
            raw = (ctypes.c_char * _nbytes(spec, shape)).from_address(address)
            feeds[name] = np.frombuffer(memoryview(raw), dtype=spec.dtype).reshape(shape)
        try:
            values = self._holder.session.run(list(self._outputs), feeds)
        except Exception as err:  # ORT raises its own pybind types
            if not _from_ort(err):
                raise
            return self._fail(f"ONNX Runtime: {str(err).strip()}")
        for name, produced in zip(self._outputs, values, strict=True):
            if name in self._strings:
                self._results[name] = produced
                continue
            value = np.ascontiguousarray(produced)
            if name in self._late:
                allocator = self._allocators[name]
                address = allocator.reallocate_output(name, 0, max(value.nbytes, 1), _ALIGNMENT)
                if not address:
                    return self._fail(f"execute: the output allocator gave no memory for "
                                      f"{name!r}")
                ctypes.memmove(address, value.ctypes.data, value.nbytes)
                allocator.notify_shape(name, value.shape)
                continue
            bound = self._bound_out.get(name)
            if bound is None or bound[1] != value.shape:
                self._wrong.add(name)
                self._dirty.add(name)
                return self._fail(f"ONNX Runtime computed shape {value.shape} for output "
                                  f"{name!r}, not the declared {self._out[name].shape}")
            ctypes.memmove(bound[0], value.ctypes.data, value.nbytes)
        return True

    def _execute_late(self) -> bool:
        learned = self._learned.get(self._sig)
        for _attempt in range(len(self._late) + 1):
            if not self._prepare_late(learned):
                return False
            try:
                self._run()
            except Exception as err:  # ORT raises its own pybind types
                if not _from_ort(err):
                    raise
                varying = self._mismatched(str(err)) & set(self._late)
                if not varying:
                    return self._failed_run(err)
                self._varying |= varying  # its shape follows the data: ORT allocates it
                continue
            return self._deliver(learned)
        return self._fail("ONNX Runtime: outputs kept changing shape between runs")

    def _deliver(self, learned: dict[str, tuple[int, ...]] | None) -> bool:
        outs = None
        seen: dict[str, tuple[int, ...]] = {}
        for name in self._late:
            allocator = self._allocators[name]
            bound = self._bound_out.get(name)
            if bound is not None:
                allocator.notify_shape(name, bound[1])
                continue
            if outs is None:
                outs = self._binding.get_outputs()
            value = outs[self._order.index(name)]
            shape = tuple(int(d) for d in value.shape())
            nbytes = _nbytes(self._out[name], shape)
            address = allocator.reallocate_output(name, 0, max(nbytes, 1), _ALIGNMENT)
            if not address:
                return self._fail(f"execute: the output allocator gave no memory for {name!r}")
            if nbytes:
                ctypes.memmove(address, value.data_ptr(), nbytes)
            allocator.notify_shape(name, shape)
            seen[name] = shape
        if seen:
            if learned is None:
                learned = self._learned[self._sig] = {}
                if len(self._learned) > _MAX_SIGNATURES:
                    self._learned.popitem(last=False)
            learned.update(seen)
        return True

    def last_errors(self) -> tuple[str, ...]:
        """Why the last calls returned False, oldest first; clears the list."""
        lines = tuple(self._errors)
        self._errors.clear()
        return lines

    def close(self) -> None:
        """Release the binding and this executable's hold on the session; idempotent."""
        if self.closed:
            return
        self._binding = None
        self._allocators.clear()
        self._run = _closed_run  # drop the bound method: it would keep the session alive
        super().close()


def _closed_run(*_args: object) -> None:
    raise ResourceClosedError("the ONNX Runtime executable is closed",
                              hint="create a new one with engine.create_context()")
