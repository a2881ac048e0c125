"""The interop protocols edgert accepts where it takes foreign objects, in one place.

Structural types only: nothing here is checked at run time (the code that consumes these objects
validates them and raises :class:`~edgert.InvalidArgumentError` with what it expected).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "SupportsCudaArrayInterface",
    "SupportsCudaStream",
    "SupportsDLPack",
    "TensorInput",
]


@runtime_checkable
class SupportsCudaStream(Protocol):
    """An object naming a CUDA stream through ``__cuda_stream__`` (the CUDA stream protocol).

    https://nvidia.github.io/cuda-python/cuda-core/latest/interoperability.html
    """

    def __cuda_stream__(self) -> tuple[int, int]:
        """``(version, handle)``: the protocol version and the raw ``cudaStream_t``."""
        ...


@runtime_checkable
class SupportsDLPack(Protocol):
    """An array exporting itself through DLPack (``__dlpack__`` and ``__dlpack_device__``).

    https://dmlc.github.io/dlpack/latest/python_spec.html
    """

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        """A DLPack capsule of the array."""
        ...

    def __dlpack_device__(self) -> tuple[int, int]:
        """``(device_type, device_id)`` of the array's memory."""
        ...


@runtime_checkable
class SupportsCudaArrayInterface(Protocol):
    """A device array describing itself through ``__cuda_array_interface__`` (CAI v3).

    https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html
    """

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Shape, typestr, data pointer, strides, version (and optionally mask, stream)."""
        ...


#: One request input: anything numpy takes as an array, or a device array (CAI or DLPack).
TensorInput: TypeAlias = "npt.ArrayLike | SupportsCudaArrayInterface | SupportsDLPack"
