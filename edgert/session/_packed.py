"""Packed sub-byte tensors: INT4, UINT4, FP4 (two elements per byte) and INT2, UINT2 (four).

The first element sits in the lowest bits: the layout of ONNX (``onnx.proto``: "packed ... the
first element in the 4 LSB") and of TensorRT. numpy has no such types; ``ml_dtypes`` has one
element per byte (``int4``, ``uint4``, ``float4_e2m1fn``, ``int2``, ``uint2``), holding the bit
pattern in the low bits. Inputs are accepted as such arrays (or as the packed bytes themselves,
a 1-d ``uint8`` array) and packed into the staging buffer; outputs are handed out unpacked as
such arrays where ``ml_dtypes`` is installed, else as their packed bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgert._executable import TensorSpec
from edgert.engine._dtypes import PACKED_ML_DTYPES, ml_dtypes
from edgert.errors import InputError

__all__ = ["ml_dtype_of", "pack_into", "packed_error", "packed_shape", "unpack"]


def ml_dtype_of(spec: TensorSpec) -> np.dtype[Any] | None:
    """The unpacked ml_dtypes dtype of a packed tensor, or None (not packed, or no ml_dtypes)."""
    name = PACKED_ML_DTYPES.get(spec.trt_dtype_name)
    module = ml_dtypes() if name is not None else None
    return None if module is None or name is None else np.dtype(getattr(module, name))


def pack_into(spec: TensorSpec, arr: np.ndarray[Any, Any], out: np.ndarray[Any, Any]) -> None:
    """Pack ``arr`` into the uint8 buffer ``out`` (sized for ``arr.shape``).

    Raises:
        InputError: ``arr`` is neither the tensor's unpacked ml_dtypes type nor its packed bytes.
    """
    nbytes = out.size
    want = ml_dtype_of(spec)
    if want is not None and arr.dtype == want:
        bits = spec.element_bits
        per = 8 // bits
        values = np.ascontiguousarray(arr).reshape(-1).view(np.uint8) & ((1 << bits) - 1)
        padded = np.zeros(nbytes * per, np.uint8)
        padded[:values.size] = values
        out[...] = padded[0::per]
        for k in range(1, per):
            out |= padded[k::per] << (bits * k)
        return
    if arr.dtype == np.uint8 and arr.ndim == 1 and arr.size == nbytes:
        np.copyto(out, arr)
        return
    raise packed_error(spec, arr)


def packed_error(spec: TensorSpec, arr: np.ndarray[Any, Any]) -> InputError:
    """The error for an array a packed input does not accept."""
    what = f"an ml_dtypes.{PACKED_ML_DTYPES.get(spec.trt_dtype_name, 'int4')} array"
    per = 8 // spec.element_bits
    size = f"ceil(elements / {per})" if spec.is_dynamic else str(spec.nbytes())
    return InputError(
        f"input {spec.name!r} holds packed {spec.element_bits}-bit {spec.trt_dtype_name} values "
        f"({per} per byte); "
        f"got a {arr.dtype} array of shape {arr.shape}",
        hint=f"pass {what} of the input's shape (pip install ml_dtypes), or its packed bytes as "
             f"a 1-d uint8 array of {size} elements")


def packed_shape(spec: TensorSpec, arr: np.ndarray[Any, Any]) -> tuple[int, ...] | None:
    """The logical shape ``arr`` gives a packed input, or None when it is not one it accepts."""
    want = ml_dtype_of(spec)
    if want is not None and arr.dtype == want:
        return tuple(arr.shape)
    return None


def unpack(spec: TensorSpec, raw: np.ndarray[Any, Any], shape: tuple[int, ...]) -> Any:
    """The packed bytes ``raw`` as an unpacked ml_dtypes array of ``shape`` (a new array), or
    ``raw`` itself where ml_dtypes is not installed."""
    dtype = ml_dtype_of(spec)
    if dtype is None:
        return raw
    n = int(np.prod(shape))
    bits = spec.element_bits
    per = 8 // bits
    mask = (1 << bits) - 1
    values = np.empty(per * raw.size, np.uint8)
    for k in range(per):
        np.bitwise_and(raw >> (bits * k), mask, out=values[k::per])
    return values[:n].view(dtype).reshape(shape)
