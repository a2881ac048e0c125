"""The model store's history: one JSON line per install, activation, refusal, rollback, removal.

Lines are appended and fsynced; a line cut short by a crash (or otherwise damaged) is skipped
when reading, the rest of the history stands. Each activation and rollback records the rollback
stack it leaves, and is on the storage device before the ``active`` link moves; the rollback
target comes from the newest line whose stack ends at the link's version
(:func:`current_stack`), so a line for a move a power cut stopped, a line cut short or one
copied twice cannot change it. Histories written before stacks were recorded are replayed --
activations push a version, rollbacks pop one -- and mended with what the link says.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgert._fileio import read_file
from edgert.store._errors import StoreError

__all__ = ["StoreEvent", "activation_stack", "append_event", "current_stack", "read_history",
           "rollback_target"]

_log = logging.getLogger("edgert.store")
#: A history larger than this is refused (a store records a few lines a day).
MAX_HISTORY_BYTES = 64 << 20
_MAX_LINE = 64 << 10
#: Versions a line's stack keeps (rollbacks further back than this are not offered).
MAX_STACK = 64
_TEXT = ("event", "version")
_OPTIONAL_TEXT = ("previous",)


@dataclass(frozen=True, kw_only=True)
class StoreEvent:
    """One line of the store's history.

    Attributes:
        event: ``install``, ``activate``, ``refuse``, ``rollback`` or ``remove``.
        version: The version it concerns.
        previous: The version active before (activate, rollback).
        at_unix_s: When.
        detail: Why (refusals), or the health summary (activations).
        stack: For activations and rollbacks, the versions a rollback would return through
            after it, oldest first (the last is the version made active). Written before the
            ``active`` link moves, so the line of whatever the link points to exists.
    """

    event: str
    version: str
    previous: str | None = None
    at_unix_s: float = 0.0
    detail: str = ""
    stack: tuple[str, ...] | None = None


def _event(line: bytes) -> StoreEvent | None:
    """One line's event, or None if the line is damaged."""
    if len(line) > _MAX_LINE:
        return None
    try:
        doc = json.loads(line.decode("utf-8"))
    except Exception:  # cut short, not UTF-8, nested past the parser's limit...
        return None
    if not isinstance(doc, dict) or set(doc) - {"event", "version", "previous", "at_unix_s",
                                                "detail", "stack"}:
        return None
    stack = doc.get("stack")
    if stack is not None and not (isinstance(stack, list) and stack and
                                  all(isinstance(v, str) for v in stack)):
        return None
    if not all(isinstance(doc.get(k), str) for k in _TEXT) or \
            not all(doc.get(k) is None or isinstance(doc[k], str) for k in _OPTIONAL_TEXT):
        return None
    at = doc.get("at_unix_s", 0.0)
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return None
    try:
        at = float(at)  # 10**400 does not fit (found by review)
        for value in (doc["event"], doc["version"], doc.get("previous") or ""):
            value.encode("utf-8")  # a lone surrogate cannot be printed (found by review)
    except (OverflowError, UnicodeEncodeError):
        return None
    if not math.isfinite(at):
        return None
    detail = doc.get("detail", "")
    if not isinstance(detail, str):
        detail = ""
    if stack is not None:
        try:
            for v in stack:
                v.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return StoreEvent(event=doc["event"], version=doc["version"], previous=doc.get("previous"),
                      at_unix_s=at, detail=detail.encode("utf-8", "replace").decode("utf-8"),
                      stack=tuple(stack) if stack is not None else None)


def read_history(path: Path) -> list[StoreEvent]:
    """The events in a history file, oldest first (none if it does not exist).

    Raises:
        StoreError: It is not a regular file, or larger than :data:`MAX_HISTORY_BYTES`.
    """
    try:
        raw = read_file(path, max_bytes=MAX_HISTORY_BYTES)
    except FileNotFoundError:
        return []
    except OSError as err:  # a FIFO, a device, a directory, too large: never read it
        raise StoreError(f"{path} cannot be read as the store's history ({err.strerror or err})",
                         hint="move it away: the store starts a new history (the active link "
                              "still says which version runs)") from err
    events = []
    damaged = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        event = _event(line)
        if event is None:
            damaged += 1
        else:
            events.append(event)
    if damaged:
        _log.warning("%s: %d damaged line(s) skipped", path, damaged)
    return events


def append_event(path: Path, event: StoreEvent) -> None:
    """Append one event (stamped now) and flush it to the storage device."""
    doc: dict[str, object] = {"event": event.event, "version": event.version,
                              "previous": event.previous, "at_unix_s": round(time.time(), 3),
                              "detail": event.detail}
    if event.stack is not None:
        doc["stack"] = list(event.stack[-MAX_STACK:])
    line = json.dumps(doc) + "\n"
    with open(path, "a+b") as f:
        # A line cut short by a power cut must not swallow this one (found by review).
        if f.tell() and (f.seek(f.tell() - 1), f.read(1))[1] != b"\n":
            line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def activation_stack(events: list[StoreEvent], start: list[str] | None = None) -> list[str]:
    """Versions made active and not rolled back, oldest first (the last is the active one).

    Each activation and rollback also names the version active before it: where that is not
    the top of the stack (the line of an activation was lost), the stack is mended from it, so
    one lost line cannot shift every later rollback target.
    """
    stack: list[str] = list(start or [])
    for e in events:
        if e.event == "activate":
            if e.previous is not None and (not stack or stack[-1] != e.previous):
                stack.append(e.previous)
            stack.append(e.version)
        elif e.event == "rollback":
            if stack and (e.previous is None or stack[-1] == e.previous):
                stack.pop()
            if not stack or stack[-1] != e.version:
                stack.append(e.version)
    return stack


def current_stack(events: list[StoreEvent], current: str) -> list[str]:
    """The rollback stack now, its last entry ``current`` (the ``active`` link's version).

    From the newest line that recorded a stack ending in ``current``: such a line is written
    before the link moves, so it exists for any version the link points to, and a line cut
    short or written for a move that never happened is passed over. Histories written before
    stacks were recorded are replayed (:func:`activation_stack`) and checked against the link
    (found by a hostile-files trial and its review: lost or duplicated lines sent rollback to
    the wrong version).
    """
    recorded = [i for i, e in enumerate(events) if e.stack is not None]
    tail = [e for e in events[recorded[-1] + 1:] if e.event in ("activate", "rollback")] \
        if recorded else events
    if recorded and not tail:
        for i in reversed(recorded):
            stack_of = events[i].stack
            assert stack_of is not None
            if stack_of[-1] == current:
                return list(stack_of)
    # No line for the link's version (lost or edited), or lines of an older edgert after the
    # newest recorded stack (a downgrade, found by review): replay them from the state they
    # started from, then mend the result with what the link says.
    start: list[str] = []
    if recorded:
        start = list(events[recorded[-1]].stack or ())
        first = tail[0].previous if tail else None
        for i in reversed(recorded):
            stack_of = events[i].stack
            if first is not None and stack_of is not None and stack_of[-1] == first:
                start = list(stack_of)
                break
    stack = activation_stack(tail, start)
    if current in stack:
        stack = stack[:len(stack) - 1 - stack[::-1].index(current)]
    stack.append(current)
    return stack


def rollback_target(events: list[StoreEvent], current: str) -> str | None:
    """The version a rollback from ``current`` returns to, or None (see :func:`current_stack`)."""
    stack = current_stack(events, current)
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
