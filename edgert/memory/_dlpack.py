"""DLPack export with ctypes: ``DLManagedTensor`` (and the 1.x versioned form) in a PyCapsule.

Follows the DLPack C header (dlpack.h, ABI 1.x) and the Python protocol of the array API
standard: the capsule is named ``"dltensor"`` (``"dltensor_versioned"`` when the consumer asked
for ``max_version >= (1, 0)``); a consumer renames it to ``"used_dltensor[_versioned]"`` and calls
the tensor's ``deleter`` when done; a capsule that nobody consumed calls the deleter from its own
destructor. Until the deleter runs, the export holds a reference to the memory's owner, so the
memory outlives the producer's ``close()``.
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
    "dltensor_of",
    "export_count",
    "to_dlpack",
]

KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13
# DLPack data type codes (dlpack.h) with a numpy kind: int, uint, float, bool.
DL_TYPE_CODES = {0: "i", 1: "u", 2: "f", 6: "b"}

_FLAG_READ_ONLY = 1
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


def dltensor_of(capsule: object) -> _DLTensor:
    """The ``DLTensor`` inside an unversioned ``dltensor`` capsule.

    The struct lives in the capsule's memory: keep the capsule alive while using it (an
    unconsumed capsule frees the tensor when it is collected).

    Raises:
        ValueError: ``capsule`` is not a ``dltensor`` capsule (CPython sets the error).
    """
    ptr = _object_get_pointer(capsule, b"dltensor")
    # DLManagedTensor starts with its DLTensor, so the capsule's pointer is the tensor's address.
    return _DLTensor.from_address(ptr)


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
            capsule.
        readonly: Set the read-only flag (versioned capsules only).

    Raises:
        BufferError: The dtype cannot be expressed in DLPack.
    """
    code, bits = _dtype_fields(dtype)
    ndim = len(shape)
    shape_arr = (ctypes.c_int64 * max(ndim, 1))(*shape)
    strides: list[int] = []
    step = 1
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    strides_arr = (ctypes.c_int64 * max(ndim, 1))(*reversed(strides))
    versioned = max_version is not None and max_version[0] >= 1
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
