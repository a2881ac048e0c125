"""Ranges edgert unmapped while the memory lock watched (shared by memory and realtime).

Releasing the last memory lock locks again what was locked before it; a range edgert unmapped
meanwhile (a pool block given back) may have been reused by a new mapping at the same address,
which must not be locked for good (found by review). ``edgert.memory`` records its unmaps here
while ``edgert.realtime`` watches; neither imports the other.
"""

from __future__ import annotations

__all__ = ["record", "since", "watch"]

_watching = False
_ranges: list[tuple[int, int]] = []


def watch(on: bool) -> None:
    """Start (clearing what was recorded) or stop recording."""
    global _watching
    _ranges.clear()
    _watching = on


def record(start: int, end: int) -> None:
    """Note that ``[start, end)`` was unmapped (kept only while watched)."""
    if _watching:
        _ranges.append((start, end))


def since() -> tuple[tuple[int, int], ...]:
    """What was unmapped since :func:`watch` started."""
    return tuple(_ranges)
