"""Page-locked host memory without CUDA: anonymous mmap plus mlock, through libc.

On a machine without a GPU, real-time code still must not page-fault on its buffers, so
:class:`~edgert.memory.HostBuffer` falls back to memory the kernel keeps resident. ``mlock`` is
counted against ``RLIMIT_MEMLOCK`` unless the process has ``CAP_IPC_LOCK``; when it is refused the
error names both and says how to raise the limit.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
from pathlib import Path

from edgert import _unmaps
from edgert._libc import libc
from edgert.errors import OutOfMemoryError, PermissionDeniedError

__all__ = [
    "PAGE_SIZE",
    "lock_pages",
    "locked_bytes",
    "map_locked",
    "memlock_limit",
    "unlock_pages",
    "unmap_locked",
]

PAGE_SIZE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value

_REMEDY = ("raise the locked-memory limit for this process: `ulimit -l unlimited` in the launching "
           "shell, `LimitMEMLOCK=infinity` in its systemd unit, a `memlock` line in "
           "/etc/security/limits.conf, or `--ulimit memlock=-1` for docker; or grant "
           "CAP_IPC_LOCK (e.g. `setcap cap_ipc_lock+ep` on the interpreter)")


def page_round(nbytes: int) -> int:
    """``nbytes`` rounded up to whole pages (at least one page)."""
    return max(PAGE_SIZE, -(-nbytes // PAGE_SIZE) * PAGE_SIZE)


def memlock_limit() -> tuple[int | None, int | None]:
    """``RLIMIT_MEMLOCK`` as ``(soft, hard)`` bytes; None means unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

    def conv(v: int) -> int | None:
        return None if v == resource.RLIM_INFINITY else int(v)

    return conv(soft), conv(hard)


def locked_bytes(status_path: Path = Path("/proc/self/status")) -> int | None:
    """Bytes this process has locked (``VmLck``), or None where procfs does not say."""
    try:
        text = status_path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1]) * 1024
    return None


def _fmt_limit(v: int | None) -> str:
    return "unlimited" if v is None else f"{v:,} bytes"


def _lock_error(what: str, nbytes: int, err: int) -> PermissionDeniedError:
    soft, hard = memlock_limit()
    held = locked_bytes()
    held_text = "unknown" if held is None else f"{held:,} bytes"
    return PermissionDeniedError(
        f"{what} of {nbytes:,} bytes failed: {errno.errorcode.get(err, str(err))} "
        f"({os.strerror(err)}); RLIMIT_MEMLOCK is {_fmt_limit(soft)} (soft) / "
        f"{_fmt_limit(hard)} (hard), this process already locks {held_text}, and it lacks "
        f"CAP_IPC_LOCK",
        hint=_REMEDY,
        errno_value=err,
    )


def lock_pages(ptr: int, nbytes: int) -> tuple[int, int]:
    """``mlock`` the whole pages covering ``[ptr, ptr + nbytes)``; returns the locked range.

    Raises:
        PermissionDeniedError: The kernel refused (RLIMIT_MEMLOCK exceeded, no CAP_IPC_LOCK).
    """
    start = ptr - ptr % PAGE_SIZE
    length = page_round(ptr + max(nbytes, 1) - start)
    if libc().mlock(start, length) != 0:
        raise _lock_error("mlock", length, ctypes.get_errno())
    return start, length


def unlock_pages(start: int, length: int) -> None:
    """``munlock`` a range returned by :func:`lock_pages` (errors are ignored: nothing to do)."""
    libc().munlock(start, length)


def map_locked(nbytes: int) -> tuple[int, int]:
    """Map ``nbytes`` of anonymous, page-aligned memory and lock it; returns ``(ptr, length)``.

    Raises:
        OutOfMemoryError: The kernel has no memory for the mapping (ENOMEM from mmap).
        PermissionDeniedError: The pages could not be locked (RLIMIT_MEMLOCK, CAP_IPC_LOCK).
    """
    length = page_round(nbytes)
    ptr = libc().mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE,
                mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if ptr is None or ptr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OutOfMemoryError(
            f"mmap of {length:,} bytes failed: {errno.errorcode.get(err, str(err))} "
            f"({os.strerror(err)})",
            hint="the machine is out of memory or address space: allocate less",
        )
    if libc().mlock(ptr, length) != 0:
        err = ctypes.get_errno()
        libc().munmap(ptr, length)
        raise _lock_error("mlock", length, err)
    return int(ptr), length


def unmap_locked(ptr: int, length: int) -> None:
    """Unlock and unmap a range from :func:`map_locked` (errors ignored: nothing to do)."""
    _unmaps.record(ptr, ptr + length)  # the memory lock must not relock a reused address
    libc().munlock(ptr, length)
    libc().munmap(ptr, length)
