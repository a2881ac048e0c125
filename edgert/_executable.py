"""The Executable seam: what an inference session drives, and how its tensors are described.

An :class:`Executable` is shaped like TensorRT's name-based ``IExecutionContext`` (set an input
shape, read a resolved shape, set a raw tensor address, enqueue on a stream) so that a real
TensorRT context fits with no adapter on the hot path: the TensorRT executable binds the
context's own methods as its attributes. ONNX Runtime (host memory, synchronous) and the testing
kernel executable implement the same protocol.

Every tensor is described by a :class:`TensorSpec`. TensorRT data types without a numpy twin are
stored in a numpy *storage* dtype of the same width, and the TensorRT name is kept beside it:

========  ==================  ====================================================
TensorRT  numpy storage       meaning
========  ==================  ====================================================
BF16      ``uint16``          bfloat16 bit patterns (2 bytes per element)
FP8       ``uint8``           float8 E4M3 bit patterns (1 byte per element)
E8M0      ``uint8``           8-bit exponent-only scale factors
INT4      ``uint8``           two signed 4-bit values per byte (packed)
FP4       ``uint8``           two float4 E2M1 values per byte (packed)
========  ==================  ====================================================

For the packed 4-bit types :attr:`TensorSpec.element_bits` is 4 and :meth:`TensorSpec.nbytes`
rounds up to whole bytes; :attr:`TensorSpec.itemsize` is the storage dtype's itemsize (1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from edgert._compat import StrEnum
from edgert.errors import InvalidArgumentError

__all__ = [
    "Executable",
    "OutputAllocator",
    "Placement",
    "ProfileShape",
    "TensorLocation",
    "TensorMode",
    "TensorSpec",
]


class TensorMode(StrEnum):
    """Whether a tensor is read (input) or written (output) by the executable."""

    INPUT = "input"
    OUTPUT = "output"


class TensorLocation(StrEnum):
    """Where one tensor's memory must live (TensorRT shape tensors may live on the host)."""

    DEVICE = "device"
    HOST = "host"


class Placement(StrEnum):
    """Where an executable's tensor memory must live as a whole: a CUDA device, or the host."""

    DEVICE = "device"
    HOST = "host"


def _as_shape(value: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in value)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{what} must be a sequence of ints, got {value!r}") from err
    return shape


@dataclass(frozen=True, slots=True)
class ProfileShape:
    """The (min, opt, max) shapes one optimization profile allows for one input.

    Attributes:
        min: The smallest shape the profile accepts.
        opt: The shape the engine was tuned for.
        max: The largest shape the profile accepts; size buffers for this one.
    """

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        lo, opt, hi = (_as_shape(s, "profile shape") for s in (self.min, self.opt, self.max))
        object.__setattr__(self, "min", lo)
        object.__setattr__(self, "opt", opt)
        object.__setattr__(self, "max", hi)
        if not len(lo) == len(opt) == len(hi):
            raise InvalidArgumentError(
                f"profile shapes differ in rank: min {lo}, opt {opt}, max {hi}")
        if any(not 0 <= a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
            raise InvalidArgumentError(
                f"profile shapes must satisfy 0 <= min <= opt <= max: min {lo}, opt {opt}, "
                f"max {hi}")

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether ``shape`` lies within this profile, dimension by dimension."""
        return len(shape) == len(self.min) and all(
            a <= d <= b for a, d, b in zip(self.min, shape, self.max, strict=True))


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorSpec:
    """One input or output tensor of an engine.

    Attributes:
        name: The tensor's name in the engine or model.
        mode: Input or output.
        dtype: The numpy dtype of its memory (a storage dtype for types numpy lacks; see the
            module documentation).
        shape: Its shape, with -1 for each dynamic dimension.
        profiles: For inputs, the (min, opt, max) shapes of each optimization profile, in
            profile order; empty for outputs and for models without profiles.
        location: Where its memory must live.
        trt_dtype_name: TensorRT's name for the element type (``FLOAT``, ``HALF``, ``BF16``...),
            also given for ONNX models so both describe tensors the same way.
        element_bits: Bits per element (4 for INT4/FP4, else 8 x itemsize).
        unknown_rank: The model does not declare the tensor's rank (an ONNX tensor with no
            shape, which is not the same as a 0-d one); ``shape`` is then ``()`` and any rank
            is accepted.
        optional: An input the model has a default for (an ONNX initializer that is also a
            graph input): a request may leave it out.
        dim_names: The model's name for each dimension (``""`` where it has none; empty when
            the runtime names none), as ONNX symbolic dimensions such as ``batch``.
    """

    name: str
    mode: TensorMode
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    profiles: tuple[ProfileShape, ...] = ()
    location: TensorLocation = TensorLocation.DEVICE
    trt_dtype_name: str = ""
    element_bits: int = field(default=0)
    unknown_rank: bool = False
    optional: bool = False
    dim_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError("a tensor needs a non-empty name")
        object.__setattr__(self, "mode", TensorMode(self.mode))
        object.__setattr__(self, "location", TensorLocation(self.location))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        shape = _as_shape(self.shape, f"shape of tensor {self.name!r}")
        if any(d < -1 for d in shape):
            raise InvalidArgumentError(
                f"tensor {self.name!r} has shape {shape}: dimensions are >= 0, or -1 if dynamic")
        if self.unknown_rank and shape:
            raise InvalidArgumentError(
                f"tensor {self.name!r} has unknown rank, so its shape must be (), not {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dim_names", tuple(str(n) for n in self.dim_names))
        if self.dim_names and len(self.dim_names) != len(shape):
            raise InvalidArgumentError(
                f"tensor {self.name!r}: {len(self.dim_names)} dimension names for rank "
                f"{len(shape)}")
        object.__setattr__(self, "profiles", tuple(self.profiles))
        for p in self.profiles:
            if len(p.min) != len(shape):
                raise InvalidArgumentError(
                    f"tensor {self.name!r}: profile rank {len(p.min)} != tensor rank {len(shape)}")
        if self.element_bits == 0:
            object.__setattr__(self, "element_bits", 8 * self.dtype.itemsize)
        elif self.element_bits < 0:
            raise InvalidArgumentError(f"element_bits must be positive, got {self.element_bits}")

    @property
    def is_input(self) -> bool:
        """Whether this is an input tensor."""
        return self.mode is TensorMode.INPUT

    @property
    def is_dynamic(self) -> bool:
        """Whether any dimension is dynamic (-1), or the rank itself is unknown."""
        return self.unknown_rank or -1 in self.shape

    @property
    def itemsize(self) -> int:
        """Bytes of one element of the numpy storage dtype."""
        return self.dtype.itemsize

    def nbytes(self, shape: Sequence[int] | None = None) -> int:
        """Bytes a buffer of ``shape`` (default: this tensor's own shape) needs.

        Raises:
            InvalidArgumentError: The shape still has a dynamic (-1) dimension, or its rank
                differs from the tensor's.
        """
        dims = self.shape if shape is None else _as_shape(shape, "shape")
        if self.unknown_rank and shape is None:
            raise InvalidArgumentError(
                f"tensor {self.name!r} has unknown rank", hint="pass a concrete shape")
        if len(dims) != len(self.shape) and not self.unknown_rank:
            raise InvalidArgumentError(
                f"tensor {self.name!r} has rank {len(self.shape)}, got shape {tuple(dims)}")
        if any(d < 0 for d in dims):
            raise InvalidArgumentError(
                f"tensor {self.name!r}: shape {tuple(dims)} has a dynamic dimension",
                hint="pass a concrete shape, e.g. spec.nbytes(spec.max_shape())")
        return (math.prod(dims) * self.element_bits + 7) // 8

    def max_shape(self, profile: int = 0) -> tuple[int, ...]:
        """The largest shape this tensor takes under ``profile``; its own shape if static.

        Raises:
            InvalidArgumentError: The tensor is dynamic and has no such profile.
        """
        if not self.is_dynamic:
            return self.shape
        if not 0 <= profile < len(self.profiles):
            raise InvalidArgumentError(
                f"tensor {self.name!r} is dynamic and has no profile {profile} "
                f"({len(self.profiles)} profiles)",
                hint="output sizes follow from the inputs: set input shapes on the executable "
                     "and read get_tensor_shape()")
        return self.profiles[profile].max


@runtime_checkable
class OutputAllocator(Protocol):
    """Memory for an output whose shape is known only while or after the executable runs.

    Shaped like TensorRT's ``IOutputAllocator`` (8.6 / 10 / 11) so that the TensorRT executable
    hands the session's allocator to the context with a thin adapter. An executable that reports
    an output shape with -1 after every input shape is set (a data-dependent output such as
    NonZero's, or an ONNX output whose dimensions the model does not tie to its inputs) writes
    that output through the allocator the session registered with
    ``set_output_allocator(name, allocator)``:

    1. ``reallocate_output(name, memory, size, alignment)`` during the run: return the address
       of at least ``size`` bytes aligned to ``alignment`` (``memory`` is the address returned
       last time, 0 the first time; returning it again is allowed when it is large enough), or 0
       if no memory could be had (the run then fails);
    2. ``notify_shape(name, shape)`` once the output's real shape is known, before the run ends
       (for a device executable: before the work on the stream completes).

    A device executable asks for the memory before ``execute_async_v3`` returns (TensorRT does,
    inside ``enqueueV3``): in copy I/O the session enqueues the copy of that whole block to the
    host right behind the executable's work, and applies the notified shape when the request
    completes. Both callbacks never raise; a failure makes ``reallocate_output`` return 0 and
    is reported by the session as the request's ``InferenceError``.
    """

    def reallocate_output(self, tensor_name: str, memory: int, size: int,
                          alignment: int) -> int:
        """An address of at least ``size`` bytes for ``tensor_name``; 0 if none can be had."""
        ...

    def notify_shape(self, tensor_name: str, shape: Sequence[int]) -> None:
        """The real shape of the output just written."""
        ...


@runtime_checkable
class Executable(Protocol):
    """What an inference session drives; shaped like TensorRT's ``IExecutionContext``.

    Methods return False on failure, as TensorRT does. Implementations may also offer
    ``last_errors() -> tuple[str, ...]`` (the TensorRT and ONNX Runtime executables do): the
    error lines the runtime reported on the calling thread since the previous call, which a
    session puts into its ``InferenceError``. Look it up with ``getattr``; it is not part of the
    protocol, so executables that raise no such lines need not define it.

    Executables whose outputs can have shapes that do not follow from the input shapes also
    offer ``set_output_allocator(name, allocator: OutputAllocator) -> bool`` (see
    :class:`OutputAllocator`); the session registers one for every output whose
    ``get_tensor_shape`` still has a -1 after all input shapes are set (for an output of
    unknown rank any shape with a -1 will do), never gives such an output an address with
    ``set_tensor_address``, and never captures such an executable into a CUDA graph. The shape
    passed to ``notify_shape`` is the output's real shape, whatever its declared shape says.

    An output that has the same name as an input (an ONNX graph input that is also a graph
    output) is never bound by the session: it copies the input.

    An input with ``TensorSpec.optional`` set may be given address 0 with
    ``set_tensor_address``: the executable then uses the model's default for it.
    """

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """Every tensor, inputs first, then outputs."""
        ...

    @property
    def placement(self) -> Placement:
        """Where tensor memory must live."""
        ...

    @property
    def graph_capturable(self) -> bool:
        """Whether an enqueue may be captured into a CUDA graph."""
        ...

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Set the concrete shape of a dynamic input; False if it is not allowed."""
        ...

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        """The current shape of a tensor; for outputs, -1 where it cannot be inferred yet."""
        ...

    def set_tensor_address(self, name: str, address: int) -> bool:
        """Bind a tensor to raw memory at ``address`` (device or host per ``placement``)."""
        ...

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Enqueue one inference on the stream (host executables run synchronously)."""
        ...

    def close(self) -> None:
        """Release the context; idempotent."""
        ...
