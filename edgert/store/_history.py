"""The model store's history: one JSON line per install, activation, refusal, rollback, removal.

Lines are appended and fsynced; a line cut short by a crash is skipped when reading, the rest of
the history stands. Rollback targets come from replaying it: activations push a version,
rollbacks pop one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StoreEvent", "activation_stack", "append_event", "read_history"]


@dataclass(frozen=True, kw_only=True)
class StoreEvent:
    """One line of the store's history.

    Attributes:
        event: ``install``, ``activate``, ``refuse``, ``rollback`` or ``remove``.
        version: The version it concerns.
        previous: The version active before (activate, rollback).
        at_unix_s: When.
        detail: Why (refusals), or the health summary (activations).
    """

    event: str
    version: str
    previous: str | None = None
    at_unix_s: float = 0.0
    detail: str = ""


def read_history(path: Path) -> list[StoreEvent]:
    """The events in a history file, oldest first (none if it does not exist)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(StoreEvent(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut short by a crash
    return events


def append_event(path: Path, event: StoreEvent) -> None:
    """Append one event (stamped now) and flush it to the storage device."""
    line = json.dumps({"event": event.event, "version": event.version,
                       "previous": event.previous, "at_unix_s": round(time.time(), 3),
                       "detail": event.detail}) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def activation_stack(events: list[StoreEvent]) -> list[str]:
    """Versions made active and not rolled back, oldest first (the last is the active one)."""
    stack: list[str] = []
    for e in events:
        if e.event == "activate":
            stack.append(e.version)
        elif e.event == "rollback" and stack:
            stack.pop()
    return stack
