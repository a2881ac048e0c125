"""Small, fast, never-raising readers for sysfs attributes.

Sensor attributes fail in many ways on Jetson: powered-down cv zones return EAGAIN, BPMP failures
EINVAL, some drivers ENODATA, and a path can be missing, a directory, unreadable, empty or garbage.
A reading is then ``None``; the caller decides what that means. Files are opened non-blocking
with ``os.open``/``os.read``: that is several times cheaper than ``open()``, surfaces EAGAIN as an
errno (a text-mode ``read()`` turns it into ``TypeError``), and cannot hang on a FIFO.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = [
    "SENTINEL_MILLI_C",
    "list_dir",
    "milli_c",
    "probe",
    "read_bytes",
    "read_int",
    "read_str",
    "under",
]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
# sysfs hands out at most one page per attribute.
_CHUNK = 4096
# jtop and tegrastats print -256 °C for an offline sensor; anything at or below it is no reading.
SENTINEL_MILLI_C = -256_000
# Indirection so that edgert.testing.jetson.raising_reads can make chosen reads raise.
_read = os.read


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, as on a real machine) re-rooted under ``root``."""
    return root / path.lstrip("/")


def read_bytes(path: str) -> bytes | None:
    """The raw content of ``path``, or ``None`` when it cannot be read for any reason."""
    try:
        fd = os.open(path, _FLAGS)
    except (OSError, ValueError):
        return None
    try:
        return _read(fd, _CHUNK)
    except (OSError, TypeError, ValueError):
        return None
    finally:
        os.close(fd)


def read_str(path: str | Path) -> str | None:
    """The stripped text of ``path``; ``None`` if unreadable, empty or not text.

    NUL bytes are dropped: device-tree strings end with one.
    """
    raw = read_bytes(os.fspath(path))
    if not raw:
        return None
    try:
        text = raw.replace(b"\0", b"").decode().strip()
    except UnicodeDecodeError:
        return None
    return text or None


def read_int(path: str | Path) -> int | None:
    """The integer in ``path``; ``None`` if unreadable, empty or not an integer."""
    raw = read_bytes(os.fspath(path))
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def milli_c(path: str) -> float | None:
    """A millidegree-Celsius attribute in °C; the -256 °C sentinel and below read ``None``."""
    raw = read_bytes(path)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    if value <= SENTINEL_MILLI_C:
        return None
    return value / 1000.0


def probe(path: str | Path) -> tuple[str | None, str | None]:
    """Read ``path`` and say why it failed: ``(text, None)`` or ``(None, reason)``.

    The reason is an errno name (``EAGAIN``, ``ENOENT``...) or ``empty``/``not-text``. Slower than
    :func:`read_str`; meant for snapshots and diagnostics, not the hot read path.
    """
    try:
        fd = os.open(os.fspath(path), _FLAGS)
    except OSError as err:
        return None, _errname(err)
    try:
        raw = _read(fd, _CHUNK)
    except OSError as err:
        return None, _errname(err)
    except (TypeError, ValueError) as err:
        return None, type(err).__name__
    finally:
        os.close(fd)
    if not raw.strip(b"\0 \n\t"):
        return None, "empty"
    try:
        return raw.replace(b"\0", b"").decode().strip(), None
    except UnicodeDecodeError:
        return None, "not-text"


def _errname(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, f"errno {err.errno}")


def list_dir(path: Path, prefix: str) -> list[tuple[int, Path]]:
    """Entries of ``path`` named ``<prefix><N>``, as ``(N, path)`` sorted by N; [] if unreadable."""
    found: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return found
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            found.append((int(name[len(prefix):]), Path(entry.path)))
    found.sort(key=lambda item: item[0])
    return found
