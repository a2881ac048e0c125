"""RealtimeThread: a thread that applies a RealtimePolicy to itself before running its target."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from edgert.errors import RequestTimeoutError
from edgert.realtime._policy import PolicyReport, RealtimePolicy

__all__ = ["RealtimeThread"]


class RealtimeThread(threading.Thread):
    """A :class:`threading.Thread` that runs its target under a :class:`RealtimePolicy`.

    The policy is applied *inside* the new thread (scheduling and affinity are per thread), before
    the target runs, and restored when it returns. An exception raised by the policy or the
    target does not go to :func:`threading.excepthook`: it is re-raised by :meth:`join`.

    Args:
        target: The callable to run; its return value is kept in :attr:`result`.
        policy: Settings for this thread; ``None`` runs it as a plain thread.
        name: Thread name (shows in ``ps -L`` as comm, truncated to 15 characters by Linux).
        args: Positional arguments for ``target``.
        kwargs: Keyword arguments for ``target``.
        daemon: Whether the thread is a daemon thread.

    Subclasses override :meth:`body` (not ``run``) to keep the policy handling.

    Example:
        >>> t = RealtimeThread(control_loop, policy=RealtimePolicy(priority=80, cpus={3}))
        >>> t.start()                       # doctest: +SKIP
        >>> t.join()                        # re-raises control_loop's exception, if any
    """

    def __init__(
        self,
        target: Callable[..., object] | None = None,
        *,
        policy: RealtimePolicy | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        daemon: bool | None = None,
    ) -> None:
        super().__init__(name=name, daemon=daemon)
        self._rt_target = target
        self._rt_args = tuple(args)
        self._rt_kwargs = dict(kwargs or {})
        self.policy = policy
        self._rt_report: PolicyReport | None = None
        self._rt_exception: BaseException | None = None
        self._rt_result: object = None
        self._rt_ready = threading.Event()

    def body(self) -> object:
        """What the thread runs once the policy is in effect; calls ``target`` by default."""
        if self._rt_target is None:
            return None
        return self._rt_target(*self._rt_args, **self._rt_kwargs)

    def run(self) -> None:
        """Apply the policy, run :meth:`body`, restore. Do not override; override body()."""
        try:
            if self.policy is None:
                self._rt_ready.set()
                self._rt_result = self.body()
            else:
                with self.policy.apply() as active:
                    self._rt_report = active.report
                    self._rt_ready.set()
                    self._rt_result = self.body()
        except BaseException as exc:
            self._rt_exception = exc
        finally:
            self._rt_ready.set()
            # Drop references so a finished thread does not keep the target's objects alive.
            self._rt_target = None
            self._rt_args = ()
            self._rt_kwargs = {}

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread; re-raise what its policy or target raised.

        Raises:
            BaseException: The exception that ended the thread (every call after it ended).
        """
        super().join(timeout)
        if not self.is_alive() and self._rt_exception is not None:
            raise self._rt_exception

    def wait_applied(self, timeout: float | None = None) -> PolicyReport | None:
        """Block until the policy is in effect (or failed); return its report.

        Raises:
            RequestTimeoutError: The thread did not get that far in ``timeout`` seconds.
            BaseException: Applying the policy failed (the thread has then ended).
        """
        if not self._rt_ready.wait(timeout):
            raise RequestTimeoutError(f"{self.name} did not apply its policy within {timeout} s",
                                      hint="call start() first")
        if self.policy is not None and self._rt_report is None and self._rt_exception is not None:
            raise self._rt_exception
        return self._rt_report

    @property
    def report(self) -> PolicyReport | None:
        """What the policy applied and refused (``None`` before it ran or without a policy)."""
        return self._rt_report

    @property
    def result(self) -> object:
        """The target's return value (``None`` until it returned)."""
        return self._rt_result

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the thread, if any."""
        return self._rt_exception
