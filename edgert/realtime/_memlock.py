"""Locking the process's memory (mlockall); prefaulting is in :mod:`edgert.realtime._prefault`.

``mlockall`` is process-wide, so several holders (a policy per thread, :func:`lock_memory`
blocks) share one reference count: the first holder locks, the last one unlocks. Memory that was
already locked before edgert's first lock (VmLck > 0: another library, the application, or an
edgert pool's OS-locked blocks) stays locked: the mappings locked then are read from
``/proc/self/smaps`` (``lo`` in ``VmFlags``, proc(5):
https://man7.org/linux/man-pages/man5/proc_pid_smaps.5.html) and locked again right after
``munlockall``. Where smaps cannot be read, ``MCL_FUTURE`` is dropped and every current mapping
stays locked (found by a new user's trial: one 4 KiB pool block kept 450 MB locked for good).
"""

from __future__ import annotations

import ctypes
import errno
import resource
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from edgert import _unmaps
from edgert._libc import libc
from edgert._owner import Owner
from edgert.errors import PermissionDeniedError, RealtimeError
from edgert.platform import read_text
from edgert.realtime._remedy import diagnose_mlock, errno_label
from edgert.realtime._sched import RaisedSoftLimit
from edgert.realtime._sysinfo import format_limit, map_span, mapped_spans, proc_status_kib

__all__ = [
    "MCL_CURRENT",
    "MCL_FUTURE",
    "MCL_ONFAULT",
    "LockHold",
    "MemoryLock",
    "lock_memory",
]

# asm-generic values, used by x86_64 and arm64 (the architectures edgert targets).
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
_MLOCK_ONFAULT = 1  # mlock2(2)


@dataclass
class _LockState:
    holders: int = 0
    onfault_holders: int = 0
    flags: int = 0
    prelocked_kib: int = 0
    prelocked: tuple[Locked, ...] | None = None
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
            _STATE.prelocked = locked_mappings() if _STATE.prelocked_kib else ()
            _unmaps.watch(True)  # edgert's unmaps from now on are never relocked
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


class Locked(NamedTuple):
    """One mapping the kernel keeps locked: its range, and whether only faulted pages are
    locked (``lf``: mlock2 MLOCK_ONFAULT)."""

    start: int
    end: int
    onfault: bool


def locked_mappings() -> tuple[Locked, ...] | None:
    """Every mapping of this process the kernel keeps locked (``lo`` in ``/proc/self/smaps``
    VmFlags, proc(5)), or None where smaps cannot be read. A process with many mappings (CUDA,
    TensorRT) has megabytes of smaps: read up to 64 MiB (review: 1 MiB read as unreadable)."""
    text = read_text(Path("/"), "/proc/self/smaps", max_bytes=64 << 20)
    if text is None:
        return None
    found = []
    head: tuple[int, int] | None = None
    for line in text.splitlines():
        if line.startswith("VmFlags:"):
            flags = line.split()[1:]
            if head is not None and "lo" in flags:
                found.append(Locked(*head, "lf" in flags))
            head = None
        elif ":" not in line.partition(" ")[0]:  # a mapping's header, not a "Key: value" line
            head = map_span(line) or head
    return tuple(found)


def _still_there(ranges: tuple[Locked, ...]) -> tuple[Locked, ...]:
    """The ranges to lock again: not unmapped by edgert meanwhile (a new mapping may reuse the
    address: found by review) and still mapped. Read before munlockall: the kernel merges
    neighbouring mappings whose flags become equal, so ranges are checked for being covered,
    not for being one mapping."""
    unmapped = _unmaps.since()
    spans = mapped_spans()
    kept = []
    for r in ranges:
        if any(a < r.end and r.start < b for a, b in unmapped):
            continue
        reach = r.start
        for a, b in spans or ():
            if a <= reach < b:
                reach = b
        if spans is None or reach >= r.end:
            kept.append(r)
    return tuple(kept)


def _relock(ranges: tuple[Locked, ...]) -> str:
    """Lock again, after munlockall, what was locked before edgert locked memory, on fault
    where it was (plain mlock would fault in the whole range: +1 GiB resident in a review's
    test). What could not be relocked is said, not raised."""
    lib = libc()
    mlock2 = getattr(lib, "mlock2", None)
    kib = 0
    failed = []
    for r in ranges:
        address, length = ctypes.c_void_p(r.start), ctypes.c_size_t(r.end - r.start)
        if r.onfault and mlock2 is not None:
            ok = mlock2(address, length, ctypes.c_int(_MLOCK_ONFAULT)) == 0
        else:
            ok = lib.mlock(address, length) == 0
        code = 0 if ok else ctypes.get_errno()
        if ok:
            kib += (r.end - r.start) // 1024
        elif code != errno.ENOMEM:
            failed.append(f"{r.start:#x}-{r.end:#x}: {errno_label(code)}")
    detail = f"; {kib} KiB locked before edgert locked again"
    if failed:
        detail += f" (could not relock {len(failed)}: {'; '.join(failed[:3])})"
    return detail


def _unlock() -> str:
    """Undo edgert's lock once nobody holds it (state lock held)."""
    prelocked = _STATE.prelocked if _STATE.prelocked_kib else ()
    if prelocked is None:
        # munlockall would also undo locks taken before edgert (a pool's mlock'ed blocks).
        # mlockall without MCL_FUTURE resets the future flag and keeps every current lock, so
        # later mappings (thread stacks) are no longer locked and charged to RLIMIT_MEMLOCK.
        keep = MCL_CURRENT | (_STATE.flags & MCL_ONFAULT)
        code = _mlockall(keep)
        if code:
            raise RealtimeError(f"mlockall({_flag_names(keep)}) to drop MCL_FUTURE failed: "
                                f"{errno_label(code)}", errno_value=code)
        _STATE.flags = keep
        return (f"left locked: MCL_FUTURE dropped, but current mappings stay locked because "
                f"{_STATE.prelocked_kib} KiB were locked before edgert locked memory, "
                "/proc/self/smaps does not say which, and munlockall would undo those locks "
                "too")
    relocked = ""
    plan = _still_there(prelocked) if prelocked else ()
    try:
        failed = libc().munlockall() != 0
        code = ctypes.get_errno() if failed else 0
    finally:
        # Even when an interrupt lands right after munlockall returns: what was locked before
        # edgert is locked again first (found by a trial: it stayed unlocked).
        if plan:
            relocked = _relock(plan)
        _unmaps.watch(False)
    if failed:
        raise RealtimeError(f"munlockall failed: {errno_label(code)}", errno_value=code)
    _STATE.flags = 0
    detail = "munlockall" + relocked
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
    for name in ("holders", "onfault_holders", "flags", "prelocked_kib", "prelocked",
                 "raised_memlock"):
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
