"""Prefaulting the stack and the C heap, so a real-time loop takes no page faults on them.

The stack is populated with ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14+); the heap by
allocating and touching chunks that glibc keeps (``M_TRIM_THRESHOLD`` raised while any holder
needs them). Split from :mod:`edgert.realtime._memlock`, which locks the memory.
"""

from __future__ import annotations

import ctypes
import errno
import resource
import threading

from edgert._libc import libc
from edgert.errors import NotSupportedError, RealtimeError
from edgert.realtime._remedy import errno_label
from edgert.realtime._sysinfo import mapped_spans

__all__ = ["HeapPrefault", "prefault_heap", "prefault_stack"]

_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_M_TRIM_THRESHOLD = -1
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's DEFAULT_TRIM_THRESHOLD
_PAGE = resource.getpagesize()


def _thread_stack_bounds() -> tuple[int, int]:
    lib = libc()
    attr = ctypes.create_string_buffer(128)  # >= sizeof(pthread_attr_t) on x86_64 and arm64
    lib.pthread_self.restype = ctypes.c_ulong
    lib.pthread_getattr_np.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    code = lib.pthread_getattr_np(lib.pthread_self(), attr)
    if code:
        raise RealtimeError(f"pthread_getattr_np failed: {errno_label(code)}")
    try:
        addr = ctypes.c_void_p()
        size = ctypes.c_size_t()
        code = lib.pthread_attr_getstack(attr, ctypes.byref(addr), ctypes.byref(size))
        if code:
            raise RealtimeError(f"pthread_attr_getstack failed: {errno_label(code)}")
    finally:
        lib.pthread_attr_destroy(attr)
    lo = addr.value or 0
    return lo, lo + size.value


def _mapping_start(address: int) -> int | None:
    for start, end in mapped_spans() or ():
        if start <= address < end:
            return start
    return None


def prefault_stack(nbytes: int) -> str:
    """Populate the top ``nbytes`` of the calling thread's stack without changing its contents.

    Uses ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14+), which faults pages in writable without
    writing to them, so it is safe on a live stack. A thread created after mlockall(MCL_FUTURE)
    already has its whole stack populated; this matters for MCL_ONFAULT and for the main thread,
    whose stack mapping only covers what it has used so far (only that part can be prefaulted).

    Raises:
        NotSupportedError: The kernel lacks MADV_POPULATE_WRITE.
        RealtimeError: The stack bounds could not be read, or madvise failed otherwise.
    """
    lo, hi = _thread_stack_bounds()
    mapped = _mapping_start(hi - 1)
    start = max(hi - nbytes, lo, mapped if mapped is not None else lo)
    start = (start + _PAGE - 1) // _PAGE * _PAGE
    length = hi - start
    if length <= 0:
        return "nothing to prefault"
    if libc().madvise(start, length, _MADV_POPULATE_WRITE) != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:
            raise NotSupportedError(
                "madvise(MADV_POPULATE_WRITE) is not supported by this kernel (needs Linux 5.14)",
                hint="leave prefault_stack_bytes at 0 and lock memory without onfault instead",
            )
        raise RealtimeError(f"madvise(MADV_POPULATE_WRITE) on the stack failed: "
                            f"{errno_label(code)}")
    return f"populated the top {length // 1024} KiB of this thread's stack"


class HeapPrefault:
    """Prefaulted C heap kept by glibc until :meth:`release` (process-wide reference count)."""

    _holders = 0
    _lock = threading.Lock()

    def __init__(self, nbytes: int) -> None:
        lib = libc()
        if not hasattr(lib, "mallopt"):
            raise NotSupportedError("the C library has no mallopt (not glibc)",
                                    hint="leave prefault_heap_bytes at 0")
        with HeapPrefault._lock:
            # Keep freed memory at the top of the heap instead of trimming it back to the OS.
            if lib.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(nbytes * 2, 2**31 - 1))) != 1:
                raise RealtimeError("mallopt(M_TRIM_THRESHOLD) failed")
            HeapPrefault._holders += 1
        chunk = 64 * 1024  # below glibc's mmap threshold, so chunks come from the heap
        blocks: list[int] = []
        try:
            for _ in range(max(1, nbytes // chunk)):
                ptr = lib.malloc(chunk)
                if not ptr:
                    break
                ctypes.memset(ptr, 0, chunk)
                blocks.append(ptr)
        finally:
            for ptr in blocks:
                lib.free(ptr)
        self.nbytes = len(blocks) * chunk
        self._released = False

    def release(self) -> str:
        """Let glibc trim the heap again once nobody holds a prefault."""
        if self._released:
            return "already released"
        self._released = True
        with HeapPrefault._lock:
            HeapPrefault._holders -= 1
            if HeapPrefault._holders == 0:
                libc().mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_DEFAULT_TRIM_THRESHOLD))
                return "M_TRIM_THRESHOLD back to glibc's default (128 KiB)"
        return "heap kept for other holders"


def prefault_heap(nbytes: int) -> HeapPrefault:
    """Touch ``nbytes`` of C heap and keep it mapped, so later mallocs do not page-fault.

    Raises:
        NotSupportedError: The C library is not glibc.
        RealtimeError: mallopt failed.
    """
    return HeapPrefault(nbytes)
