"""Element types: TensorRT's DataType names and ONNX Runtime's type strings, mapped to numpy.

Types numpy lacks are stored in an unsigned integer dtype of the same width (see
:mod:`edgert._executable` for the table); the TensorRT name travels beside the storage dtype.
For ONNX models, bfloat16 and the float8 types use ``ml_dtypes``' numpy dtypes where that
package is installed (it is what JAX and ONNX use), so arrays of them can be fed and read as
numbers; without it they are refused with a hint, because edgert cannot tell their bit patterns
from plain integers. ONNX Runtime is told the ONNX element type when edgert binds raw memory,
which is how these types run at all (ORT's own ``run()`` cannot take such arrays).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import numpy as np

__all__ = ["PACKED_ML_DTYPES", "ElementType", "from_onnx_type", "from_trt_name", "ml_dtypes",
           "needs_ml_dtypes"]


class ElementType(NamedTuple):
    """A numpy storage dtype, TensorRT's name for the type, bits per element, and the ONNX
    ``TensorProto.DataType`` number (0 where there is none)."""

    dtype: np.dtype[np.generic]
    trt_name: str
    bits: int
    onnx_type: int = 0


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


def _onnx(base: ElementType, onnx_type: int) -> ElementType:
    return base._replace(onnx_type=onnx_type)


# ONNX Runtime type string -> element type, with the ONNX type number IOBinding is given.
_ONNX: dict[str, ElementType] = {
    "tensor(float)": _onnx(_TRT["FLOAT"], 1),
    "tensor(uint8)": _onnx(_TRT["UINT8"], 2),
    "tensor(int8)": _onnx(_TRT["INT8"], 3),
    "tensor(uint16)": _onnx(_et("uint16", "UINT16"), 4),
    "tensor(int16)": _onnx(_et("int16", "INT16"), 5),
    "tensor(int32)": _onnx(_TRT["INT32"], 6),
    "tensor(int64)": _onnx(_TRT["INT64"], 7),
    "tensor(string)": ElementType(np.dtype(object), "STRING", 8 * np.dtype(object).itemsize, 8),
    "tensor(bool)": _onnx(_TRT["BOOL"], 9),
    "tensor(float16)": _onnx(_TRT["HALF"], 10),
    "tensor(double)": _onnx(_et("float64", "DOUBLE"), 11),
    "tensor(uint32)": _onnx(_et("uint32", "UINT32"), 12),
    "tensor(uint64)": _onnx(_et("uint64", "UINT64"), 13),
    "tensor(uint4)": _onnx(_et("uint8", "UINT4", 4), 21),
    "tensor(int4)": _onnx(_TRT["INT4"], 22),
    "tensor(float4e2m1)": _onnx(_TRT["FP4"], 23),
    "tensor(uint2)": _onnx(_et("uint8", "UINT2", 2), 25),
    "tensor(int2)": _onnx(_et("uint8", "INT2", 2), 26),
}

# Types numpy lacks, by ORT type string: (ml_dtypes name, TensorRT-style name, ONNX number).
_ML_DTYPES: dict[str, tuple[str, str, int]] = {
    "tensor(bfloat16)": ("bfloat16", "BF16", 16),
    "tensor(float8e4m3fn)": ("float8_e4m3fn", "FP8", 17),
    "tensor(float8e4m3fnuz)": ("float8_e4m3fnuz", "FP8E4M3FNUZ", 18),
    "tensor(float8e5m2)": ("float8_e5m2", "FP8E5M2", 19),
    "tensor(float8e5m2fnuz)": ("float8_e5m2fnuz", "FP8E5M2FNUZ", 20),
    "tensor(float8e8m0)": ("float8_e8m0fnu", "E8M0", 24),
}

# The ml_dtypes twins of the packed 4- and 2-bit types (one element per byte, unpacked).
PACKED_ML_DTYPES: dict[str, str] = {"INT4": "int4", "UINT4": "uint4", "FP4": "float4_e2m1fn",
                                    "INT2": "int2", "UINT2": "uint2"}


def ml_dtypes() -> Any:
    """The ``ml_dtypes`` module, or None where it is not installed."""
    try:
        return importlib.import_module("ml_dtypes")
    except ImportError:
        return None


def needs_ml_dtypes(type_string: str) -> str | None:
    """The ml_dtypes name for an ORT type string that needs it, else None."""
    entry = _ML_DTYPES.get(type_string)
    return None if entry is None else entry[0]


def from_trt_name(name: str) -> ElementType | None:
    """The element type for a TensorRT ``DataType`` member name, or None if unknown."""
    return _TRT.get(name)


def from_onnx_type(type_string: str) -> ElementType | None:
    """The element type for an ONNX Runtime type string such as ``tensor(float)``, or None.

    bfloat16 and the float8 types resolve only where ``ml_dtypes`` is installed.
    """
    element = _ONNX.get(type_string)
    if element is not None:
        return element
    entry = _ML_DTYPES.get(type_string)
    module = ml_dtypes() if entry is not None else None
    if entry is None or module is None:
        return None
    name, trt_name, onnx_type = entry
    dtype = np.dtype(getattr(module, name))
    return ElementType(dtype, trt_name, 8 * dtype.itemsize, onnx_type)
