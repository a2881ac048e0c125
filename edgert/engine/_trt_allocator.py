"""A session's ``OutputAllocator`` (``edgert._executable``) as TensorRT's ``IOutputAllocator``.

TensorRT calls an output allocator from inside ``execute_async_v3`` through a pybind11
trampoline (``PyOutputAllocator`` in ``python/src/infer/pyCore.cpp`` of NVIDIA/TensorRT):

* TensorRT 10 and later call ``reallocate_output_async(tensor_name, memory, size, alignment,
  stream)`` if the Python class defines it, else the deprecated ``reallocate_output(tensor_name,
  memory, size, alignment)``; TensorRT 8.6 calls only ``reallocate_output``. The adapter defines
  both, so every version finds the one it calls; the bindings choose, and nothing on the Python
  class tells the versions apart (from 10.0 on, ``IOutputAllocator`` exposes no methods at all).
* The trampoline prints an exception raised by a callback to standard error and treats it as
  nullptr, so the reason would be lost, and it would swallow a ``KeyboardInterrupt`` the same
  way: the adapter catches everything itself, keeps the reason for the executable's
  ``last_errors()``, and keeps a ``KeyboardInterrupt`` or ``SystemExit`` for the executable to
  raise once ``execute_async_v3`` is back in Python (:class:`AllocatorState`).
* ``notify_shape`` gets a ``Dims``; the session's allocator gets a tuple of ints.

One adapter is made per output and kept for the context's life (Polygraphy once leaked memory by
making one per inference, v0.49.10); registering another session allocator for the same output
retargets the existing adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgert._executable import OutputAllocator

__all__ = ["AllocatorState", "adapter_class"]


class AllocatorState:
    """What an executable's output allocator adapters ran into, shared by all of its outputs.

    Attributes:
        errors: Messages of failed callbacks, oldest first, until the executable hands them
            out (``last_errors()``).
        raised: A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
            ``SystemExit``) that arrived during a callback, to raise after the enqueue.
    """

    __slots__ = ("errors", "raised")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.raised: BaseException | None = None

    def caught(self, err: BaseException, text: str) -> None:
        """Keep a callback's failure."""
        self.errors.append(text)
        if not isinstance(err, Exception) and self.raised is None:
            self.raised = err

    def raise_pending(self) -> None:
        """Raise a kept ``KeyboardInterrupt`` or ``SystemExit``, if any (once)."""
        raised = self.raised
        if raised is not None:
            self.raised = None
            raise raised


def adapter_class(base: Any) -> Any:
    """A subclass of ``base`` (a TensorRT module's ``IOutputAllocator``) forwarding to a session
    allocator; construct it as ``cls(name, allocator, state)`` with an :class:`AllocatorState`."""

    class EdgertOutputAllocator(base):  # type: ignore[misc]
        """Forwards TensorRT's callbacks for one output to a session's OutputAllocator."""

        def __init__(self, name: str, target: OutputAllocator, state: AllocatorState) -> None:
            super().__init__()  # pybind11 refuses the instance without the base __init__
            self.tensor_name = name
            self.state = state
            self.errors = state.errors
            self.address = 0
            self.nbytes = 0
            self.retarget(target)

        def retarget(self, target: OutputAllocator) -> None:
            """Forward to ``target`` from now on (the memory it returns starts from 0 again)."""
            self.target = target
            self._reallocate: Callable[[str, int, int, int], int] = target.reallocate_output
            self._notify: Callable[[str, Sequence[int]], None] = target.notify_shape
            self.address = 0
            self.nbytes = 0

        def _memory(self, size: int, alignment: int) -> int:
            name = self.tensor_name
            try:
                address = int(self._reallocate(name, self.address, size, alignment))
            except BaseException as err:  # TensorRT's trampoline would only print it
                self.state.caught(err, f"the output allocator of {name!r} raised "
                                       f"{type(err).__name__} for {size} bytes: {err}")
                return 0
            if address <= 0 or (alignment > 0 and address % alignment):
                self.errors.append(
                    f"the output allocator of {name!r} gave address {address:#x} for {size} "
                    f"bytes aligned to {alignment}: " + (
                        "no memory" if address <= 0 else "misaligned"))
                return 0
            self.address, self.nbytes = address, size
            return address

        def reallocate_output(self, tensor_name: str, memory: int, size: int,
                              alignment: int) -> int:
            """TensorRT 8.6's callback (and 10+'s fallback): memory for the output."""
            return self._memory(size, alignment)

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int,
                                    alignment: int, stream: int) -> int:
            """TensorRT 10+'s callback: memory for the output (allocated at once, so the
            stream needs no ordering)."""
            return self._memory(size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            """TensorRT's callback with the output's real shape."""
            try:
                # Indexed, not iterated: iterating a tensorrt.Dims ends in a pybind11
                # IndexError, 7 us for a 2-d shape on tensorrt_lean 11.4 against 0.8 us.
                self._notify(self.tensor_name,
                             tuple([int(shape[i]) for i in range(len(shape))]))
            except BaseException as err:
                dims = tuple([shape[i] for i in range(len(shape))])
                self.state.caught(err, f"the output allocator of {self.tensor_name!r} raised "
                                       f"{type(err).__name__} on its shape {dims}: {err}")

    return EdgertOutputAllocator
