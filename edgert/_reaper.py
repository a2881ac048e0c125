"""A background thread that runs the blocking part of leaked objects' cleanup.

A leaked owner's safety net runs on whichever thread drops the last reference or runs the
garbage collector, possibly a real-time loop. Releasing a session or a pool can block for long
(``cudaStreamSynchronize``, event synchronizes, ``cudaFreeHost``, taking the pool's lock), so
the safety net hands that work to this thread instead. Handing over never blocks:
:class:`queue.SimpleQueue` ``put`` is documented as reentrant, safe to call from ``__del__``
and ``weakref`` callbacks (https://docs.python.org/3/library/queue.html#queue.SimpleQueue.put).

The thread is started by :func:`start` from ordinary code (an owner's constructor), never from
a finalizer: ``Thread.start`` waits for the new thread to run, and a thread made by a real-time
thread would inherit its policy and affinity, so the reaper drops both first thing.
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable
from types import CodeType, FrameType

__all__ = ["drain", "inline", "reap", "reap_unless_inline", "start"]

_work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _forget_after_fork() -> None:
    # Work queued in the parent is the parent's (its CUDA context, its mappings): a child
    # starts with an empty queue and no reaper, and starts its own when it needs one.
    global _work, _thread
    _work = queue.SimpleQueue()
    _thread = None


os.register_at_fork(after_in_child=_forget_after_fork)

# Set as the interpreter exits (atexit runs once non-daemon threads have been joined, while the
# daemon reaper may never run again). Not threading.main_thread().is_alive(): an interrupt
# landing inside is_alive() makes CPython mark the thread stopped for good (found by a trial).
_exiting = False


def _stop_reaping() -> None:
    global _exiting
    _exiting = True


atexit.register(_stop_reaping)


def start() -> None:
    """Start the reaper thread if it is not running (after ``fork`` it is not). Call it from
    ordinary code, never from a finalizer.

    The reaper is known by being on record, not by ``Thread.is_alive()``: a KeyboardInterrupt
    that lands inside ``is_alive()`` makes CPython mark the thread stopped while it runs on
    (``_wait_for_tstate_lock`` releases its lock on the way out). A trial's interrupts then
    started five more reapers, and every leak was released on the thread that dropped it.
    """
    global _thread
    if _thread is not None:
        return
    with _lock:
        if _started():  # another thread started it meanwhile
            return
        t = threading.Thread(target=_run, name="edgert-reaper", daemon=True)
        _thread = t  # before start(): an interrupt inside it must not start a second one
        try:
            t.start()
        except BaseException:
            if t.ident is None:  # it never ran: let the next owner try again
                _thread = None
            raise


def _started() -> bool:
    return _thread is not None


def reap(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the reaper thread; never blocks the caller.

    Without a running reaper (never started, after ``fork``, or while the interpreter shuts
    down and daemon threads may never run again) ``fn`` runs here, so the work is never lost.
    """
    if _thread is None or _exiting:
        _run_one(fn)
        return
    _work.put(fn)


class _Inline(threading.local):
    def __init__(self) -> None:
        # (id, code) of each frame inside an inline() block, innermost last.
        self.entries: list[tuple[int, CodeType]] = []


_inline = _Inline()


class inline:  # noqa: N801 - used as ``with _reaper.inline():``, like a function
    """Within this block, :func:`reap_unless_inline` runs its work here, at once: for code that
    frees on purpose (``close()``) and whose caller expects the memory back when it returns.

    The block is known by its caller's frame, not by a counter: an interrupt can keep
    ``__exit__`` from running (Python runs signal handlers as a function starts), and a counter
    left raised would make every later release on this thread run inline, a real-time loop's
    included (found by a trial raising KeyboardInterrupt inside a session). A frame that is no
    longer on the stack no longer counts.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        caller = sys._getframe(1)
        _inline.entries.append((id(caller), caller.f_code))

    def __exit__(self, *_exc: object) -> None:
        entries = _inline.entries
        if entries:
            entries.pop()


def _inside_inline() -> bool:
    """Whether this thread is inside an :class:`inline` block whose frame still runs."""
    entries = _inline.entries
    if not entries:
        return False
    running = set()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        running.add((id(frame), frame.f_code))
        frame = frame.f_back
    live = [entry for entry in entries if entry in running]
    if len(live) != len(entries):
        entries[:] = live  # blocks an interrupt left without __exit__
    return bool(live)


def reap_unless_inline(fn: Callable[[], None]) -> None:
    """Run ``fn`` here inside an :class:`inline` block, else on the reaper (see :func:`reap`).

    For releases that happen when the last reference dies: inside ``close()`` that is wanted
    and immediate; anywhere else it is whichever thread dropped a view last, perhaps a real-time
    loop, which must not pay for ``cudaFreeHost`` (it synchronizes the whole device).
    """
    if _inside_inline():
        _run_one(fn)
    else:
        reap(fn)


def drain(timeout_s: float = 10.0) -> bool:
    """Wait until everything handed over so far has run; returns False on timeout.

    For tests and orderly shutdown; never call it from a finalizer.
    """
    done = threading.Event()
    _work.put(done.set)  # FIFO: when this runs, everything before it has run
    if _thread is None:
        while True:
            try:
                item = _work.get_nowait()
            except queue.Empty:
                return True
            _run_one(item)
    return done.wait(timeout_s)


def _run() -> None:
    try:
        # A reaper made by a SCHED_FIFO thread pinned to an isolated CPU would compete with
        # it there; lowering the policy never needs a privilege. Asking for every CPU gets
        # the ones the cpuset allows (the kernel drops the others).
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (OSError, AttributeError):
        pass
    while True:
        fn = _work.get()
        try:
            _run_one(fn)
        except BaseException as err:  # see below
            # Whatever a release raises, the reaper must live on: every later leak would be
            # released on whichever thread drops it, a real-time loop's included.
            _say(err)


def _run_one(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as err:  # a dead driver must not stop the reaper for everyone else
        _say(err)


def _say(err: BaseException) -> None:
    try:
        warnings.warn(f"edgert: cleaning up a leaked object failed: {err!r}",
                      RuntimeWarning, stacklevel=1)
    except Exception:
        pass
