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
"""

from __future__ import annotations

__all__ = ["UseGuard"]


class UseGuard:
    """Which thread holds the session (``owner[0]``) and whether it is inside a call.

    Every call takes and gives it back with the same inline steps, because a helper method would
    reopen the gap (the interpreter also runs signal handlers as a function starts and after it
    returns)::

        me = get_ident()
        if guard.owner.setdefault(0, me) != me or guard.inside:
            raise ...ConcurrentUseError...
        guard.inside = True      # attribute stores and compares: nothing can land in between
        try:
            ...
        finally:
            guard.inside = False
            del guard.owner[0]   # no call: nothing lands between these two either; and
                                 # unlike clear() it keeps the dict's table (no allocation)
    """

    __slots__ = ("inside", "owner")

    def __init__(self) -> None:
        self.owner: dict[int, int] = {}
        self.inside = False
