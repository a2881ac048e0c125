"""What a session must release, in order; its finalizer holds this, never the session."""

from __future__ import annotations

from collections.abc import Callable

from edgert.session._runner import Runner
from edgert.session._slot import Slot

__all__ = ["Resources"]


class Resources:
    """The runner, slots and closers of one session (swapped as a whole by a hot swap)."""

    def __init__(self) -> None:
        self.runner: Runner | None = None
        self.slots: list[Slot] = []
        self.closers: list[Callable[[], None]] = []

    def release(self) -> None:
        """Drain the runner, then free graphs, the runner, the slots and the closers' objects."""
        runner = self.runner
        if runner is not None:
            try:
                runner.drain()
            except Exception:  # a failed device: free what can be freed
                pass
            if runner.graphs is not None:
                runner.graphs.close()
            runner.close()
        for slot in self.slots:
            slot.release()
            slot.close_events()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                pass
        self.closers.clear()
        self.runner = None
