"""Reading small procfs/sysfs/etc files under an injected root, never raising."""

from __future__ import annotations

from pathlib import Path

from edgert._fileio import MAX_CONFIG_BYTES, read_file

__all__ = ["read_text", "under"]


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, e.g. ``/proc/cmdline``) relocated under ``root``."""
    return root / path.lstrip("/")


def read_text(root: Path, path: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> str | None:
    """The file's text with NULs and surrounding whitespace stripped, or None if unreadable.

    Device-tree strings end in NUL; sysfs values end in a newline; both are removed. Anything
    that fails (missing, permission denied, a directory, a FIFO or device, more than
    ``max_bytes``, an I/O error from a driver, bytes that are not text) reads as None. The read
    goes through edgert's bounded file reader, so it cannot block or run away.
    """
    try:
        data = read_file(under(root, path), max_bytes=max_bytes)
    except (OSError, ValueError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.replace("\x00", " ").strip()
