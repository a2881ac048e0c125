"""A session's ``OutputAllocator`` (``edgert._executable``) as TensorRT's ``IOutputAllocator``.

TensorRT calls an output allocator from inside ``execute_async_v3`` through a pybind11
trampoline (``PyOutputAllocator`` in ``python/src/infer/pyCore.cpp`` of NVIDIA/TensorRT):

* TensorRT 10 and later call ``reallocate_output_async(tensor_name, memory, size, alignment,
  stream)`` if the Python class defines it, else the deprecated ``reallocate_output(tensor_name,
  memory, size, alignment)``; TensorRT 8.6 calls only ``reallocate_output``. The adapter defines
  both, so every version finds the one it calls; the bindings choose, and nothing on the Python
  class tells the versions apart (from 10.0 on, ``IOutputAllocator`` exposes no methods at all).
* The trampoline prints an exception raised by a callback to standard error and treats it as
  nullptr, so the reason would be lost: the adapter catches everything itself and keeps the
  reason for the executable's ``last_errors()``.
* ``notify_shape`` gets a ``Dims``; the session's allocator gets a tuple of ints.

One adapter is made per output and kept for the context's life (Polygraphy once leaked memory by
making one per inference, v0.49.10); registering another session allocator for the same output
retargets the existing adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgert._executable import OutputAllocator

__all__ = ["adapter_class"]


def adapter_class(base: Any) -> Any:
    """A subclass of ``base`` (a TensorRT module's ``IOutputAllocator``) forwarding to a session
    allocator; construct it as ``cls(name, allocator, errors)``."""

    class EdgertOutputAllocator(base):  # type: ignore[misc]
        """Forwards TensorRT's callbacks for one output to a session's OutputAllocator."""

        def __init__(self, name: str, target: OutputAllocator, errors: list[str]) -> None:
            super().__init__()  # pybind11 refuses the instance without the base __init__
            self.tensor_name = name
            self.errors = errors
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
            except Exception as err:  # TensorRT's trampoline would only print it
                self.errors.append(f"the output allocator of {name!r} raised "
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
            except Exception as err:
                self.errors.append(f"the output allocator of {self.tensor_name!r} raised "
                                   f"{type(err).__name__} on its shape {tuple(shape)}: {err}")

    return EdgertOutputAllocator
