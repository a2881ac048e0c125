"""A bridge from TensorRT's logger to Python :mod:`logging`, collecting errors per thread.

TensorRT keeps one logger per process (per library: full, lean and dispatch are separate
libraries), so edgert makes one bridge per TensorRT module and never replaces it. Messages go to
the ``edgert.tensorrt`` logger. Error messages are also kept per calling thread, because
deserialization and enqueue report their errors synchronously on the thread that called them:
``drain()`` returns the calling thread's errors since its previous drain, which is how a load or a
failed ``execute_async_v3`` gets TensorRT's own words into its exception.
"""

from __future__ import annotations

import collections
import logging
import threading
from types import ModuleType
from typing import Any

__all__ = ["LOGGER_NAME", "LogBridge", "bridge_for"]

#: The :mod:`logging` logger TensorRT's messages are bridged to.
LOGGER_NAME = "edgert.tensorrt"
_MAX_KEPT = 64
# TensorRT's ILogger.Severity values: INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4.
_LEVELS = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
_ERROR_MAX = 1


class LogBridge:
    """Receives TensorRT log messages; see the module documentation.

    Attributes:
        trt_logger: The object to hand to ``Runtime(...)`` (an ``ILogger`` subclass instance).
    """

    def __init__(self, trt: ModuleType) -> None:
        self._local = threading.local()
        self._log = logging.getLogger(LOGGER_NAME)
        self.trt_logger: Any = _make_trt_logger(trt, self)

    def _errors(self) -> collections.deque[str]:
        errors: collections.deque[str] | None = getattr(self._local, "errors", None)
        if errors is None:
            errors = self._local.errors = collections.deque(maxlen=_MAX_KEPT)
        return errors

    def emit(self, severity: int, message: str) -> None:
        """Handle one message (called by TensorRT, possibly from any thread)."""
        level = _LEVELS[severity] if 0 <= severity < len(_LEVELS) else logging.ERROR
        if severity <= _ERROR_MAX:
            self._errors().append(message)
        if self._log.isEnabledFor(level):
            self._log.log(level, "%s", message)

    def drain(self) -> tuple[str, ...]:
        """The calling thread's error messages since its previous drain, oldest first."""
        errors = self._errors()
        lines = tuple(errors)
        errors.clear()
        return lines


def _make_trt_logger(trt: ModuleType, bridge: LogBridge) -> Any:
    # The class statement (not type()) lets a base that only pretends to be a class, such as the
    # conformance test's recording proxy, supply the real ILogger through __mro_entries__.
    class _EdgertTrtLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()  # pybind11 requires the base initialiser to run

        def log(self, severity: Any, msg: str) -> None:
            try:
                bridge.emit(int(severity), str(msg))
            except Exception:  # an exception must never propagate into TensorRT's C++ frames
                pass

    return _EdgertTrtLogger()


_bridges: dict[int, tuple[ModuleType, LogBridge]] = {}
_bridges_lock = threading.Lock()


def bridge_for(trt: ModuleType) -> LogBridge:
    """The process-wide bridge for one TensorRT module, made on first use."""
    with _bridges_lock:
        entry = _bridges.get(id(trt))
        if entry is None or entry[0] is not trt:
            entry = (trt, LogBridge(trt))
            _bridges[id(trt)] = entry
        return entry[1]
