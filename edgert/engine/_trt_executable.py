"""The TensorRT executable: an ``IExecutionContext`` whose own bound methods are the hot path.

``set_input_shape``, ``get_tensor_shape``, ``set_tensor_address`` and ``execute_async_v3`` are the
context's bound methods stored as attributes, so a session calling them runs no edgert frame at
all. The executable owns the context (``close()`` releases it) and keeps the edgert
:class:`~edgert.engine.Engine`, the ``ICudaEngine`` and the TensorRT runtime alive, in that order
of dependency, for as long as it lives.

Outputs whose shape depends on the data (NonZero and the like: -1 in ``get_tensor_shape`` even
after every input shape is set) are written through an ``OutputAllocator`` (the session seam in
``edgert._executable``) that the session registers with
:meth:`TensorRTExecutable.set_output_allocator`; TensorRT calls it during every enqueue (see
:mod:`edgert.engine._trt_allocator`). Such a context is never graph-capturable, and from the
first registration on ``execute_async_v3`` is a thin edgert wrapper that fails the run when an
allocator failed, since TensorRT itself would carry on after a failed ``notify_shape``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgert._executable import OutputAllocator, Placement, TensorSpec
from edgert._owner import Owner
from edgert.engine._tensorrt import TrtLoaded
from edgert.engine._trt_allocator import AllocatorState, adapter_class
from edgert.errors import InvalidArgumentError, NotSupportedError, ResourceClosedError

__all__ = ["TensorRTExecutable"]

_BOUND = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")


class _ContextHolder:
    """What the finalizer may hold: the context and what must outlive it, never the owner."""

    __slots__ = ("adapters", "context", "engine", "runtime")

    def __init__(self, context: Any, loaded: TrtLoaded) -> None:
        self.context: Any = context
        self.engine: Any = loaded.engine
        self.runtime: Any = loaded.runtime
        # Output allocator adapters by output name: TensorRT holds raw pointers to them.
        self.adapters: dict[str, Any] = {}

    def release(self) -> None:
        # Dependency order: the context (which calls the adapters), the adapters, then its
        # ICudaEngine, then the runtime.
        self.context = None
        self.adapters = {}
        self.engine = None
        self.runtime = None


def _closed(*_args: object) -> bool:
    raise ResourceClosedError("the TensorRT executable is closed",
                              hint="create a new one with engine.create_context()")


def _checked_enqueue(enqueue: Callable[[int], bool],
                     state: AllocatorState) -> Callable[[int], bool]:
    """``enqueue`` that also fails when an output allocator failed during it, and raises a
    ``KeyboardInterrupt`` that arrived during a callback once TensorRT has returned (a closure,
    not a method: the executable must not hold itself in a reference cycle)."""
    errors = state.errors

    def execute_async_v3(stream_handle: int) -> bool:
        before = len(errors)
        ok = bool(enqueue(stream_handle))
        if state.raised is not None:
            state.raise_pending()
        return ok and len(errors) == before

    return execute_async_v3


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
        self._trt = loaded.trt
        self._holder = _ContextHolder(context, loaded)
        self._adapter_cls: Any = None
        self._alloc = AllocatorState()
        self._data_dependent: tuple[str, ...] = ()
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
            self._data_dependent = tuple(
                spec.name for spec in self._tensors if not spec.is_input
                and any(int(d) < 0 for d in self.get_tensor_shape(spec.name)))
            capturable = not self._data_dependent
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
        """False when an output's shape depends on the data (or could not be inferred), once an
        output allocator is registered, and for host placement."""
        return self._graph_capturable

    @property
    def data_dependent_outputs(self) -> tuple[str, ...]:
        """Outputs whose shape TensorRT knows only during a run (-1 in ``get_tensor_shape``
        with every input at its profile's opt shape); each needs an output allocator."""
        return self._data_dependent

    def max_output_bytes(self, name: str) -> int | None:
        """TensorRT's upper bound in bytes on output ``name`` under the context's optimization
        profile (``get_max_output_size``); None where TensorRT gives none.

        A session may size an allocator's first buffer from it, so that reallocation stays
        off the hot path; TensorRT's bound can be far above what runs really produce.

        Raises:
            ResourceClosedError: The executable is closed.
        """
        self._check_open()
        size = int(self._holder.context.get_max_output_size(name))
        return size if size >= 0 else None

    def set_output_allocator(self, name: str, allocator: OutputAllocator | None) -> bool:
        """Have TensorRT take output ``name``'s memory from ``allocator`` on every enqueue, and
        tell it the output's real shape; None unregisters it.

        The adapter TensorRT calls is made once per output and reused. Registering makes the
        context not graph-capturable for good.

        Returns:
            False if TensorRT refused (``name`` is not an output; the reason is in
            :meth:`last_errors`).

        Raises:
            InvalidArgumentError: ``allocator`` is not an OutputAllocator.
            NotSupportedError: The TensorRT module has no ``IOutputAllocator`` (before 8.5).
            ResourceClosedError: The executable is closed.
        """
        self._check_open()
        context = self._holder.context
        if allocator is None:
            return bool(context.set_output_allocator(name, None))
        if not isinstance(allocator, OutputAllocator):
            raise InvalidArgumentError(
                f"the allocator for output {name!r} must have reallocate_output(name, memory, "
                f"size, alignment) and notify_shape(name, shape), got {type(allocator).__name__}",
                hint="pass an object shaped like TensorRT's IOutputAllocator "
                     "(edgert._executable.OutputAllocator)")
        adapter = self._holder.adapters.get(name)
        if adapter is None:
            if self._adapter_cls is None:
                base = getattr(self._trt, "IOutputAllocator", None)
                if base is None:
                    raise NotSupportedError(
                        f"{getattr(self._trt, '__name__', 'this TensorRT module')} has no "
                        "IOutputAllocator, so data-dependent output shapes cannot be run",
                        hint="use TensorRT 8.6 or newer")
                self._adapter_cls = adapter_class(base)
            adapter = self._adapter_cls(name, allocator, self._alloc)
        else:
            adapter.retarget(allocator)
        if not context.set_output_allocator(name, adapter):
            return False
        self._holder.adapters[name] = adapter
        self._graph_capturable = False
        self.execute_async_v3 = _checked_enqueue(context.execute_async_v3, self._alloc)
        return True

    @property
    def raw_context(self) -> Any:
        """The TensorRT ``IExecutionContext`` itself, for features edgert does not wrap.

        Raises:
            ResourceClosedError: The executable is closed.
        """
        self._check_open()
        return self._holder.context

    def last_errors(self) -> tuple[str, ...]:
        """TensorRT's error messages logged on this thread since the previous call, after
        those of this context's output allocators.

        Call it right after a method returned False: TensorRT logs the reason on the calling
        thread before returning. The log is per TensorRT library and thread, so errors of other
        contexts used on this thread appear here too.
        """
        errors = self._alloc.errors
        own = tuple(errors)
        errors.clear()
        return own + self._bridge.drain()

    def close(self) -> None:
        """Release the execution context; idempotent. The engine stays usable."""
        if self.closed:
            return
        for name in _BOUND:
            setattr(self, name, _closed)
        super().close()
