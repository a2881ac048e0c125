"""Small, fast, never-raising readers for sysfs attributes.

Sensor attributes fail in many ways on Jetson: powered-down cv zones return EAGAIN, BPMP failures
EINVAL, some drivers ENODATA, and a path can be missing, a directory, unreadable, empty, garbage,
or (in a hostile or broken tree) a FIFO or a link to ``/dev/zero``. A reading is then ``None``;
the caller decides what that means. Every read goes through :func:`edgert._fileio.read_file`
(non-blocking open, regular files only, bounded), and every number through
:func:`edgert._fileio.parse_int` (ASCII digits and a sign, 64-bit range), so a reader here never
hangs and never raises.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from edgert._fileio import MAX_SYSFS_BYTES, FileRefusedError, parse_index, parse_int, read_file

__all__ = [
    "MAX_MILLI_C",
    "SENTINEL_MILLI_C",
    "list_dir",
    "milli_c",
    "parse_milli_c",
    "probe",
    "read_bytes",
    "read_int",
    "read_str",
    "under",
]

# jtop and tegrastats print -256 °C for an offline sensor; anything at or below it is no reading.
SENTINEL_MILLI_C = -256_000
# No sensor edgert reads can report 1000 °C: a larger value is a broken driver, not a reading.
MAX_MILLI_C = 1_000_000
# Indirection so that edgert.testing.jetson.raising_reads can make chosen reads raise.
_read = os.read


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, as on a real machine) re-rooted under ``root``."""
    return root / path.lstrip("/")


def read_bytes(path: str | Path) -> bytes | None:
    """The raw content of ``path``, or ``None`` when it cannot be read for any reason."""
    try:
        return read_file(path, max_bytes=MAX_SYSFS_BYTES, read=_read)
    except (OSError, TypeError, ValueError):
        return None


def read_str(path: str | Path) -> str | None:
    """The stripped text of ``path``; ``None`` if unreadable, empty or not text.

    NUL bytes are dropped: device-tree strings end with one.
    """
    raw = read_bytes(path)
    if not raw:
        return None
    try:
        text = raw.replace(b"\0", b"").decode().strip()
    except UnicodeDecodeError:
        return None
    return text or None


def read_int(path: str | Path) -> int | None:
    """The integer in ``path``; ``None`` if unreadable, empty or not a 64-bit decimal integer."""
    return parse_int(read_bytes(path))


def parse_milli_c(raw: str | bytes | None) -> tuple[float | None, str | None]:
    """A millidegree-Celsius value in °C with the reason when there is none.

    Returns ``(temp_c, None)`` or ``(None, reason)``, reason one of ``not-an-integer``,
    ``sentinel`` (-256 °C or below: the sensor is offline) and ``out-of-range`` (1000 °C or more).
    """
    value = parse_int(raw)
    if value is None:
        return None, "not-an-integer"
    if value <= SENTINEL_MILLI_C:
        return None, "sentinel"
    if value >= MAX_MILLI_C:
        return None, "out-of-range"
    return value / 1000.0, None


def milli_c(path: str | Path) -> float | None:
    """A millidegree-Celsius attribute in °C; ``None`` when unreadable or not a temperature."""
    raw = read_bytes(path)
    if not raw:
        return None
    return parse_milli_c(raw)[0]


def probe(path: str | Path) -> tuple[str | None, str | None]:
    """Read ``path`` and say why it failed: ``(text, None)`` or ``(None, reason)``.

    The reason is an errno name (``EAGAIN``, ``ENOENT``...), ``not-regular``/``too-large`` for a
    file refused by the reader, or ``empty``/``not-text``. Slower than :func:`read_str`; meant
    for snapshots and diagnostics, not the hot read path.
    """
    try:
        raw = read_file(path, max_bytes=MAX_SYSFS_BYTES, read=_read)
    except FileRefusedError as err:
        return None, err.reason
    except OSError as err:
        return None, _errname(err)
    except (TypeError, ValueError) as err:
        return None, type(err).__name__
    if not raw.strip(b"\0 \n\t"):
        return None, "empty"
    try:
        return raw.replace(b"\0", b"").decode().strip(), None
    except UnicodeDecodeError:
        return None, "not-text"


def _errname(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, f"errno {err.errno}")


def list_dir(path: Path, prefix: str) -> list[tuple[int, Path]]:
    """Entries of ``path`` named ``<prefix><N>``, as ``(N, path)`` sorted by N; [] if unreadable.

    N is ASCII digits only, as the kernel names its devices (``thermal_zone3``, ``hwmon0``).
    """
    found: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(path))
    except (OSError, ValueError):
        return found
    for entry in entries:
        name = entry.name
        if name.startswith(prefix):
            index = parse_index(name[len(prefix):])
            if index is not None:
                found.append((index, Path(entry.path)))
    found.sort(key=lambda item: item[0])
    return found
