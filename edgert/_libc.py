"""The few libc functions Python's ``os`` module lacks, loaded once through ctypes.

Shared by :mod:`edgert.realtime` (scheduling, mlockall, clock_nanosleep) and
:mod:`edgert.memory` (the OS-locked allocator), so the C library is loaded and declared once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

__all__ = ["libc"]


@cache
def libc() -> ctypes.CDLL:
    """The C library with errno captured (``use_errno=True``), argument types declared.

    Raises:
        OSError: No C library could be loaded (not Linux).
    """
    name = ctypes.util.find_library("c") or "libc.so.6"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.mlockall.argtypes = [ctypes.c_int]
    lib.mlockall.restype = ctypes.c_int
    lib.munlockall.argtypes = []
    lib.munlockall.restype = ctypes.c_int
    lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.madvise.restype = ctypes.c_int
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.malloc.restype = ctypes.c_void_p
    lib.free.argtypes = [ctypes.c_void_p]
    lib.free.restype = None
    lib.clock_nanosleep.restype = ctypes.c_int
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, ctypes.c_long]
    lib.mmap.restype = ctypes.c_void_p
    for name in ("munmap", "mlock", "munlock"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_int
    return lib
