"""The fake TensorRT's plan format, its writer (:func:`make_plan`) and its function registry.

Layout (little-endian), chosen so edgert's header reader treats fake plans like real ones::

    offset  size  content
    0       4     b"ftrt"        TensorRT's plan tag (uint32 1953657958)
    4       4     0              serialization tag, 0 as in current TensorRT plans
    8       8     b"EDGEFAKE"    marks a fake plan
    16      8     size           size of the whole plan (where TensorRT 11 plans keep it)
    24      4     major, minor, patch, build of the TensorRT version that "built" it
    28      ...   JSON header    tensors, profiles, flags and the function name (below)

JSON header: ``{"format": 1, "name", "function", "version_compatible", "device_memory_size",
"num_profiles", "fail": {"deserialize": null | "oom", "context": bool, "enqueue_after": null | int},
"tensors": [{"name", "mode": "INPUT"|"OUTPUT", "dtype": DataType name, "shape": [...],
"location": "DEVICE"|"HOST", "profiles": [[min, opt, max], ...], "max_shape": [...] | null}]}``.
An output dimension is an int, -1 (data-dependent: known only after a run, bounded by
``max_shape``), or ``"input:axis"`` (follows that input's dimension).

The "computation" is a Python function from the registry: it takes ``{input name: array}`` and
returns ``{output name: array}`` (or one array when there is one output).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from edgert.testing._fake_trt_types import DataType

__all__ = [
    "FAKE_MARKER",
    "FakeTensor",
    "ParsedPlan",
    "PlanError",
    "get_function",
    "make_plan",
    "parse_plan",
    "register_function",
    "register_resolver",
]

MAGIC = b"ftrt"
FAKE_MARKER = b"EDGEFAKE"
_PREFIX = 28
NUMPY_DTYPES: dict[DataType, str] = {
    DataType.FLOAT: "float32", DataType.HALF: "float16", DataType.INT8: "int8",
    DataType.INT32: "int32", DataType.INT64: "int64", DataType.BOOL: "bool",
    DataType.UINT8: "uint8", DataType.BF16: "uint16", DataType.FP8: "uint8",
    DataType.E8M0: "uint8", DataType.INT4: "uint8", DataType.FP4: "uint8",
}
_FROM_NUMPY = {"float32": DataType.FLOAT, "float16": DataType.HALF, "int8": DataType.INT8,
               "int32": DataType.INT32, "int64": DataType.INT64, "bool": DataType.BOOL,
               "uint8": DataType.UINT8}

Function = Callable[[Mapping[str, npt.NDArray[Any]]], Any]
_registry: dict[str, Function] = {}
_resolvers: dict[str, Callable[[str], Function]] = {}


class PlanError(Exception):
    """A plan the fake cannot deserialize; the message is what the fake logs."""


def register_function(name: str, function: Function) -> None:
    """Make ``function`` available to plans that name it (replaces an earlier one)."""
    if not name or not callable(function):
        raise ValueError("register_function needs a name and a callable")
    _registry[name] = function


def register_resolver(prefix: str, resolve: Callable[[str], Function]) -> None:
    """Let ``resolve(name)`` make the function of any name starting with ``prefix`` (once)."""
    _resolvers[prefix] = resolve


def get_function(name: str) -> Function | None:
    """The registered (or resolvable) function called ``name``, or None."""
    function = _registry.get(name)
    if function is None:
        for prefix, resolve in _resolvers.items():
            if name.startswith(prefix):
                function = _registry[name] = resolve(name)
                break
    return function


def _identity(inputs: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    return [a.copy() for a in inputs.values()]


def _nonzero(inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    (x,) = inputs.values()
    return np.flatnonzero(x).astype(np.int32)


def _onnx_nonzero(inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    # ONNX NonZero: int64 indices of shape (rank, count), one row per input dimension.
    (x,) = inputs.values()
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


def _policy(inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    from edgert.models import policy_reference

    (obs,) = inputs.values()
    return policy_reference(obs)


register_function("identity", _identity)
register_function("nonzero", _nonzero)
register_function("onnx.NonZero", _onnx_nonzero)
register_function("edgert.control_policy", _policy)


def _dtype(value: DataType | str | np.dtype[Any] | type) -> DataType:
    if isinstance(value, DataType):
        return value
    if isinstance(value, str) and value in DataType.__members__:
        return DataType[value]
    name = np.dtype(value).name
    if name not in _FROM_NUMPY:
        raise ValueError(f"no TensorRT type for numpy dtype {name}")
    return _FROM_NUMPY[name]


@dataclass(frozen=True)
class FakeTensor:
    """One tensor of a fake plan.

    Attributes:
        name: Tensor name.
        dtype: A ``DataType``, its name (``"HALF"``) or a numpy dtype.
        shape: Dimensions; -1 dynamic (inputs) or data-dependent (outputs); outputs may also use
            ``"input:axis"`` to follow an input's dimension.
        profiles: Inputs: ``(min, opt, max)`` per optimization profile.
        location: ``"DEVICE"`` or ``"HOST"``.
        max_shape: Data-dependent outputs: the largest shape a run may produce.
    """

    name: str
    dtype: DataType | str | Any = "FLOAT"
    shape: Sequence[int | str] = ()
    profiles: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]] = ()
    location: str = "DEVICE"
    max_shape: Sequence[int] | None = None

    def as_json(self, mode: str) -> dict[str, Any]:
        """This tensor as the plan header's JSON entry, with ``mode`` (``INPUT``/``OUTPUT``)."""
        return {"name": self.name, "mode": mode, "dtype": _dtype(self.dtype).name,
                "shape": list(self.shape), "location": self.location,
                "profiles": [[list(s) for s in p] for p in self.profiles],
                "max_shape": list(self.max_shape) if self.max_shape is not None else None}


def make_plan(
    *,
    inputs: Sequence[FakeTensor],
    outputs: Sequence[FakeTensor],
    function: str,
    version: str = "10.8.0.43",
    version_compatible: bool = False,
    device_memory_size: int = 0,
    name: str = "fake_engine",
    fail_deserialize: str | None = None,
    fail_context: bool = False,
    fail_enqueue_after: int | None = None,
) -> bytes:
    """Serialize a fake plan (see the module documentation for the format).

    Args:
        inputs: Input tensors.
        outputs: Output tensors.
        function: Registry name of the function that computes the outputs.
        version: The TensorRT version the plan claims to be built with.
        version_compatible: Built "version-compatible": loads on any runtime of the same major
            version that is at least as new, only with ``engine_host_code_allowed``.
        device_memory_size: What ``device_memory_size_v2`` reports.
        name: The engine's name.
        fail_deserialize: ``"oom"`` makes deserialization fail as if out of memory.
        fail_context: ``create_execution_context`` returns None (allocation failure).
        fail_enqueue_after: ``execute_async_v3`` fails after this many successful runs.
    """
    parts = [int(p) for p in version.split(".")[:4]] + [0, 0, 0]
    profiles = max((len(t.profiles) for t in inputs), default=0)
    header = {
        "format": 1, "name": name, "function": function,
        "version_compatible": version_compatible, "device_memory_size": device_memory_size,
        "num_profiles": max(profiles, 1),
        "fail": {"deserialize": fail_deserialize, "context": fail_context,
                 "enqueue_after": fail_enqueue_after},
        "tensors": [t.as_json("INPUT") for t in inputs] + [t.as_json("OUTPUT") for t in outputs],
    }
    body = json.dumps(header, sort_keys=True).encode()
    return (MAGIC + struct.pack("<I", 0) + FAKE_MARKER + struct.pack("<Q", _PREFIX + len(body))
            + bytes(p & 0xFF for p in parts[:4]) + body)


@dataclass
class ParsedPlan:
    """A fake plan, decoded and checked."""

    version: tuple[int, int, int, int]
    name: str
    function: str
    version_compatible: bool
    device_memory_size: int
    num_profiles: int
    fail: dict[str, Any]
    tensors: list[dict[str, Any]] = field(default_factory=list)


def _err(text: str) -> PlanError:
    return PlanError(f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization ({text})")


def _check_tensor(t: Any, num_profiles: int) -> dict[str, Any]:
    ok = (isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"]
          and t.get("mode") in ("INPUT", "OUTPUT") and t.get("dtype") in DataType.__members__
          and t.get("location") in ("DEVICE", "HOST") and isinstance(t.get("shape"), list)
          and isinstance(t.get("profiles"), list))
    if not ok:
        raise _err("fake_tensorrt: malformed tensor entry in the plan header")
    for d in t["shape"]:
        if not ((isinstance(d, int) and d >= -1) or (t["mode"] == "OUTPUT" and isinstance(d, str)
                                                    and d.rpartition(":")[2].isdigit())):
            raise _err(f"fake_tensorrt: bad dimension {d!r} of tensor {t['name']!r}")
    for p in t["profiles"]:
        if not (isinstance(p, list) and len(p) == 3 and all(
                isinstance(s, list) and len(s) == len(t["shape"])
                and all(isinstance(d, int) and d >= 0 for d in s) for s in p)):
            raise _err(f"fake_tensorrt: bad profile of tensor {t['name']!r}")
    if t["mode"] == "INPUT" and -1 in t["shape"] and len(t["profiles"]) != num_profiles:
        raise _err(f"fake_tensorrt: dynamic input {t['name']!r} needs {num_profiles} profiles")
    max_shape = t.get("max_shape")
    if max_shape is not None and not (isinstance(max_shape, list) and all(
            isinstance(d, int) and d >= 0 for d in max_shape)):
        raise _err(f"fake_tensorrt: bad max_shape of tensor {t['name']!r}")
    return cast(dict[str, Any], t)


def parse_plan(data: bytes) -> ParsedPlan:
    """Decode a fake plan; raises :class:`PlanError` with TensorRT-style text."""
    if data[:4] != MAGIC:
        raise _err("Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does "
                   "not match")
    if len(data) < _PREFIX:
        raise PlanError("[runtime.cpp::readHeader] Error Code 2: Internal Error (Assertion "
                        "bufferSize >= minBufferSize failed.)")
    if data[8:16] != FAKE_MARKER:
        raise _err("fake_tensorrt: this is not a fake plan (a real TensorRT plan needs a real "
                   "TensorRT runtime)")
    (size,) = struct.unpack_from("<Q", data, 16)
    if size != len(data):
        raise _err("Serialization assertion plan.header.size == blobSize failed.")
    length = size - _PREFIX
    try:
        header = json.loads(data[_PREFIX:_PREFIX + length].decode("utf-8"))
        num_profiles = int(header["num_profiles"])
        fail = dict(header["fail"])
        plan = ParsedPlan(
            version=tuple(data[24:28]),  # type: ignore[arg-type]
            name=str(header["name"]), function=str(header["function"]),
            version_compatible=bool(header["version_compatible"]),
            device_memory_size=int(header["device_memory_size"]), num_profiles=num_profiles,
            fail=fail, tensors=[_check_tensor(t, num_profiles) for t in header["tensors"]])
    except PlanError:
        raise
    except Exception as err:
        raise _err(f"fake_tensorrt: corrupt plan header ({type(err).__name__})") from err
    if header.get("format") != 1 or num_profiles < 1 or not plan.tensors:
        raise _err("fake_tensorrt: unsupported plan header")
    names = [t["name"] for t in plan.tensors]
    if len(set(names)) != len(names):
        raise _err("fake_tensorrt: duplicate tensor names")
    ranks = {t["name"]: len(t["shape"]) for t in plan.tensors if t["mode"] == "INPUT"}
    for t in plan.tensors:
        for d in t["shape"]:
            if isinstance(d, str):
                source, _, axis = d.rpartition(":")
                if ranks.get(source, 0) <= int(axis):
                    raise _err(f"fake_tensorrt: output {t['name']!r} follows {d!r}, which is "
                               "not an input dimension")
    return plan
