"""Element types: TensorRT's DataType names and ONNX Runtime's type strings, mapped to numpy.

Types numpy lacks are stored in an unsigned integer dtype of the same width (see
:mod:`edgert._executable` for the table); the TensorRT name travels beside the storage dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ElementType", "from_onnx_type", "from_trt_name"]


class ElementType(NamedTuple):
    """A numpy storage dtype, TensorRT's name for the type, and bits per element."""

    dtype: np.dtype[np.generic]
    trt_name: str
    bits: int


def _et(dtype: str, trt_name: str, bits: int | None = None) -> ElementType:
    dt = np.dtype(dtype)
    return ElementType(dt, trt_name, 8 * dt.itemsize if bits is None else bits)


_TRT: dict[str, ElementType] = {
    "FLOAT": _et("float32", "FLOAT"),
    "HALF": _et("float16", "HALF"),
    "BF16": _et("uint16", "BF16"),
    "INT8": _et("int8", "INT8"),
    "INT32": _et("int32", "INT32"),
    "INT64": _et("int64", "INT64"),
    "BOOL": _et("bool", "BOOL"),
    "UINT8": _et("uint8", "UINT8"),
    "FP8": _et("uint8", "FP8"),
    "E8M0": _et("uint8", "E8M0"),
    "INT4": _et("uint8", "INT4", 4),
    "FP4": _et("uint8", "FP4", 4),
}

# ONNX Runtime type string -> (numpy dtype, TensorRT name). Only types that IOBinding can bind
# through a numpy dtype are listed; bfloat16 and float8 would be bound as the wrong ONNX type.
_ONNX: dict[str, ElementType] = {
    "tensor(float)": _TRT["FLOAT"],
    "tensor(float16)": _TRT["HALF"],
    "tensor(double)": _et("float64", "DOUBLE"),
    "tensor(int8)": _TRT["INT8"],
    "tensor(int16)": _et("int16", "INT16"),
    "tensor(int32)": _TRT["INT32"],
    "tensor(int64)": _TRT["INT64"],
    "tensor(uint8)": _TRT["UINT8"],
    "tensor(uint16)": _et("uint16", "UINT16"),
    "tensor(uint32)": _et("uint32", "UINT32"),
    "tensor(uint64)": _et("uint64", "UINT64"),
    "tensor(bool)": _TRT["BOOL"],
}


def from_trt_name(name: str) -> ElementType | None:
    """The element type for a TensorRT ``DataType`` member name, or None if unknown."""
    return _TRT.get(name)


def from_onnx_type(type_string: str) -> ElementType | None:
    """The element type for an ONNX Runtime type string such as ``tensor(float)``, or None."""
    return _ONNX.get(type_string)
