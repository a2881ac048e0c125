"""Undoing a real-time policy: the restore steps, and the safety nets that run them.

An :class:`~edgert.realtime.ActivePolicy` records one :class:`Undo` per setting it changed in
an :class:`UndoStack`. Three paths run the stack: ``close()``; the garbage collector, through
the policy's ``weakref.finalize`` (:func:`leaked`); and the end of the policy's thread, through
a per-thread sentinel (:func:`thread_watch`). Nothing here refers to the policy itself: the
safety nets hold the stack, and a stack that reached its policy would keep a leaked policy
(with the GC disabled, the memory locked and /dev/cpu_dma_latency held) alive for the life of
the process.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from edgert import _reaper
from edgert.errors import RealtimeError
from edgert.realtime._report import SettingOutcome

__all__ = ["NotRestored", "Undo", "UndoStack", "close_stack", "leaked", "raise_first",
           "thread_watch"]


class NotRestored(RealtimeError):
    """Raised by an undo step that cannot run here (e.g. a per-thread setting restored from
    another thread): caught by :meth:`UndoStack.run` and reported as not restored, without
    failing close()."""


@dataclass
class Undo:
    """One restore step. ``fn`` must not refer to the :class:`ActivePolicy` (see UndoStack)."""

    setting: str
    thread_bound: bool
    fn: Callable[[], str]


@dataclass(eq=False)
class UndoStack:
    """What to put back, newest last. Shared by close(), the GC safety net and thread death.

    Nothing in here refers to the ActivePolicy that filled it: the safety nets hold the stack,
    and a stack that reached its policy would keep a leaked policy (with the GC disabled, the
    memory locked and /dev/cpu_dma_latency held) alive for the life of the process.
    """

    tid: int
    thread: threading.Thread
    items: list[Undo] = field(default_factory=list)
    restored: list[SettingOutcome] = field(default_factory=list)

    def run(self, *, thread_bound_only: bool = False) -> list[BaseException]:
        errors: list[BaseException] = []
        # Ctrl-C (or SystemExit) during a restore must not drop the steps after it: the
        # thread stayed pinned and memory locked before the loop was unlocked (found by a
        # trial). Every step runs; the first such exception is raised at the end.
        interrupt: BaseException | None = None
        same = threading.get_native_id() == self.tid
        while True:
            # pop() and remove() are atomic, so close() on one thread and a safety net on
            # another (or a finalizer interrupting close()) never run the same step twice.
            if thread_bound_only:
                undo = next((u for u in reversed(self.items) if u.thread_bound), None)
                if undo is None:
                    break
                try:
                    self.items.remove(undo)
                except ValueError:  # taken meanwhile
                    continue
            else:
                try:
                    undo = self.items.pop()
                except IndexError:
                    break
            if undo.thread_bound and not same and not self.thread.is_alive():
                self.restored.append(SettingOutcome(
                    setting=undo.setting, applied=False,
                    detail="not restored: the thread has exited (its settings went with it)"))
                continue
            try:
                self.restored.append(SettingOutcome(setting=undo.setting, applied=True,
                                                    detail=undo.fn()))
            except NotRestored as err:
                self.restored.append(SettingOutcome(setting=undo.setting, applied=False,
                                                    detail=f"not restored: {err}"))
            except Exception as err:
                errors.append(err)
                self.restored.append(SettingOutcome(setting=undo.setting, applied=False,
                                                    detail=f"restore failed: {err}"))
            except BaseException as err:  # re-raised below, after every step
                interrupt = interrupt or err
                self.restored.append(SettingOutcome(
                    setting=undo.setting, applied=False,
                    detail=f"restore interrupted ({type(err).__name__}); the other settings "
                           "were still restored"))
        if interrupt is not None:
            raise interrupt
        return errors


class _ThreadWatch:
    """Per-thread sentinel whose finalizer undoes the policies its thread left open.

    CPython drops a thread's ``threading.local`` data when the thread ends, so this object's
    finalizer is a thread-exit hook: without it the process-wide parts of a policy (GC, memory
    lock, PM QoS) would outlive the thread for as long as anything still refers to it.
    """

    __slots__ = ("__weakref__", "stacks")

    def __init__(self) -> None:
        self.stacks: set[UndoStack] = set()
        weakref.finalize(self, _thread_ended, self.stacks)


_LOCAL = threading.local()


def thread_watch() -> _ThreadWatch:
    watch: _ThreadWatch | None = getattr(_LOCAL, "watch", None)
    if watch is None:
        watch = _ThreadWatch()
        _LOCAL.watch = watch
    return watch


def _thread_ended(stacks: set[UndoStack]) -> None:
    while stacks:
        stack = stacks.pop()
        if not stack.items:
            continue
        _warn_quietly(f"thread {stack.thread.name!r} ended with an ActivePolicy still open; "
                      "restoring it now: close it (or use it as a context manager) on its "
                      "thread", ResourceWarning)
        errors = stack.run()
        if errors:
            _warn_quietly(f"restoring the real-time policy of an ended thread failed: "
                          f"{errors[0]}", RuntimeWarning)


def close_stack(stack: UndoStack, watched: set[UndoStack]) -> None:
    watched.discard(stack)
    raise_first(stack.run())


def leaked(stack: UndoStack, watched: set[UndoStack]) -> None:
    """The GC safety net. Thread-bound steps run here: they are plain syscalls, and the timer
    slack can only be restored by its own thread, which is usually the one dropping the policy.
    Process-wide steps go to the reaper thread: they take locks (memory-lock and GC state) that
    this very thread may hold when the collector runs this finalizer from inside them."""
    watched.discard(stack)
    errors = stack.run(thread_bound_only=True)
    if stack.items:
        _reaper.reap(functools.partial(close_stack, stack, watched))
    raise_first(errors)


def _warn_quietly(message: str, category: type[Warning]) -> None:
    try:
        warnings.warn(message, category, stacklevel=1)
    except Exception:  # a warnings filter set to "error" must not stop the restore
        pass


def raise_first(errors: list[BaseException]) -> None:
    if errors:
        first = errors[0]
        raise RealtimeError(
            f"{len(errors)} real-time setting(s) could not be restored; first: {first}",
            hint="the thread or process keeps the changed setting; restart it if that matters",
        ) from first
