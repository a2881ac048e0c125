"""DLPack with ctypes: export (``DLManagedTensor`` and the 1.x versioned form) and import.

Follows the DLPack C header (dlpack.h, ABI 1.x) and the Python protocol of the array API
standard (https://dmlc.github.io/dlpack/latest/python_spec.html): the capsule is named
``"dltensor"`` (``"dltensor_versioned"`` when the consumer asked for ``max_version >= (1, 0)``); a
consumer renames it to ``"used_dltensor[_versioned]"`` and calls the tensor's ``deleter`` when
done; a capsule that nobody consumed calls the deleter from its own destructor. Until the deleter
runs, the export holds a reference to the memory's owner, so the memory outlives the producer's
``close()``.

Why not numpy or cuda.core: numpy (>= 2.1 for ``max_version``/``copy``/``dl_device``) exports and
imports host (``kDLCPU``) tensors only, and edgert's device buffers need ``kDLCUDA`` capsules, so
a producer has to exist here anyway; one producer serves every memory kind, and numpy remains
the consumer for host tensors (``np.from_dlpack(buffer)``). cuda.core's
``StridedMemoryView`` imports device tensors correctly (versions, read-only, CAI masks), but its
import pulls ``ml_dtypes`` (over a second on a loaded host), cuda-python 12.x does not install it,
and its module moved (``cuda.core.experimental`` to ``cuda.core``) between releases; the import
below is a few struct reads. The GPU tests check edgert against it; docs/memory.md has numbers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = [
    "DL_TYPE_CODES",
    "KDL_CPU",
    "KDL_CUDA",
    "KDL_CUDA_HOST",
    "KDL_CUDA_MANAGED",
    "ForeignTensor",
    "export_count",
    "read_capsule",
    "request_capsule",
    "to_dlpack",
    "wants_versioned",
]

KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13
# DLPack data type codes (dlpack.h) with a numpy kind: int, uint, float, bool.
DL_TYPE_CODES = {0: "i", 1: "u", 2: "f", 5: "c", 6: "b"}

# DLManagedTensorVersioned.flags bits (dlpack.h).
_FLAG_READ_ONLY = 1
# The version this module writes, and the only major version it reads: a later major may change
# the struct layout, so such a tensor is refused rather than misread.
_VERSION = (1, 0)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# The deleter receives a pointer to the managed struct; c_void_p is ABI-identical and lets one
# callback serve both layouts.
_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter)]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


# Everything a live export needs (the struct, its shape/strides arrays and the memory's owner),
# keyed by the struct's address; the deleter drops the entry. No lock: single dict operations
# are atomic under the GIL, and a lock could deadlock when a capsule destructor runs from the
# garbage collector inside a locked region of the same thread.
_live: dict[int, tuple[object, ...]] = {}


def _delete(address: int | None) -> None:
    if address is not None:
        _live.pop(address, None)


_DELETER = _Deleter(_delete)

# Private function objects, not the attributes of ctypes.pythonapi: those are one cached object
# per process, and any module (another library, or another part of edgert) that sets different
# argtypes on them would silently change how these calls convert their arguments.
_pyapi = ctypes.pythonapi
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p)(("PyCapsule_New", _pyapi))
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ("PyCapsule_IsValid", _pyapi))
_capsule_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ("PyCapsule_GetPointer", _pyapi))
_object_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _pyapi))


# Capsule names must outlive every capsule: module-lifetime C strings.
_NAME = ctypes.create_string_buffer(b"dltensor")
_NAME_VERSIONED = ctypes.create_string_buffer(b"dltensor_versioned")


def _make_destructor(name: Any) -> Any:
    name_ptr = ctypes.addressof(name)

    def destroy(capsule: int | None) -> None:
        # Still carrying our name means no consumer took it: the deleter is ours to call.
        if capsule and _capsule_is_valid(capsule, name_ptr):
            _delete(_capsule_get_pointer(capsule, name_ptr))

    return ctypes.CFUNCTYPE(None, ctypes.c_void_p)(destroy)


_DESTROY = _make_destructor(_NAME)
_DESTROY_VERSIONED = _make_destructor(_NAME_VERSIONED)

_TYPE_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}


def _dtype_fields(dtype: np.dtype[Any]) -> tuple[int, int]:
    code = _TYPE_CODES.get(dtype.kind)
    if code is None or dtype.itemsize == 0:
        raise BufferError(f"dtype {dtype} has no DLPack equivalent (use a numeric or bool dtype)")
    return code, dtype.itemsize * 8


def wants_versioned(max_version: object) -> bool:
    """Whether a consumer's ``max_version`` asks for a versioned (1.x) capsule.

    Raises:
        BufferError: ``max_version`` is not None or a ``(major, minor)`` pair of ints.
    """
    if max_version is None:
        return False
    try:
        pair: Any = max_version
        major_in, minor_in = pair
        major, _minor = int(major_in), int(minor_in)
    except (TypeError, ValueError):
        raise BufferError(f"max_version must be a (major, minor) tuple, not {max_version!r}") \
            from None
    return major >= _VERSION[0]


def to_dlpack(base_ptr: int, byte_offset: int, shape: tuple[int, ...], dtype: np.dtype[Any], *,
              device_type: int, device_id: int, owner: object,
              max_version: tuple[int, int] | None = None, readonly: bool = False) -> Any:
    """Build a DLPack capsule over C-contiguous memory.

    Args:
        base_ptr: Start of the allocation (kept 256-byte aligned where the allocation is).
        byte_offset: Offset of the first element from ``base_ptr``.
        shape: Element shape.
        dtype: numpy dtype of the elements.
        device_type: ``KDL_CPU``, ``KDL_CUDA`` or ``KDL_CUDA_HOST``.
        device_id: The device ordinal (0 for the CPU).
        owner: Kept alive until the consumer calls the deleter.
        max_version: The consumer's ``max_version``; ``(1, 0)`` or newer gets the versioned
            capsule (version 1.0), None or an older one the unversioned capsule.
        readonly: The memory must not be written: sets the read-only flag, which only the
            versioned capsule can carry.

    Raises:
        BufferError: The dtype cannot be expressed in DLPack, ``max_version`` is malformed, or
            read-only memory was asked for by a consumer that cannot see the flag (the
            specification's answer, as numpy's: refuse rather than hand out writable memory).
    """
    code, bits = _dtype_fields(dtype)
    versioned = wants_versioned(max_version)
    if readonly and not versioned:
        raise BufferError("this memory is read-only, and only a DLPack 1.x consumer "
                          "(__dlpack__(max_version=(1, 0))) can be told so")
    ndim = len(shape)
    shape_arr = (ctypes.c_int64 * max(ndim, 1))(*shape)
    strides: list[int] = []
    step = 1
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    strides_arr = (ctypes.c_int64 * max(ndim, 1))(*reversed(strides))
    managed: _DLManagedTensor | _DLManagedTensorVersioned
    if versioned:
        managed = _DLManagedTensorVersioned()
        managed.version.major, managed.version.minor = _VERSION
        managed.flags = _FLAG_READ_ONLY if readonly else 0
    else:
        managed = _DLManagedTensor()
    t = managed.dl_tensor
    t.data = base_ptr or None
    t.device.device_type = device_type
    t.device.device_id = device_id
    t.ndim = ndim
    t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
    t.shape = ctypes.cast(shape_arr, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.cast(strides_arr, ctypes.POINTER(ctypes.c_int64))
    t.byte_offset = byte_offset
    managed.deleter = _DELETER
    address = ctypes.addressof(managed)
    managed.manager_ctx = address
    _live[address] = (managed, shape_arr, strides_arr, owner)
    name = _NAME_VERSIONED if versioned else _NAME
    destroy = _DESTROY_VERSIONED if versioned else _DESTROY
    try:
        return _capsule_new(address, ctypes.addressof(name), ctypes.cast(destroy, ctypes.c_void_p))
    except BaseException:
        _delete(address)
        raise


def export_count() -> int:
    """DLPack exports not yet released by their consumers (for leak tests)."""
    return len(_live)


# -- import ---------------------------------------------------------------------------------


class ForeignTensor:
    """What a consumer needs from a DLPack tensor, read once from its capsule.

    Attributes:
        device_type: DLPack device type (``KDL_CUDA``, ...).
        device_id: Device ordinal.
        ptr: Address of the first element (``data + byte_offset``).
        shape: Element shape.
        strides: Strides in elements, or None for C order.
        dtype: numpy dtype, or None when DLPack's type has no numpy equivalent.
        dl_dtype: ``(code, bits, lanes)`` as the capsule says it.
        readonly: The producer marked the memory read-only (versioned capsules only).
        version: ``(major, minor)`` of a versioned capsule, None for a legacy one.
    """

    __slots__ = ("device_id", "device_type", "dl_dtype", "dtype", "ptr", "readonly", "shape",
                 "strides", "version")

    def __init__(self, t: _DLTensor, *, readonly: bool,
                 version: tuple[int, int] | None) -> None:
        # Each ctypes field read builds a Python object: read every field once, and the shape
        # and strides with one slice each.
        dev, dt, ndim = t.device, t.dtype, int(t.ndim)
        self.device_type = int(dev.device_type)
        self.device_id = int(dev.device_id)
        self.ptr = int(t.data or 0) + int(t.byte_offset)
        self.shape = tuple(t.shape[:ndim]) if ndim else ()
        strides = t.strides
        self.strides = (tuple(strides[:ndim]) if ndim else ()) if strides else None
        key = (int(dt.code), int(dt.bits), int(dt.lanes))
        self.dl_dtype = key
        self.dtype = _numpy_dtype(key)
        self.readonly = readonly
        self.version = version


_DTYPES: dict[tuple[int, int, int], np.dtype[Any] | None] = {}


def _numpy_dtype(key: tuple[int, int, int]) -> np.dtype[Any] | None:
    """numpy's dtype for DLPack's ``(code, bits, lanes)``; None when numpy has none."""
    try:
        return _DTYPES[key]
    except KeyError:
        pass
    code, bits, lanes = key
    kind = DL_TYPE_CODES.get(code)
    found: np.dtype[Any] | None = None
    if kind is not None and lanes == 1 and bits % 8 == 0 and bits:
        try:
            found = np.dtype(bool) if kind == "b" else np.dtype(f"{kind}{bits // 8}")
        except TypeError:
            found = None  # e.g. a width numpy lacks (float8: DLPack has it, numpy does not)
        if found is not None and kind == "b" and bits != 8:
            found = None
    _DTYPES[key] = found
    return found


_capsule_get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", _pyapi))


def read_capsule(capsule: object) -> ForeignTensor:
    """Read a ``dltensor`` or ``dltensor_versioned`` capsule without consuming it.

    The capsule stays unconsumed, so its own destructor frees the tensor: keep the capsule alive
    for as long as the memory is used.

    Raises:
        BufferError: The object is not an unconsumed DLPack capsule, or its major version is
            not one this module can read.
    """
    try:
        name = _capsule_get_name(capsule)
    except (ValueError, TypeError, ctypes.ArgumentError):
        raise BufferError(f"__dlpack__ returned {type(capsule).__name__}, not a PyCapsule") \
            from None
    if name == b"dltensor":
        ptr = _object_get_pointer(capsule, b"dltensor")
        # DLManagedTensor starts with its DLTensor, so the capsule's pointer is the tensor's.
        return ForeignTensor(_DLTensor.from_address(ptr), readonly=False, version=None)
    if name == b"dltensor_versioned":
        ptr = _object_get_pointer(capsule, b"dltensor_versioned")
        managed = _DLManagedTensorVersioned.from_address(ptr)
        version = (int(managed.version.major), int(managed.version.minor))
        if version[0] != _VERSION[0]:
            raise BufferError(f"the DLPack tensor has version {version[0]}.{version[1]}; "
                              f"edgert reads {_VERSION[0]}.x")
        return ForeignTensor(managed.dl_tensor, readonly=bool(managed.flags & _FLAG_READ_ONLY),
                             version=version)
    shown = name.decode(errors="replace") if name else None
    raise BufferError(f"__dlpack__ returned a capsule named {shown!r}, not an unconsumed "
                      "DLPack tensor")


def request_capsule(obj: Any, stream: int | None) -> Any:
    """Ask ``obj`` for a capsule, offering DLPack 1.x first as the specification says.

    A producer that predates ``max_version`` raises TypeError for the keyword; it is asked again
    without it and returns a legacy capsule.

    Raises:
        BufferError: The producer refused the export.
        TypeError: The producer's ``__dlpack__`` does not take ``stream`` either.
    """
    try:
        return obj.__dlpack__(stream=stream, max_version=_VERSION)
    except TypeError:
        return obj.__dlpack__(stream=stream)
