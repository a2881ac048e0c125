"""Keeping Python's cyclic garbage collector out of a real-time loop.

The collector is process-wide, so holders share a reference count: the first one collects,
freezes (moves every tracked object to the permanent generation) and disables it; the last one
unfreezes and re-enables it if it was enabled. ``gc.unfreeze`` cannot tell objects frozen before
from ours, so it unfreezes those too (some interpreters, e.g. Ubuntu's 3.12, start with a few
hundred frozen): they only become collectable again, which is safer than leaving every object
alive at the time frozen for good.
"""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GcCounter", "hold_gc_frozen", "release_gc"]


@dataclass
class _GcState:
    holders: int = 0
    was_enabled: bool = True
    was_frozen: int = 0
    threads: list[int] = field(default_factory=list)  # the thread of each hold


_STATE = _GcState()
_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: holds taken by any other thread belong
    to policies that will never release them there, so the collector is given back (found by a
    trial: a child forked while a loop thread applied its policy kept the GC off for good).

    No lock is taken around the fork: ``hold_gc_frozen`` runs other code's finalizers under
    its lock, and a fork that waited for it could deadlock with them (found by review). The
    state is instead written so that any prefix of an update reads right here: a hold's thread
    is recorded before the collector is touched, and removed after it is given back. The lock,
    perhaps held by a thread that does not exist here, is made anew.
    """
    global _LOCK
    _LOCK = threading.Lock()
    me = threading.get_ident()
    mine = [t for t in _STATE.threads if t == me]
    if _STATE.threads and not mine:
        gc.unfreeze()
        if _STATE.was_enabled:
            gc.enable()
    _STATE.threads = mine
    _STATE.holders = len(mine)


os.register_at_fork(after_in_child=_after_fork_in_child)


def hold_gc_frozen() -> str:
    """Collect, freeze and disable the collector (first holder); return what was done.

    The hold is this thread's: release it with ``release_gc(threading.get_ident())`` of this
    thread, wherever the release runs.
    """
    me = threading.get_ident()
    with _LOCK:
        if _STATE.holders == 0:
            _STATE.was_enabled = gc.isenabled()
            _STATE.was_frozen = gc.get_freeze_count()
            _STATE.threads = [me]  # first: a fork from here on gives the collector back
            collected = gc.collect()
            gc.freeze()
            gc.disable()
            _STATE.holders = 1
            return (f"gc.collect() freed {collected} objects; froze {gc.get_freeze_count()} "
                    f"objects; collector disabled (was {'on' if _STATE.was_enabled else 'off'})")
        _STATE.threads.append(me)
        _STATE.holders += 1
        return "collector already frozen and disabled by another holder"


def release_gc(thread: int | None = None) -> str:
    """Drop one hold of ``thread`` (default: this thread); the last one restores the
    collector's previous state."""
    with _LOCK:
        if _STATE.holders == 0:
            return "not held"
        _STATE.holders -= 1
        owner = threading.get_ident() if thread is None else thread
        threads = _STATE.threads
        if _STATE.holders:
            if owner in threads:
                threads.remove(owner)
            return f"still held by {_STATE.holders} other holder(s)"
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        parts = [f"unfroze {frozen} objects"
                 + (f" ({_STATE.was_frozen} of them were frozen before)" if _STATE.was_frozen
                    else "")]
        if _STATE.was_enabled:
            gc.enable()
            parts.append("re-enabled the collector")
        threads.clear()  # last: given back before the record goes
        return "; ".join(parts)


class GcCounter:
    """Counts collections (any thread) while installed in ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = 0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.collections += 1

    def install(self) -> None:
        """Start counting."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def remove(self) -> None:
        """Stop counting."""
        if self._installed:
            try:
                gc.callbacks.remove(self._callback)
            except ValueError:
                pass
            self._installed = False
