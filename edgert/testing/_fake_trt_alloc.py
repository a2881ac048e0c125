"""``IOutputAllocator`` of the fake TensorRT, and how a fake context calls one.

Real TensorRT's Python bindings call an application's allocator through a pybind11 trampoline
(``PyOutputAllocator`` in ``python/src/infer/pyCore.cpp`` of NVIDIA/TensorRT, branches
``release/8.6`` to ``release/11.1``); the fake follows what that trampoline does:

* TensorRT 10 and later call ``reallocate_output_async(tensor_name, memory, size, alignment,
  stream)`` when the Python class defines it and fall back to the deprecated
  ``reallocate_output(tensor_name, memory, size, alignment)`` when it does not; TensorRT 8.6 knows
  only ``reallocate_output``.
* A callback that raises (anything: pybind11 turns even a ``KeyboardInterrupt`` into a C++
  exception, which the trampoline catches), or returns something that is not an int, is reported
  on standard error (``[ERROR] Exception caught in reallocateOutput(): ...``) and counts as no
  memory (nullptr).
* ``notify_shape(tensor_name, shape)`` follows with the real shape (a ``Dims``) before
  ``execute_async_v3`` returns; an exception there is printed and otherwise ignored.
* A subclass must call ``IOutputAllocator.__init__``; pybind11 refuses the instance otherwise.

``size`` is always positive, even for an empty tensor (``NvInferRuntime.h``); the fake asks for
:data:`ALIGNMENT` bytes of alignment. ``memory`` is the output's current address: the one given
to ``set_tensor_address``, then the one the allocator returned last (NVIDIA's own example
allocator asserts exactly that: https://github.com/NVIDIA/TensorRT/issues/4120). The fake calls
the allocator once per output per enqueue, after computing the outputs on the host; real
TensorRT calls it for a data-dependent output once the size is known on the device.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

from edgert.testing._fake_trt_types import Dims

__all__ = ["ALIGNMENT", "CALLBACK_NAMES", "IOutputAllocator", "call_notify", "call_reallocate"]

#: Alignment the fake context asks an output allocator for (TensorRT's own choice is internal;
#: 256 bytes is CUDA's allocation alignment).
ALIGNMENT = 256
#: The names TensorRT's bindings call on an output allocator, with their parameters (the
#: conformance test checks them against the real class's documentation).
CALLBACK_NAMES = {
    "reallocate_output": ("tensor_name", "memory", "size", "alignment"),
    "reallocate_output_async": ("tensor_name", "memory", "size", "alignment", "stream"),
    "notify_shape": ("tensor_name", "shape"),
}


class _PybindInit(type):
    """Refuses an instance whose ``__init__`` skipped the base class's, as pybind11 does."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__call__(*args, **kwargs)
        if not getattr(instance, "_fake_trt_base_initialized", False):
            raise TypeError("IOutputAllocator.__init__() must be called when overriding __init__")
        return instance


class IOutputAllocator(metaclass=_PybindInit):
    """Application-implemented allocator for output tensors (``tensorrt.IOutputAllocator``).

    Subclass it, call ``IOutputAllocator.__init__(self)`` and define ``reallocate_output_async``
    (TensorRT 10+) and/or ``reallocate_output`` (8.6+), and ``notify_shape``. As on TensorRT 10
    and later, the base class itself has no callable methods.
    """

    def __init__(self) -> None:
        self._fake_trt_base_initialized = True


def _report(what: str, text: str) -> None:
    print(f"[ERROR] {what}{text}", file=sys.stderr)


def call_reallocate(allocator: Any, name: str, memory: int, size: int, *, api_major: int,
                    stream_handle: int) -> int:
    """Ask ``allocator`` for ``size`` bytes for output ``name`` as the trampoline does (0: none).

    ``memory`` is the output's current address; ``api_major`` the runtime's major version.
    """
    callback = getattr(allocator, "reallocate_output_async", None) if api_major >= 10 else None
    what = "reallocateOutputAsync()"
    try:
        if callback is not None:
            address = callback(name, memory, size, ALIGNMENT, stream_handle)
        else:
            what = "reallocateOutput()"
            callback = getattr(allocator, "reallocate_output", None)
            if callback is None:
                return 0
            address = callback(name, memory, size, ALIGNMENT)
    except BaseException as err:  # the trampoline swallows everything
        _report(f"Exception caught in {what}: ", f"{type(err).__name__}: {err}")
        return 0
    try:
        value = operator.index(address)
        if value < 0:
            raise TypeError("negative")
    except TypeError:
        _report(f"Return value of {what} could not be interpreted as an int", "")
        return 0
    return value


def call_notify(allocator: Any, name: str, shape: tuple[int, ...]) -> None:
    """Tell ``allocator`` the real shape of output ``name``; errors are printed, as by TensorRT."""
    callback = getattr(allocator, "notify_shape", None)
    try:
        if callback is None:
            raise RuntimeError(
                'Tried to call pure virtual function "IOutputAllocator::notifyShape"')
        callback(name, Dims(shape))
    except BaseException as err:  # the trampoline swallows everything
        _report("Exception caught in notifyShape(): ", f"{type(err).__name__}: {err}")
