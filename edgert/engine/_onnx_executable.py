"""The ONNX Runtime executable: IOBinding on caller-provided host pointers, no allocation per run.

Inputs and outputs are bound to the raw addresses given by ``set_tensor_address``. Bindings are
renewed only for tensors whose address or shape changed since the last run (binding one tensor
costs about as much as running a small model), so a steady control loop runs with no binding and
no allocation. ``execute_async_v3`` runs synchronously on the calling thread; the stream handle
is ignored.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from edgert._executable import Placement, TensorSpec
from edgert._owner import Owner
from edgert.engine._onnx import OnnxLoaded
from edgert.errors import ResourceClosedError

__all__ = ["OnnxExecutable"]


class _SessionHolder:
    __slots__ = ("binding", "session")

    def __init__(self, session: Any, binding: Any) -> None:
        self.session: Any = session
        self.binding: Any = binding

    def release(self) -> None:
        self.binding = None
        self.session = None


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
        self._run = session.run_with_iobinding
        self._tensors = loaded.tensors
        self._specs = {t.name: t for t in loaded.tensors}
        self._output_dims = loaded.output_dims
        self._inputs = tuple(t.name for t in loaded.tensors if t.is_input)
        self._outputs = tuple(t.name for t in loaded.tensors if not t.is_input)
        # Static inputs start with their shape; dynamic ones with their profile's opt, if any.
        self._shapes: dict[str, tuple[int, ...]] = {}
        for t in loaded.tensors:
            if t.is_input and not t.is_dynamic:
                self._shapes[t.name] = t.shape
            elif t.is_input and t.profiles:
                self._shapes[t.name] = t.profiles[0].opt
        self._addresses: dict[str, int] = {}
        self._dirty: set[str] = set(self._specs)
        self._errors: collections.deque[str] = collections.deque(maxlen=64)

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

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Set an input's shape; False (with a reason in ``last_errors()``) if not allowed."""
        self._check_open()
        spec = self._specs.get(name)
        if spec is None or not spec.is_input:
            return self._fail(f"set_input_shape: {name!r} is not an input of this model "
                              f"(inputs: {', '.join(self._inputs)})")
        dims = tuple(int(d) for d in shape)
        if len(dims) != len(spec.shape) or any(
                d < 0 or (s >= 0 and d != s) for d, s in zip(dims, spec.shape, strict=True)):
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
        out = []
        for d in self._output_dims[name]:
            if isinstance(d, int):
                out.append(d)
            elif d is None or d[0] not in self._shapes:
                out.append(-1)
            else:
                out.append(self._shapes[d[0]][d[1]])
        return tuple(out)

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        """An input's current shape, or an output's shape inferred from the inputs (-1 unknown)."""
        self._check_open()
        spec = self._specs.get(name)
        if spec is None:
            self._fail(f"get_tensor_shape: no tensor named {name!r}")
            return ()
        if spec.is_input:
            return self._shapes.get(name, spec.shape)
        return self._output_shape(name)

    def set_tensor_address(self, name: str, address: int) -> bool:
        """Bind a tensor to host memory at ``address``; rebinding happens at the next run."""
        self._check_open()
        if name not in self._specs:
            return self._fail(f"set_tensor_address: no tensor named {name!r}")
        address = int(address)
        if self._addresses.get(name) != address:
            self._addresses[name] = address
            self._dirty.add(name)
        return True

    def _rebind(self) -> bool:
        binding = self._binding
        for name in sorted(self._dirty, key=lambda n: not self._specs[n].is_input):
            spec = self._specs[name]
            address = self._addresses.get(name)
            if not address:
                return self._fail(f"execute: the address of tensor {name!r} is not set; call "
                                  "set_tensor_address first")
            if spec.is_input:
                shape = self._shapes.get(name)
                if shape is None:
                    return self._fail(f"execute: the shape of dynamic input {name!r} is not set; "
                                      "call set_input_shape first")
                binding.bind_input(name, "cpu", 0, spec.dtype, shape, address)
            else:
                shape = self._output_shape(name)
                if -1 in shape:
                    return self._fail(
                        f"execute: the shape of output {name!r} does not follow from the input "
                        "shapes, so it cannot be bound to caller memory")
                binding.bind_output(name, "cpu", 0, spec.dtype, shape, address)
        self._dirty.clear()
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Run the model now, synchronously (``stream_handle`` is ignored)."""
        self._check_open()
        if self._dirty and not self._rebind():
            return False
        try:
            self._run(self._binding)  # a RunOptions object costs ~100 us per run (ORT 1.31)
        except Exception as err:  # ORT raises its own pybind types; the protocol returns False
            return self._fail(f"ONNX Runtime: {str(err).strip()}")
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
        self._run = _closed_run  # drop the bound method: it would keep the session alive
        super().close()


def _closed_run(*_args: object) -> None:
    raise ResourceClosedError("the ONNX Runtime executable is closed",
                              hint="create a new one with engine.create_context()")
