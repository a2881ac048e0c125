"""The one bounded reader for every file edgert reads, and the one parser for numbers in them.

Models, ``.sig`` sidecars, key files, sysfs/procfs attributes, ``/etc/nvpmodel.conf`` and
``/etc/nv_tegra_release`` all come through :func:`read_file`:

* the file is opened non-blocking, so a FIFO (or a device that waits) cannot hang the caller;
* ``os.fstat`` on the open descriptor accepts regular files only: a FIFO, ``/dev/zero``, a socket
  or a directory is refused before a byte is read (a symlink is followed, then judged by what it
  points to);
* at most ``max_bytes`` are read; a bigger file is refused with its size in the message. sysfs
  reports 4096 and procfs 0 for files of any length, so the size is a hint and the cap is
  enforced on the bytes actually read;
* a file with a real size (``st_size`` not 0 or 4096) that grows while it is read is refused: it
  is being written, and what was read is not a complete model.

Numbers written by the kernel, nvpmodel and its configuration are parsed by :func:`parse_int`:
ASCII digits with an optional sign, nothing else (``int()`` alone also accepts Unicode digits
such as ``٤٥``, underscores and numbers of thousands of digits).

This module imports only the standard library: :mod:`edgert.realtime` and :mod:`edgert.power`
use it without numpy.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_KEY_BYTES",
    "MAX_MODEL_BYTES",
    "MAX_SYSFS_BYTES",
    "FileRefusedError",
    "check_path",
    "parse_index",
    "parse_int",
    "read_fd",
    "read_file",
]

#: Default cap on a model file (Engine.load(max_bytes=...) raises it).
MAX_MODEL_BYTES = 4 << 30
#: Cap on a sysfs/procfs attribute: the kernel hands out one page; 64 KiB leaves room for
#: procfs tables (``/proc/self/status``, ``/proc/cpuinfo`` on big machines use more; they pass
#: their own cap).
MAX_SYSFS_BYTES = 64 << 10
#: Cap on configuration files (nvpmodel.conf is ~30 KiB on AGX Orin) and release files.
MAX_CONFIG_BYTES = 1 << 20
#: Cap on ``.sig`` sidecars and key files: a tag is 64 hex characters, a key a few hundred bytes.
MAX_KEY_BYTES = 64 << 10

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 64 << 10
# sysfs reports one page, procfs 0, whatever the length of the content.
_SYSFS_SIZE = 4096
_PSEUDO_SIZES = (0, _SYSFS_SIZE)
# Kernel attributes are at most 64-bit; 20 digits and a sign cover every value they can hold.
_MAX_DIGITS = 20
_INT64 = 1 << 63
_INDEX = re.compile(r"[0-9]{1,9}")


class FileRefusedError(OSError):
    """The file was opened but refused: not a regular file, too big, or changing under us.

    Attributes:
        reason: ``not-regular``, ``too-large``, ``changed`` or ``nul-in-path``.
        kind: For ``not-regular``: ``fifo``, ``character device``, ``socket``...
    """

    def __init__(self, code: int, message: str, path: str, *, reason: str,
                 kind: str | None = None) -> None:
        super().__init__(code, message, path)
        self.reason = reason
        self.kind = kind


def check_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a ``str``; a NUL byte in it raises :class:`FileRefusedError` (``nul-in-path``).

    Raises:
        FileRefusedError: The path contains a NUL byte (the OS cannot represent it).
    """
    text = os.fsdecode(os.fspath(path))
    if "\0" in text:
        raise FileRefusedError(errno.EINVAL, "the path contains a NUL byte", repr(text),
                               reason="nul-in-path")
    return text


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def read_file(path: str | os.PathLike[str], *, max_bytes: int,
              read: Callable[[int, int], bytes] = os.read) -> bytes:
    """All bytes of the regular file ``path``, read once, at most ``max_bytes`` of them.

    Args:
        path: The file. Symlinks are followed.
        max_bytes: Refuse a file larger than this.
        read: ``os.read`` (injectable so tests can make reads fail).

    Raises:
        FileRefusedError: NUL in the path, not a regular file, larger than ``max_bytes``, or it
            grew while it was read.
        IsADirectoryError: It is a directory.
        OSError: The OS refused to open or read it (``FileNotFoundError``,
            ``PermissionError``, ``EAGAIN`` from a sensor driver...).
    """
    try:
        fd = os.open(path, _FLAGS)
    except ValueError:  # "embedded null byte": say so in edgert's terms
        check_path(path)
        raise
    try:
        return read_fd(fd, path, max_bytes=max_bytes, read=read)
    finally:
        os.close(fd)


def read_fd(fd: int, path: str | os.PathLike[str], *, max_bytes: int,
            read: Callable[[int, int], bytes] = os.read) -> bytes:
    """All bytes of the open regular file ``fd`` (named ``path`` in errors), as
    :func:`read_file` reads them; the caller opened it and closes it.

    Raises:
        FileRefusedError, IsADirectoryError, OSError: As :func:`read_file`.
    """
    size = _check_fd(fd, path, max_bytes)
    # One read of size + 1 returns a whole regular file and proves it ended; the + 1 also
    # catches a file that grows while we read it.
    want = size + 1 if size not in _PSEUDO_SIZES else _CHUNK
    chunk = read(fd, min(want, max_bytes + 1))
    if len(chunk) == size and size not in _PSEUDO_SIZES:
        # Asked for size + 1, got size: a regular file's read is short only at its end, so
        # this is all of it, and it did not grow (one syscall fewer on every small file).
        return chunk
    if size == _SYSFS_SIZE and len(chunk) < _SYSFS_SIZE:
        # A sysfs attribute: the kernel hands it out whole in the first read.
        return chunk
    chunks: list[bytes] = []
    total = 0
    while chunk:
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(os.fspath(path), f"more than {max_bytes:,}", max_bytes)
        if size not in _PSEUDO_SIZES and total > size:
            raise FileRefusedError(
                errno.EBUSY, f"the file grew beyond its {size:,} bytes while it was read "
                "(it is being written)", os.fspath(path), reason="changed")
        chunk = read(fd, min(_CHUNK, max_bytes + 1 - total))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_fd(fd: int, path: str | os.PathLike[str], max_bytes: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        if st.st_size > max_bytes:
            raise _too_large(os.fspath(path), f"{st.st_size:,}", max_bytes)
        return st.st_size
    where = os.fspath(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
    kind = _kind(st.st_mode)
    raise FileRefusedError(errno.EINVAL, f"it is a {kind}, not a regular file", where,
                           reason="not-regular", kind=kind)


def _too_large(where: str, size: str, max_bytes: int) -> FileRefusedError:
    return FileRefusedError(errno.EFBIG, f"it is {size} bytes, over the limit of "
                            f"{max_bytes:,} bytes", where, reason="too-large")


def parse_int(text: str | bytes | None, *, lo: int = -_INT64, hi: int = _INT64 - 1) -> int | None:
    """The integer in ``text`` as the kernel writes it, or ``None``.

    Accepts optional surrounding whitespace (and the trailing newline sysfs adds), an optional
    sign and at most 20 ASCII digits; the value must lie in ``[lo, hi]`` (default: a signed
    64-bit value). Everything else is ``None``: Unicode digits, ``--5``, ``1_000``, ``0x10``,
    400-digit numbers.
    """
    if text is None:
        return None
    if isinstance(text, str):
        if not text.isascii():
            return None
        text = text.encode("ascii")
    body = text.strip(b" \t\n\r\0")
    digits = body[1:] if body[:1] in (b"-", b"+") else body
    # bytes.isdigit() is ASCII-only and rejects signs, "_" and spaces that int() would take.
    if not (0 < len(digits) <= _MAX_DIGITS and digits.isdigit()):
        return None
    value = int(body)
    return value if lo <= value <= hi else None


def parse_index(text: str) -> int | None:
    """The N in a kernel name like ``thermal_zoneN`` or ``CORE_N``: ASCII digits only, or None."""
    return int(text) if _INDEX.fullmatch(text) else None
