"""Ownership helper shared by every object that holds a CUDA, TensorRT or OS handle.

An owner releases its handle exactly once: through ``close()`` (idempotent), its context manager,
or, as a safety net, a :func:`weakref.finalize` callback that runs when the owner is collected
without having been closed. The callback captures only the release function and never ``self``,
so it cannot keep the owner alive; it emits a :class:`ResourceWarning` so leaks are visible.
An owner whose release can block (CUDA synchronizes and frees, locks) asks for ``reap=True``:
its safety net then hands the release to :mod:`edgert._reaper` instead of running it on
whichever thread happened to drop the owner or run the garbage collector.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from typing_extensions import Self

from edgert import _reaper
from edgert.errors import ResourceClosedError

__all__ = ["Owner"]


def _release_leaked(release: Callable[[], None], what: str, reap: bool = False) -> None:
    try:
        warnings.warn(f"unclosed {what}: call close() or use it as a context manager",
                      ResourceWarning, stacklevel=1)
    except Exception:  # a warnings filter set to "error" must not stop the release
        pass
    if reap:
        _reaper.reap(release)
        return
    try:
        release()
    except Exception:  # interpreter shutdown or a dead driver: nothing left to free into
        pass


class Owner:
    """Base class: idempotent ``close()``, ``closed``, context manager and a leak safety net.

    Subclasses call :meth:`_own` once they hold a handle, passing a callable that frees it, and
    :meth:`_check_open` at the top of every method that uses it.
    """

    _finalizer: weakref.finalize[Any, Any] | None = None
    _owner_closed: bool = False

    def _own(self, release: Callable[[], None], what: str, *, reap: bool = False) -> None:
        if reap:
            _reaper.start()  # here, in ordinary code: never from the finalizer
        self._finalizer = weakref.finalize(self, _release_leaked, release, what, reap)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._owner_closed

    def close(self) -> None:
        """Release the handle. Calling it again does nothing."""
        if self._owner_closed:
            return
        self._owner_closed = True
        fin = self._finalizer
        if fin is not None:
            detached = fin.detach()
            if detached is not None:
                _obj, _func, args, _kwargs = detached
                release = args[0]
                release()

    def _check_open(self) -> None:
        if self._owner_closed:
            raise ResourceClosedError(
                f"{type(self).__name__} is closed",
                hint="create a new one; a closed object cannot be reopened",
            )

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
