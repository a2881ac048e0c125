"""Input checking: every rejection happens before anything is enqueued, with a specific error.

The session's hot path handles the common case (a numpy array of the right dtype and the shape
of the previous request) inline; everything else comes here, where each input is classified
(staged numpy, pinned host memory, device memory) and checked against its
:class:`~edgert.engine.TensorSpec` and optimization profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgert._executable import TensorSpec
from edgert.errors import InputError
from edgert.memory._dlpack import (
    KDL_CUDA,
    KDL_CUDA_MANAGED,
    read_capsule,
    request_capsule,
)

__all__ = [
    "ExternalArray",
    "cast_input",
    "check_dtype",
    "check_names",
    "check_shape",
    "external_array",
    "pinned_address",
]


@dataclass(frozen=True, slots=True)
class ExternalArray:
    """Memory the caller owns that the session binds or copies from without staging.

    Attributes:
        host_ptr: Host address (pinned or mapped host memory), or None for device memory.
        device_ptr: Address the device reads (device memory, or mapped host memory), or None.
        shape: Element shape.
        dtype: Element type.
        stream: For ``__cuda_array_interface__`` producers: the stream the data was written on.
        keep: What must stay alive until the request completes (the array, a DLPack capsule).
    """

    host_ptr: int | None
    device_ptr: int | None
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    stream: int | None
    keep: object


def check_names(inputs: Mapping[str, Any], names: Sequence[str],
                required: Sequence[str] | None = None) -> None:
    """Raise for missing or unknown input names.

    Args:
        inputs: The request.
        names: Every input of the model.
        required: The inputs a request must give (default: all of ``names``).

    Raises:
        InputError: Names are missing or unknown; the message lists the expected ones.
    """
    missing = [n for n in (names if required is None else required) if n not in inputs]
    unknown = sorted(str(k) for k in inputs if k not in names)
    parts = []
    if missing:
        parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
    if unknown:
        parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
    if parts:
        optional = [n for n in names if required is not None and n not in required]
        extra = f" (optional: {', '.join(optional)})" if optional else ""
        raise InputError("; ".join(parts) + f"; the model's inputs are {', '.join(names)}"
                         + extra, hint="pass a dict with those names")


#: TensorRT types stored as bit patterns in an unsigned integer dtype, with the ml_dtypes
#: type whose bits they are (see :mod:`edgert._executable`).
#: (The packed 4-bit types never get here: they are packed from their values.)
_BIT_PATTERNS = {"BF16": "bfloat16", "FP8": "float8_e4m3fn", "E8M0": "float8_e8m0fnu"}


def _bit_pattern_error(spec: TensorSpec, dtype: np.dtype[Any]) -> InputError:
    """The refusal of a numeric array for a tensor that holds bit patterns: converting its
    values (``astype``) would give numbers of another meaning (found by a hostile-input trial:
    the old hint said ``astype(np.uint16)`` for BF16, which turns 1.0 into 9e-41)."""
    twin = _BIT_PATTERNS[spec.trt_dtype_name]
    storage = spec.dtype.name
    how = (f"x.view(np.{storage})" if dtype.name == twin else
           f"x.astype(ml_dtypes.{twin}).view(np.{storage})")
    what = (f"a {dtype} array is passed as its bits" if dtype.name == twin else
            f"a {dtype} array's values are not such bits, and cast=True does not make them")
    return InputError(f"input {spec.name!r} is {spec.trt_dtype_name}, stored as {storage} bit "
                      f"patterns: {what}", hint=f"pass the bits: {how}")


def check_dtype(spec: TensorSpec, dtype: np.dtype[Any], *, cast: bool) -> bool:
    """Whether an input of ``dtype`` must be converted; raise if that is not allowed.

    Returns:
        False when ``dtype`` is the tensor's own, True when it must (and may) be cast.

    Raises:
        InputError: The dtype differs and ``cast`` is off, or the cast would lose kind, or the
            tensor holds bit patterns (BF16, FP8... on TensorRT), which no cast produces.
    """
    if dtype == spec.dtype:
        return False
    if spec.trt_dtype_name in _BIT_PATTERNS and spec.dtype.kind == "u":
        raise _bit_pattern_error(spec, dtype)
    castable = np.can_cast(dtype, spec.dtype, casting="same_kind")
    if cast and castable:
        return True
    if cast:
        hint = (f"{dtype} does not convert to {spec.dtype} safely (same_kind); convert it "
                "yourself")
    elif castable:
        hint = (f"convert it first (x.astype(np.{spec.dtype.name})), or create the session with "
                "cast=True")
    else:  # cast=True would refuse it too (found by a new user's trial)
        hint = (f"convert it yourself (x.astype(np.{spec.dtype.name})) if its values fit: "
                f"{dtype} does not convert to {spec.dtype} safely, not even with cast=True")
    raise InputError(f"input {spec.name!r} has dtype {dtype}, the model wants {spec.dtype}",
                     hint=hint)


#: Whether a dtype converts to another without loss (np.can_cast "safe"), remembered.
_SAFE_CASTS: dict[tuple[np.dtype[Any], np.dtype[Any]], bool] = {}


def cast_input(spec: TensorSpec, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``arr`` converted to the tensor's dtype (``same_kind``), refusing values it changes
    beyond rounding: integers that do not fit (uint64 2**63 + 5 became a negative int64 with
    no error, found by a new user's trial) and finite floats that overflow to infinity.

    Raises:
        InputError: A value does not fit the tensor's dtype.
    """
    target = spec.dtype
    pair = (arr.dtype, target)
    safe = _SAFE_CASTS.get(pair)
    if safe is None:
        safe = _SAFE_CASTS[pair] = bool(np.can_cast(arr.dtype, target, casting="safe"))
    if safe or not arr.size:
        return arr.astype(target)
    bad: object = None
    if target.kind in "fc" or _ml_float(target):  # finite values must stay finite
        with np.errstate(over="ignore", invalid="ignore"):  # checked here, said more clearly
            out = arr.astype(target, casting="same_kind")
        # ml_dtypes' floats (kind V) are checked through float32, which holds all their values;
        # float8 E4M3FN has no infinity and overflows to NaN (found by a hostile-input trial).
        seen = out if target.kind in "fc" else out.astype(np.float32)
        if np.isfinite(seen).all():
            return out
        # A finite value must stay finite and an infinity infinite (float8 E4M3FN has none: inf
        # became NaN); NaN in, NaN out. ml_dtypes sources are read through float32 too.
        if arr.dtype.kind in "fc" or _ml_float(arr.dtype):
            src = arr if arr.dtype.kind in "fc" else arr.astype(np.float32)
            lost = (np.isfinite(src) & ~np.isfinite(seen)) | (np.isinf(src) & ~np.isinf(seen))
        else:
            lost = ~np.isfinite(seen)
        if lost.any():
            bad = arr[lost].flat[0].item()
    else:
        out = arr.astype(target, casting="same_kind")
        if target.kind in "iu" and arr.dtype.kind in "iu":
            info = np.iinfo(target.name)
            low, high = int(arr.min()), int(arr.max())  # Python ints: exact for every width
            if low < info.min or high > info.max:
                bad = low if low < info.min else high
    if bad is not None:
        raise InputError(f"input {spec.name!r}: the value {bad!r} does not fit {target} "
                         f"(cast=True converts {arr.dtype} only where values fit)",
                         hint=f"scale or clip it to {target}'s range first, or feed the dtype "
                              "the model wants")
    return out


def _ml_float(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' floats (bfloat16, float8...: numpy kind V)."""
    return dtype.kind == "V" and dtype.fields is None and dtype.name.startswith(
        ("bfloat16", "float"))


def check_shape(spec: TensorSpec, shape: tuple[int, ...], profile: int) -> None:
    """Check a concrete input shape against the tensor and its optimization profile.

    Raises:
        InputError: Wrong rank, a static dimension differs, or a dimension is outside the
            profile's (min, max).
    """
    if spec.unknown_rank:
        if any(d < 0 for d in shape):
            raise InputError(f"input {spec.name!r} has a negative dimension in {shape}")
        return
    if len(shape) != len(spec.shape):
        raise InputError(
            f"input {spec.name!r} has rank {len(shape)} (shape {shape}); the model wants rank "
            f"{len(spec.shape)} (shape {spec.shape}, -1 = dynamic)",
            hint=_rank_hint(shape, spec.shape))
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want >= 0 and got != want:
            raise InputError(
                f"input {spec.name!r} has shape {shape}; dimension {axis} must be {want}",
                hint=f"the model's shape is {spec.shape} (-1 = dynamic)")
        if got < 0:
            raise InputError(f"input {spec.name!r} has a negative dimension in {shape}")
    if spec.profiles and profile < len(spec.profiles):
        prof = spec.profiles[profile]
        if not prof.contains(shape):
            raise InputError(
                f"input {spec.name!r} has shape {shape}, outside optimization profile {profile} "
                f"(min {prof.min}, max {prof.max})",
                hint=_profile_hint(shape, prof.min, prof.max))


def _rank_hint(shape: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What turns an array of ``shape`` into the model's rank (a trial was told to use
    ``x.reshape(())`` on a rank-3 array for a rank-2 input)."""
    if not want:
        return "pass a scalar: x.reshape(()) where x holds one value"
    if len(shape) + 1 == len(want):
        return "add the batch dimension, e.g. x[None] for a single sample"
    free = [d for d in want if d < 0]
    size = math.prod(shape)
    fixed = math.prod(d for d in want if d >= 0)
    target = tuple(want) if len(free) == 1 and fixed and size % fixed == 0 else None
    how = f"x.reshape{target}" if target is not None else f"a reshape to rank {len(want)}"
    if len(shape) == len(want) + 1:
        return f"drop a dimension: x[0] for the first along the leading one, or {how}"
    return f"reshape it: {how}"


def _profile_hint(shape: tuple[int, ...], low: tuple[int, ...], high: tuple[int, ...]) -> str:
    """What to do with a shape outside the profile: below its minimum (an empty batch among
    them, which a trial was told to split into smaller batches), above its maximum, or both."""
    below = [d < m for d, m in zip(shape, low, strict=True)]
    if any(d == 0 for d, under in zip(shape, below, strict=True) if under):
        return "an empty request has nothing to compute: skip the call when there is no data"
    ways = []
    if any(d > m for d, m in zip(shape, high, strict=True)):
        ways.append("split the request into smaller batches, or use an engine built with a "
                    "larger profile")
    if any(below):
        ways.append("pad the request up to the profile's minimum, or use an engine built with "
                    "a profile that starts lower")
    return "; and ".join(ways)


def _host_allocation(arr: np.ndarray[Any, Any]) -> Any:
    """The edgert Allocation at the end of ``arr``'s base chain, or None."""
    from edgert.memory._allocation import Allocation

    base: Any = arr.base
    for _ in range(16):
        if base is None:
            return None
        if isinstance(base, Allocation):
            return base
        base = getattr(base, "base", None)
    return None


def pinned_address(arr: np.ndarray[Any, Any]) -> tuple[int, int | None] | None:
    """``(host_ptr, device_ptr or None)`` if ``arr`` lies in edgert page-locked memory.

    Only C-contiguous arrays qualify; ``device_ptr`` is given for mapped memory.
    """
    if arr.base is None or not arr.flags.c_contiguous:
        return None
    alloc = _host_allocation(arr)
    if alloc is None or str(alloc.kind) not in ("pinned", "registered"):
        return None
    ptr = int(arr.__array_interface__["data"][0])
    offset = ptr - int(alloc.ptr)
    if not 0 <= offset <= int(alloc.nbytes) - arr.nbytes:
        return None
    dptr = None if alloc.device_ptr is None else int(alloc.device_ptr) + offset
    return ptr, dptr


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    want = _c_strides(shape, itemsize)
    return all(s == w or n <= 1 for s, w, n in zip(strides, want, shape, strict=True))


def _check_device(name: str, found: int, device: int | None, protocol: str) -> None:
    if device is not None and found != device:
        raise InputError(f"input {name!r} ({protocol}) is on CUDA device {found}; this session "
                         f"runs on device {device}",
                         hint=f"move it first (x.to('cuda:{device}') in torch, or "
                              f"cupy.asarray(x) under cupy.cuda.Device({device}))")


def _cai_device(ptr: int) -> int | None:
    """The device a CAI pointer belongs to (None when CUDA does not know the pointer)."""
    from edgert.cuda._memapi import pointer_info

    info = pointer_info(ptr)
    return None if info.memory_type == "unregistered" else info.device


def _from_cai(name: str, obj: Any, cai: Mapping[str, Any], device: int | None,
              writable: bool) -> ExternalArray:
    # https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html (version 3)
    version = cai.get("version")
    if not isinstance(version, int) or not 1 <= version <= 3:
        raise InputError(f"input {name!r} has __cuda_array_interface__ version {version!r}; "
                         "edgert reads versions 1 to 3",
                         hint="pass the array through DLPack instead")
    if cai.get("mask") is not None:
        raise InputError(f"input {name!r} is a masked array (__cuda_array_interface__ has a "
                         "mask); a model reads every element",
                         hint="fill the masked elements and pass the plain array")
    try:
        dtype = np.dtype(cai["typestr"])
        shape = tuple(int(d) for d in cai["shape"])
        ptr, readonly = cai["data"]
        ptr = int(ptr)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"input {name!r} has a malformed __cuda_array_interface__: {err}") \
            from err
    if writable and readonly:
        raise InputError(f"{name!r} is read-only (__cuda_array_interface__ data flag) and "
                         "cannot receive an output", hint="pass a writable array")
    strides = cai.get("strides")
    if not _contiguous(shape, None if strides is None else tuple(strides), dtype.itemsize):
        raise InputError(f"device input {name!r} is not C-contiguous (strides {strides})",
                         hint="pass x.contiguous() (torch) or cupy.ascontiguousarray(x)")
    if device is not None and ptr:
        found = _cai_device(ptr)
        if found is None:
            raise InputError(f"input {name!r} claims __cuda_array_interface__, but CUDA does "
                             f"not know its pointer 0x{ptr:x}",
                             hint="pass host data as a numpy array")
        _check_device(name, found, device, "__cuda_array_interface__")
    stream = cai.get("stream")  # v3: the producer's stream; the CUDA runner waits on it
    if stream == 0:
        raise InputError(f"input {name!r} names stream 0 in __cuda_array_interface__, which "
                         "the specification forbids (1 is the legacy default stream)")
    return ExternalArray(None, ptr, shape, dtype, None if stream is None else int(stream), obj)


def _from_dlpack(name: str, obj: Any, stream_handle: int, device: int | None,
                 writable: bool) -> ExternalArray:
    # The producer makes our stream wait for its own (no host block); -1 would skip that.
    try:
        capsule = request_capsule(obj, stream_handle or 1)
        t = read_capsule(capsule)
    except (BufferError, TypeError) as err:  # TypeError: a __dlpack__ without ``stream``
        raise InputError(f"input {name!r}: the DLPack export failed: {err}",
                         hint="pass a contiguous CUDA tensor from a DLPack 0.8+ (or 1.x) "
                              "library, or one with __cuda_array_interface__") from err
    if t.device_type not in (KDL_CUDA, KDL_CUDA_MANAGED):
        raise InputError(f"input {name!r} is a DLPack tensor on device type "
                         f"{t.device_type}, not CUDA memory",
                         hint="pass host data as a numpy array")
    _check_device(name, t.device_id, device, "DLPack")
    if t.dtype is None:
        code, bits, lanes = t.dl_dtype
        raise InputError(f"input {name!r} has a DLPack dtype (code {code}, {bits} bits, "
                         f"{lanes} lanes) with no numpy equivalent")
    if writable and t.readonly:
        raise InputError(f"{name!r} is a read-only DLPack tensor and cannot receive an output",
                         hint="pass a writable tensor")
    dtype = t.dtype
    strides = None if t.strides is None else tuple(s * dtype.itemsize for s in t.strides)
    if not _contiguous(t.shape, strides, dtype.itemsize):
        raise InputError(f"device input {name!r} is not C-contiguous",
                         hint="make it contiguous before passing it")
    # An unconsumed capsule calls the tensor's deleter when it is collected: keeping it alive
    # until the request completes keeps the memory alive.
    return ExternalArray(None, t.ptr, t.shape, dtype, None, (obj, capsule))


def external_array(name: str, obj: Any, stream_handle: int, *, device: int | None = None,
                   writable: bool = False) -> ExternalArray | None:
    """Describe a device array (``__cuda_array_interface__`` or CUDA DLPack), or None.

    Args:
        name: The tensor's name, for the errors.
        obj: The caller's object.
        stream_handle: The consumer stream: a DLPack producer makes it wait for its own work
            (a CAI producer's stream is returned in ``ExternalArray.stream`` to wait on).
        device: The session's CUDA device; memory on another one is refused. None skips the
            check.
        writable: The memory will be written (an output): read-only memory is refused.

    Raises:
        InputError: The array is on another kind of device or another GPU, masked, read-only
            where it must be written, not contiguous, of a dtype numpy cannot describe, or of
            a protocol version edgert cannot read.
    """
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        cai = None  # none, or e.g. an unmapped HostBuffer: it has the property but refuses
    if cai is not None:
        return _from_cai(name, obj, cai, device, writable)
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is not None:
        device_type = int(dev()[0])
        if device_type in (KDL_CUDA, KDL_CUDA_MANAGED):
            return _from_dlpack(name, obj, stream_handle, device, writable)
    return None
