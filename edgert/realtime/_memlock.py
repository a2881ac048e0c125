"""Locking the process's memory (mlockall) and prefaulting stack and heap.

``mlockall`` is process-wide, so several holders (a policy per thread, :func:`lock_memory`
blocks) share one reference count: the first holder locks, the last one unlocks. Memory that was
already locked before edgert's first lock (VmLck > 0: another library or the application called
mlock/mlockall) is never unlocked by edgert, because munlockall would undo their locks too.
"""

from __future__ import annotations

import ctypes
import errno
import resource
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from edgert._libc import libc
from edgert._owner import Owner
from edgert.errors import NotSupportedError, PermissionDeniedError, RealtimeError
from edgert.platform import read_text
from edgert.realtime._remedy import diagnose_mlock, errno_label
from edgert.realtime._sched import RaisedSoftLimit
from edgert.realtime._sysinfo import format_limit, proc_status_kib

__all__ = [
    "MCL_CURRENT",
    "MCL_FUTURE",
    "MCL_ONFAULT",
    "HeapPrefault",
    "LockHold",
    "MemoryLock",
    "lock_memory",
    "prefault_heap",
    "prefault_stack",
]

# asm-generic values, used by x86_64 and arm64 (the architectures edgert targets).
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_M_TRIM_THRESHOLD = -1
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's DEFAULT_TRIM_THRESHOLD
_PAGE = resource.getpagesize()


@dataclass
class _LockState:
    holders: int = 0
    onfault_holders: int = 0
    flags: int = 0
    prelocked_kib: int = 0
    raised_memlock: tuple[int, int] | None = None


_STATE = _LockState()
_STATE_LOCK = threading.Lock()


def _mlockall(flags: int) -> int:
    """Return 0 or the errno of a failed mlockall."""
    if libc().mlockall(flags) == 0:
        return 0
    return ctypes.get_errno()


def _flag_names(flags: int) -> str:
    names = [n for n, v in (("MCL_CURRENT", MCL_CURRENT), ("MCL_FUTURE", MCL_FUTURE),
                            ("MCL_ONFAULT", MCL_ONFAULT)) if flags & v]
    return "|".join(names)


class LockHold:
    """One reference on the process-wide memory lock: :meth:`acquire` it, :meth:`release` it.

    ``held`` flips under the state lock together with the holder count, so the undo can be
    registered *before* locking (see :meth:`acquire`) and is a no-op for a hold that never
    locked; releasing twice is harmless too.
    """

    __slots__ = ("held", "onfault")

    def __init__(self, *, onfault: bool) -> None:
        self.onfault = onfault
        self.held = False

    def acquire(self) -> str:
        """Take the reference; return what was done.

        Exception-safe: if anything interrupts it after ``mlockall`` may have run (a
        KeyboardInterrupt delivered as the ctypes call returns), the lock and the soft
        RLIMIT_MEMLOCK are put back as they were before it re-raises, and ``held`` stays False.

        Raises:
            PermissionDeniedError: EPERM (RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK).
            RealtimeError: ENOMEM (RLIMIT_MEMLOCK smaller than the address space) or another
                errno.
        """
        with _STATE_LOCK:
            if self.held:
                return "already held"
            before = replace(_STATE)
            try:
                return self._acquire_locked()
            except BaseException:
                if not self.held:
                    _roll_back(before)
                raise

    def _acquire_locked(self) -> str:
        onfault_holders = _STATE.onfault_holders + (1 if self.onfault else 0)
        # Full population wins over on-fault locking once any holder asks for it.
        want = MCL_CURRENT | MCL_FUTURE
        if onfault_holders == _STATE.holders + 1:
            want |= MCL_ONFAULT
        first = _STATE.holders == 0
        if first:
            _STATE.prelocked_kib = proc_status_kib("VmLck") or 0
        if first or want != _STATE.flags:
            # Intent first: from here on the roll-back in acquire() assumes mlockall may have run.
            prev_flags, prev_raised = _STATE.flags, _STATE.raised_memlock
            _STATE.flags = want
            code = _mlockall(want)
            retried = ""
            if code in (errno.ENOMEM, errno.EPERM):
                with RaisedSoftLimit(resource.RLIMIT_MEMLOCK, resource.RLIM_INFINITY) as lim:
                    if lim.raised is not None:
                        if _STATE.raised_memlock is None:
                            _STATE.raised_memlock = lim.raised  # before keep(): roll-back sees it
                        code = _mlockall(want)
                        if code == 0:
                            lim.keep()
                        else:
                            retried = (" (also after raising the soft limit to "
                                       f"{format_limit(lim.raised[1], unit='bytes')})")
            if code:
                # Refused: the kernel changed nothing, and RaisedSoftLimit put the limit back.
                _STATE.flags, _STATE.raised_memlock = prev_flags, prev_raised
                diag = diagnose_mlock(code)
                message = (f"mlockall({_flag_names(want)}) failed: {errno_label(code)}: "
                           f"{diag.reason}{retried}")
                if diag.permission:
                    raise PermissionDeniedError(message, hint=diag.hint, errno_value=code)
                raise RealtimeError(message, hint=diag.hint, errno_value=code)
        _STATE.holders += 1
        _STATE.onfault_holders = onfault_holders
        self.held = True
        detail = f"mlockall({_flag_names(want)}); VmLck {proc_status_kib('VmLck')} KiB"
        if _STATE.raised_memlock is not None:
            old, new = _STATE.raised_memlock
            detail += (f"; soft RLIMIT_MEMLOCK raised from {format_limit(old, unit='bytes')} to "
                       f"{format_limit(new, unit='bytes')}")
        return detail

    def release(self) -> str:
        """Drop the reference; the last one unlocks (unless memory was locked before edgert).

        Raises:
            RealtimeError: munlockall (or mlockall to drop MCL_FUTURE) failed.
        """
        with _STATE_LOCK:
            if not self.held:
                return "not held"
            self.held = False
            _STATE.holders -= 1
            _STATE.onfault_holders -= 1 if self.onfault else 0
            if _STATE.holders:
                return f"still locked for {_STATE.holders} other holder(s)"
            return _unlock()


def _unlock() -> str:
    """Undo edgert's lock once nobody holds it (state lock held)."""
    if _STATE.prelocked_kib:
        # munlockall would also undo locks taken before edgert (a pool's mlock'ed blocks).
        # mlockall without MCL_FUTURE resets the future flag and keeps every current lock, so
        # later mappings (thread stacks) are no longer locked and charged to RLIMIT_MEMLOCK.
        keep = MCL_CURRENT | (_STATE.flags & MCL_ONFAULT)
        code = _mlockall(keep)
        if code:
            raise RealtimeError(f"mlockall({_flag_names(keep)}) to drop MCL_FUTURE failed: "
                                f"{errno_label(code)}", errno_value=code)
        _STATE.flags = keep
        return (f"MCL_FUTURE dropped; current mappings stay locked because "
                f"{_STATE.prelocked_kib} KiB were locked before edgert locked memory and "
                "munlockall would undo those locks too")
    if libc().munlockall() != 0:
        code = ctypes.get_errno()
        raise RealtimeError(f"munlockall failed: {errno_label(code)}", errno_value=code)
    _STATE.flags = 0
    detail = "munlockall"
    if _STATE.raised_memlock is not None:
        old, _new = _STATE.raised_memlock
        _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (old, hard))
        _STATE.raised_memlock = None
        detail += f"; soft RLIMIT_MEMLOCK back to {format_limit(old, unit='bytes')}"
    return detail


def _roll_back(before: _LockState) -> None:
    """Put the lock back as it was before an acquire() that did not complete (state lock held)."""
    if _STATE.flags == before.flags and _STATE.raised_memlock == before.raised_memlock:
        pass  # mlockall was never reached, or refused (nothing changed)
    elif before.holders == 0:
        _unlock()  # also puts a soft RLIMIT_MEMLOCK raised by this acquire back
    else:
        _mlockall(before.flags)
        if before.raised_memlock is None and _STATE.raised_memlock is not None:
            _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (_STATE.raised_memlock[0], hard))
    for name in ("holders", "onfault_holders", "flags", "prelocked_kib", "raised_memlock"):
        setattr(_STATE, name, getattr(before, name))


class MemoryLock(Owner):
    """A held reference on the process's memory lock; :meth:`close` releases it.

    Attributes:
        detail: What locking did (flags, VmLck, any rlimit change).
        onfault: Whether pages are locked only as they are first touched (MCL_ONFAULT).
    """

    def __init__(self, *, onfault: bool = False) -> None:
        self.onfault = onfault
        self.release_detail: str | None = None
        self._hold = hold = LockHold(onfault=onfault)

        def release() -> None:
            hold.release()

        try:
            self.detail = hold.acquire()
            self._own(release, "edgert.MemoryLock")
        except BaseException:
            # Never leave a lock that no object owns (a KeyboardInterrupt after acquire()).
            if self._finalizer is not None:
                self._finalizer.detach()
            hold.release()
            raise

    def close(self) -> None:
        """Release this reference; the last holder calls munlockall. Idempotent.

        Raises:
            RealtimeError: munlockall failed.
        """
        if not self.closed:
            self._owner_closed = True
            fin = self._finalizer
            if fin is not None:
                fin.detach()
            self.release_detail = self._hold.release()

    def __repr__(self) -> str:
        state = "released" if self.closed else "held"
        return f"MemoryLock({state}, {self.detail!r})"


def lock_memory(*, onfault: bool = False) -> MemoryLock:
    """Lock all current and future memory of the process (``mlockall``) until closed.

    Use it as a context manager. Page faults on locked memory cannot go to disk, and with
    MCL_FUTURE every later mapping (thread stacks, numpy arrays, CUDA host buffers) is populated
    at creation. ``onfault=True`` adds MCL_ONFAULT: pages are locked when first touched instead,
    which keeps resident memory small but leaves first-touch faults in the loop (prefault them).

    Example:
        >>> with lock_memory() as lock:   # doctest: +SKIP
        ...     run_control_loop()

    Raises:
        PermissionDeniedError: EPERM: RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK.
        RealtimeError: ENOMEM: RLIMIT_MEMLOCK is smaller than the process's address space.
    """
    return MemoryLock(onfault=onfault)


# -- prefaulting ---------------------------------------------------------------------------------


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
    # /proc/self/maps of a big process runs to megabytes; the cap only stops a runaway read.
    text = read_text(Path("/"), "/proc/self/maps", max_bytes=64 << 20)
    for line in (text or "").splitlines():
        span = line.split(" ", 1)[0]
        start_s, _, end_s = span.partition("-")
        start, end = int(start_s, 16), int(end_s, 16)
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
