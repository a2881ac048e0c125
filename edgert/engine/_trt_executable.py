"""The TensorRT executable: an ``IExecutionContext`` whose own bound methods are the hot path.

``set_input_shape``, ``get_tensor_shape``, ``set_tensor_address`` and ``execute_async_v3`` are the
context's bound methods stored as attributes, so a session calling them runs no edgert frame at
all. The executable owns the context (``close()`` releases it) and keeps the edgert
:class:`~edgert.engine.Engine`, the ``ICudaEngine`` and the TensorRT runtime alive, in that order
of dependency, for as long as it lives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgert._executable import Placement, TensorSpec
from edgert._owner import Owner
from edgert.engine._tensorrt import TrtLoaded
from edgert.errors import ResourceClosedError

__all__ = ["TensorRTExecutable"]

_BOUND = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")


class _ContextHolder:
    """What the finalizer may hold: the context and what must outlive it, never the owner."""

    __slots__ = ("context", "engine", "runtime")

    def __init__(self, context: Any, loaded: TrtLoaded) -> None:
        self.context: Any = context
        self.engine: Any = loaded.engine
        self.runtime: Any = loaded.runtime

    def release(self) -> None:
        # Dependency order: the context, then its ICudaEngine, then the runtime.
        self.context = None
        self.engine = None
        self.runtime = None


def _closed(*_args: object) -> bool:
    raise ResourceClosedError("the TensorRT executable is closed",
                              hint="create a new one with engine.create_context()")


class TensorRTExecutable(Owner):
    """An execution context of a TensorRT engine (see the module documentation).

    Attributes:
        engine: The edgert Engine this context belongs to (kept alive by it).
        profile: The optimization profile the context uses.
    """

    set_input_shape: Callable[[str, Sequence[int]], bool]
    get_tensor_shape: Callable[[str], Sequence[int]]
    set_tensor_address: Callable[[str, int], bool]
    execute_async_v3: Callable[[int], bool]

    def __init__(self, *, engine: object, loaded: TrtLoaded, context: Any,
                 tensors: tuple[TensorSpec, ...], profile: int,
                 placement: Placement = Placement.DEVICE) -> None:
        self.engine = engine
        self.profile = profile
        self._placement = placement
        self._tensors = tensors
        self._bridge = loaded.bridge
        self._holder = _ContextHolder(context, loaded)
        self._own(self._holder.release, "TensorRT execution context")
        self.set_input_shape = context.set_input_shape
        self.get_tensor_shape = context.get_tensor_shape
        self.set_tensor_address = context.set_tensor_address
        self.execute_async_v3 = context.execute_async_v3
        self._graph_capturable = self._probe_shapes() and placement is Placement.DEVICE

    def _probe_shapes(self) -> bool:
        """Set each dynamic input to its profile's opt shape; outputs still -1 are data-dependent.

        A data-dependent output's size is known only after the enqueue, so such a context cannot
        be captured into a CUDA graph (nor can one whose probe failed: stay on the safe side).
        """
        capturable = True
        for spec in self._tensors:
            if (spec.is_input and spec.is_dynamic and self.profile < len(spec.profiles)
                    and not self.set_input_shape(spec.name, spec.profiles[self.profile].opt)):
                capturable = False
        if capturable:
            for spec in self._tensors:
                if not spec.is_input and any(int(d) < 0 for d in self.get_tensor_shape(spec.name)):
                    capturable = False
        self._bridge.drain()
        return capturable

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """Every tensor, inputs first, then outputs."""
        return self._tensors

    @property
    def placement(self) -> Placement:
        """Device for real TensorRT (see each spec's ``location`` for exceptions); host for a
        module that computes on host memory (the fake TensorRT)."""
        return self._placement

    @property
    def graph_capturable(self) -> bool:
        """False when an output's shape depends on the data (or could not be inferred), and for
        host placement."""
        return self._graph_capturable

    @property
    def raw_context(self) -> Any:
        """The TensorRT ``IExecutionContext`` itself, for features edgert does not wrap.

        Raises:
            ResourceClosedError: The executable is closed.
        """
        self._check_open()
        return self._holder.context

    def last_errors(self) -> tuple[str, ...]:
        """TensorRT's error messages logged on this thread since the previous call.

        Call it right after a method returned False: TensorRT logs the reason on the calling
        thread before returning. The log is per TensorRT library and thread, so errors of other
        contexts used on this thread appear here too.
        """
        return self._bridge.drain()

    def close(self) -> None:
        """Release the execution context; idempotent. The engine stays usable."""
        if self.closed:
            return
        for name in _BOUND:
            setattr(self, name, _closed)
        super().close()
