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
_LOCK = threading.RLock()  # re-entered by a finalizer that runs during fork()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: holds taken by any other thread belong
    to policies that will never release them there, so the collector is given back (found by a
    trial: a child forked while a loop thread applied its policy kept the GC off for good). The
    lock is held across the fork (``before``), so the state copied is never half-written."""
    me = threading.get_ident()
    mine = [t for t in _STATE.threads if t == me]
    if _STATE.holders and not mine:
        gc.unfreeze()
        if _STATE.was_enabled:
            gc.enable()
    _STATE.threads = mine
    _STATE.holders = len(mine)
    _LOCK.release()


os.register_at_fork(before=_LOCK.acquire, after_in_parent=_LOCK.release,
                    after_in_child=_after_fork_in_child)


def hold_gc_frozen() -> str:
    """Collect, freeze and disable the collector (first holder); return what was done."""
    with _LOCK:
        if _STATE.holders == 0:
            _STATE.was_enabled = gc.isenabled()
            _STATE.was_frozen = gc.get_freeze_count()
            collected = gc.collect()
            gc.freeze()
            gc.disable()
            _STATE.holders = 1
            _STATE.threads = [threading.get_ident()]
            return (f"gc.collect() freed {collected} objects; froze {gc.get_freeze_count()} "
                    f"objects; collector disabled (was {'on' if _STATE.was_enabled else 'off'})")
        _STATE.holders += 1
        _STATE.threads.append(threading.get_ident())
        return "collector already frozen and disabled by another holder"


def release_gc() -> str:
    """Drop one hold; the last one restores the collector's previous state."""
    with _LOCK:
        if _STATE.holders == 0:
            return "not held"
        _STATE.holders -= 1
        me = threading.get_ident()
        threads = _STATE.threads
        if threads:
            threads.remove(me if me in threads else threads[-1])
        if _STATE.holders:
            return f"still held by {_STATE.holders} other holder(s)"
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        parts = [f"unfroze {frozen} objects"
                 + (f" ({_STATE.was_frozen} of them were frozen before)" if _STATE.was_frozen
                    else "")]
        if _STATE.was_enabled:
            gc.enable()
            parts.append("re-enabled the collector")
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
