"""Crash-safe files: atomic writes (temp file, fsync, rename, fsync of the directory) and an
advisory file lock that serializes builders across processes.

A reader never sees a partial file: the data goes to ``.NAME.tmp-PID-RANDOM`` in the same
directory, is flushed to the storage device, and only then renamed over ``NAME`` (rename is
atomic on POSIX file systems). A process killed mid-write leaves only the temp file, which no
reader looks at and :func:`remove_stale_temps` deletes later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import time
from pathlib import Path
from types import TracebackType

from edgert._fileio import read_fd
from edgert.errors import EdgeRTError, PermissionDeniedError, RequestTimeoutError

__all__ = ["NOFOLLOW_FLAGS", "FileLock", "atomic_write", "fsync_dir", "read_small",
           "remove_stale_temps", "unwritable"]

_TMP_MARK = ".tmp-"


#: What to do about an engine cache that cannot be written.
CACHE_HINT = ("robots often mount / read-only: put the cache on a writable partition, e.g. "
              "cache_dir='/var/lib/edgert/engines' or a data partition, or set EDGERT_CACHE_DIR")


def unwritable(directory: Path, err: OSError, hint: str = CACHE_HINT) -> EdgeRTError:
    """The error for a directory edgert must write to but cannot (read-only roots included);
    ``hint`` says where that kind of directory belongs."""
    why = "is on a read-only file system" if err.errno == errno.EROFS else \
        f"is not writable ({err.strerror or err})"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDeniedError(f"{directory} {why}", errno_value=err.errno, hint=hint)
    return EdgeRTError(f"cannot write to {directory}: {err.strerror or err}", hint=hint)


#: Opening flags for files the cache reads but never follows a symlink to (memos, plans).
NOFOLLOW_FLAGS = (os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY |
                  getattr(os, "O_NOFOLLOW", 0))


def read_small(path: str | os.PathLike[str], max_bytes: int = 1 << 20) -> bytes:
    """A small regular file (a memo) whole, as :func:`edgert._fileio.read_fd` reads it (one
    ``fstat`` and one read), without following a symlink in the last component: nothing but a
    regular file is read (opening a device can have effects).

    Raises:
        OSError: It cannot be opened or read, is not a regular file, or holds more than
            ``max_bytes``.
    """
    fd = os.open(path, NOFOLLOW_FLAGS)
    try:
        return read_fd(fd, path, max_bytes=max_bytes)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename) to the storage device."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | memoryview, *, mode: int = 0o644,
                 durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    ``durable=False`` skips the two fsyncs, for files whose loss after a power cut costs only
    work (memos): readers still never see a partial file.

    Raises:
        PermissionDeniedError: The directory is read-only or not writable.
        EdgeRTError: Another OS error (disk full, ...); nothing was replaced.
    """
    directory = path.parent
    tmp = directory / f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as err:
        raise unwritable(directory, err) from err
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if err.errno == errno.EISDIR:
            # Something that is not a file is in the way (found by a new user's trial: the
            # directory was called read-only).
            raise EdgeRTError(f"cannot write {path}: something that is not a file is there "
                              f"({err.strerror or err})",
                              hint=f"move {path} away (edgert writes a file there)") from err
        raise unwritable(directory, err) from err
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def remove_stale_temps(directory: Path, *, older_than_s: float = 3600.0) -> int:
    """Delete temp files of writes that never finished (a killed process); returns the count.

    Only files older than ``older_than_s`` go, so a write in progress elsewhere is left alone.
    """
    count = 0
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if _TMP_MARK in entry.name and entry.name.startswith("."):
            try:
                if now - entry.stat().st_mtime > older_than_s:
                    os.unlink(entry.path)
                    count += 1
            except OSError:
                pass
    return count


class FileLock:
    """An exclusive ``flock`` on a file, held between ``acquire`` and ``release``.

    The kernel drops the lock when the process dies, so a killed builder never blocks the next.

    Args:
        path: The lock file (created if missing).
        timeout_s: Give up after this long (None: wait as long as it takes).
        holder: What the process holding it is doing (for the timeout's message).
        hint: Where the directory belongs if the lock file cannot be made (see
            :func:`unwritable`).
    """

    def __init__(self, path: Path, *, timeout_s: float | None = None,
                 holder: str = "is building this engine", hint: str = CACHE_HINT) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.holder = holder
        self.hint = hint
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            PermissionDeniedError: The lock file cannot be created (read-only directory).
            RequestTimeoutError: Another process held it for longer than ``timeout_s``.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise unwritable(self.path.parent, err, self.hint) from err
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise RequestTimeoutError(
                            f"{self.path} stayed locked for {self.timeout_s} s (another process "
                            f"{self.holder})",
                            hint="wait for it, or raise lock_timeout_s") from None
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
