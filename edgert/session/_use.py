"""One thread at a time in a session, without a lock that an interrupt can leave held.

A ``threading.Lock`` taken with ``acquire(False)`` and released in a ``finally`` has a gap: the
interpreter runs signal handlers right after a call returns, so a ``KeyboardInterrupt`` (Ctrl-C,
or any handler that raises) can land after the lock was taken and before the ``try`` began. The
lock then stays held for good and every later call, ``close()`` included, reads "used by another
thread" (found by a trial that raised from a SIGALRM handler inside ``infer``).

:class:`UseGuard` records *which thread* holds the session (``dict.setdefault`` is atomic under
the GIL) and separately whether that thread is inside a call. A hold left by an interrupted
entry names the very thread the interrupt was delivered to, and that thread's next call simply
takes it again; another thread still gets :class:`~edgert.errors.ConcurrentUseError`, and the
same thread re-entering a call it is still inside (a signal handler calling ``infer``) too.

A hot swap that no request took applies itself on the swapping thread, holding the guard for a
handful of attribute assignments; a request that meets it then waits those microseconds out
(:meth:`UseGuard.wait_for_swap`) instead of failing: a trial's control loop died of
``ConcurrentUseError`` when the interpreter switched threads in the middle of such an apply.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

__all__ = ["UseGuard"]

_GUARDS: weakref.WeakSet[UseGuard] = weakref.WeakSet()

#: Longest wait for a swap applying on another thread (it takes microseconds; past this the
#: holder is not behaving as a swap does, and the request fails as any concurrent use does).
_SWAP_WAIT_S = 1.0


class UseGuard:
    """Which thread holds the session (``owner[0]``) and whether it is inside a call.

    Every call takes and gives it back with the same inline steps, because a helper method would
    reopen the gap (the interpreter also runs signal handlers as a function starts and after it
    returns)::

        me = get_ident()
        while guard.owner.setdefault(0, me) != me or guard.inside:
            if not guard.wait_for_swap(me):
                raise ...ConcurrentUseError...
        guard.inside = True      # attribute stores and compares: nothing can land in between
        try:
            ...
        finally:
            guard.inside = False
            del guard.owner[0]   # no call: nothing lands between these two either; and
                                 # unlike clear() it keeps the dict's table (no allocation)
    """

    __slots__ = ("__weakref__", "applying", "forked", "inside", "owner")

    def __init__(self) -> None:
        self.owner: dict[int, int] = {}
        self.inside = False
        #: In a forked child: the hold is a thread's that does not exist here (see
        #: :func:`_after_fork_in_child`).
        self.forked = False
        #: The thread (``threading.get_ident()``) of a swap applying itself (or about to try),
        #: 0 if none: set before it takes the guard, cleared after it gave it back.
        self.applying = 0
        _GUARDS.add(self)

    def wait_for_swap(self, me: int) -> bool:
        """Taking the guard failed: wait while a swap applies on another thread. True: try
        again; False: another thread really uses the session (or this one re-entered).

        Only a hold that is the swap's own is waited for: a signal handler on the swapping
        thread, or a real user holding the guard while a swap waits to try, are refused at once
        (a review found a handler on the swapping thread waiting a second for itself).
        """
        swapper = self.applying
        if not swapper or swapper == me or self.owner.get(0) != swapper:
            return False
        deadline = time.monotonic() + _SWAP_WAIT_S
        while self._still_applying():
            if time.monotonic() > deadline:
                return False
            time.sleep(0)  # gives the interpreter to the swapping thread
        return True

    def _still_applying(self) -> bool:
        return bool(self.applying)  # read afresh each time (another thread clears it)


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: a session another thread was inside
    keeps that thread's request half-done here. Its hold stays (no request may run on that
    state) but is marked, so that the refusal says so and ``close()`` can take it over (a trial's
    child was told another thread was using the session, and could not even close it)."""
    me = threading.get_ident()
    for guard in list(_GUARDS):
        holder = guard.owner.get(0)
        if holder is not None and holder != me:
            guard.forked = True
        guard.applying = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
