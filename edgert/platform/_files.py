"""Reading small procfs/sysfs/etc files under an injected root, never raising."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_text", "under"]


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, e.g. ``/proc/cmdline``) relocated under ``root``."""
    return root / path.lstrip("/")


def read_text(root: Path, path: str, *, limit: int = -1) -> str | None:
    """The file's text with NULs and surrounding whitespace stripped, or None if unreadable.

    Device-tree strings end in NUL; sysfs values end in a newline; both are removed. Anything
    that fails (missing, permission denied, a directory, an I/O error from a driver, bytes that
    are not text) reads as None. ``limit`` caps the bytes read (default: the whole file, since
    /boot/config-* and /proc/self/mountinfo can exceed any small cap).
    """
    try:
        with open(under(root, path), "rb") as f:
            data = f.read(limit)
    except (OSError, ValueError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.replace("\x00", " ").strip()
