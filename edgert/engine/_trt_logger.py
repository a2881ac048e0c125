"""A bridge from TensorRT's logger and error recorder to Python, collecting errors per thread.

TensorRT keeps one logger per process (per library: full, lean and dispatch are separate
libraries), so edgert makes one bridge per TensorRT module and never replaces it. Messages go to
the ``edgert.tensorrt`` logger. Where the bindings offer ``IErrorRecorder``, the bridge also
makes one recorder, set on every runtime edgert creates (engines and contexts inherit it): it
receives each error with TensorRT's ``ErrorCode``, which classifies a failure better than the
text. Errors are kept per calling thread, because deserialization and enqueue report their
errors synchronously on the thread that called them: :meth:`LogBridge.drain` returns the calling
thread's errors since its previous drain, which is how a load or a failed ``execute_async_v3``
gets TensorRT's own words (and codes) into its exception.

TensorRT calls the logger and the recorder from C++ functions declared ``noexcept``: a Python
exception escaping them (a logging handler failing, a ``KeyboardInterrupt`` arriving while
Python code runs inside) terminates the process. So every callback catches ``BaseException``,
keeps it, and the next :meth:`LogBridge.drain` on that thread, back in Python, raises it.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["LOGGER_NAME", "LogBridge", "TrtError", "bridge_for"]

#: The :mod:`logging` logger TensorRT's messages are bridged to.
LOGGER_NAME = "edgert.tensorrt"
_MAX_KEPT = 64
# TensorRT's ILogger.Severity values: INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4.
_LEVELS = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
_ERROR_MAX = 1


@dataclass(frozen=True, slots=True)
class TrtError:
    """One error TensorRT reported to the error recorder.

    Attributes:
        code: TensorRT's ``ErrorCode`` value (e.g. 5 = FAILED_ALLOCATION).
        code_name: Its name (``FAILED_ALLOCATION``), or ``str(code)`` for a value the bindings
            do not name.
        text: TensorRT's description.
    """

    code: int
    code_name: str
    text: str


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.errors: collections.deque[str] = collections.deque(maxlen=_MAX_KEPT)
        self.records: collections.deque[TrtError] = collections.deque(maxlen=_MAX_KEPT)
        self.raised: BaseException | None = None


class LogBridge:
    """Receives TensorRT log messages and recorded errors; see the module documentation.

    Attributes:
        trt_logger: The object to hand to ``Runtime(...)`` (an ``ILogger`` subclass instance).
        trt_recorder: The ``IErrorRecorder`` to set as a runtime's ``error_recorder``, or None
            where the bindings have no error recorder.
    """

    def __init__(self, trt: ModuleType) -> None:
        self._local = _PerThread()
        self._log = logging.getLogger(LOGGER_NAME)
        self.trt_logger: Any = _make_trt_logger(trt, self)
        self.trt_recorder: Any = _make_trt_recorder(trt, self)

    def emit(self, severity: int, message: str) -> None:
        """Handle one message (called by TensorRT, possibly from any thread)."""
        level = _LEVELS[severity] if 0 <= severity < len(_LEVELS) else logging.ERROR
        if severity <= _ERROR_MAX:
            self._local.errors.append(message)
        if self._log.isEnabledFor(level):
            self._log.log(level, "%s", message)

    def record(self, code: int, code_name: str, text: str) -> None:
        """Keep one recorded error (called by TensorRT through the recorder)."""
        self._local.records.append(TrtError(code, code_name, text))
        self.emit(1, f"{code_name}: {text}")  # a runtime with a recorder does not log errors

    def recorded(self) -> tuple[TrtError, ...]:
        """The calling thread's recorded errors since its previous drain (kept by drain)."""
        return tuple(self._local.records)

    def forget_recorded(self) -> None:
        """Forget the calling thread's recorded errors (``IErrorRecorder.clear``)."""
        self._local.records.clear()

    def caught(self, err: BaseException) -> None:
        """Keep an exception raised inside a callback, to re-raise at the next drain."""
        local = self._local
        if local.raised is None:
            local.raised = err

    def raise_pending(self) -> None:
        """Raise what a callback on this thread caught, if anything (cheap: for code that calls
        TensorRT on a hot path and does not drain after every call).

        Raises:
            BaseException: What a callback caught (see :meth:`drain`).
        """
        local = self._local
        raised = local.raised
        if raised is not None:
            local.raised = None
            raise raised

    def drain(self) -> tuple[str, ...]:
        """The calling thread's error messages since its previous drain, oldest first; also
        forgets its recorded errors.

        Raises:
            BaseException: Whatever a callback on this thread caught since the previous drain
                (e.g. a KeyboardInterrupt that arrived while TensorRT was logging), now that
                control is back in Python.
        """
        local = self._local
        lines = tuple(local.errors)
        local.errors.clear()
        local.records.clear()
        raised, local.raised = local.raised, None
        if raised is not None:
            raise raised
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
            except BaseException as err:  # ILogger::log is noexcept
                bridge.caught(err)

    return _EdgertTrtLogger()


def _make_trt_recorder(trt: ModuleType, bridge: LogBridge) -> Any:
    base = getattr(trt, "IErrorRecorder", None)
    found = getattr(trt, "ErrorCodeTRT", None) or getattr(trt, "ErrorCode", None)
    if base is None or found is None:
        return None
    codes: Any = found
    success = codes.SUCCESS

    # Every method is a noexcept C++ virtual: answer something sane and keep the exception.
    class _EdgertErrorRecorder(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()

        def report_error(self, val: Any, desc: str) -> bool:
            try:
                code = int(val)
                name = getattr(val, "name", None) or str(code)
                bridge.record(code, str(name), str(desc))
            except BaseException as err:
                bridge.caught(err)
            return False  # not fatal: TensorRT decides whether the call can go on

        def num_errors(self) -> int:
            try:
                return len(bridge.recorded())
            except BaseException as err:
                bridge.caught(err)
                return 0

        def has_overflowed(self) -> bool:
            return False  # the per-thread deques drop the oldest, never a new error

        def clear(self) -> None:
            try:
                bridge.forget_recorded()
            except BaseException as err:
                bridge.caught(err)

        def get_error_code(self, idx: int) -> Any:
            try:
                return codes(bridge.recorded()[idx].code)
            except BaseException as err:
                if not isinstance(err, (IndexError, ValueError)):
                    bridge.caught(err)
                return success

        def get_error_desc(self, idx: int) -> str:
            try:
                return bridge.recorded()[idx].text
            except BaseException as err:
                if not isinstance(err, IndexError):
                    bridge.caught(err)
                return ""

    return _EdgertErrorRecorder()


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
