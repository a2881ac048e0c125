"""Enums, Dims and loggers of the fake TensorRT, with TensorRT's names and numeric values.

The conformance test checks every public name here against the real ``tensorrt_lean`` bindings
(values included), so the fake cannot drift from what it imitates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

__all__ = [
    "DataType",
    "Dims",
    "ExecutionContextAllocationStrategy",
    "ILogger",
    "Logger",
    "TempfileControlFlag",
    "TensorIOMode",
    "TensorLocation",
]


class DataType(IntEnum):
    """TensorRT's element types (same values as ``tensorrt.DataType``)."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10
    E8M0 = 11


class TensorIOMode(IntEnum):
    """Whether a tensor is an input or an output (``tensorrt.TensorIOMode``)."""

    NONE = 0
    INPUT = 1
    OUTPUT = 2


class TensorLocation(IntEnum):
    """Where a tensor's memory lives (``tensorrt.TensorLocation``)."""

    DEVICE = 0
    HOST = 1


class TempfileControlFlag(IntEnum):
    """Bits of ``Runtime.tempfile_control_flags`` (``tensorrt.TempfileControlFlag``)."""

    ALLOW_IN_MEMORY_FILES = 0
    ALLOW_TEMPORARY_FILES = 1


class ExecutionContextAllocationStrategy(IntEnum):
    """How a context gets its scratch memory (``tensorrt.ExecutionContextAllocationStrategy``)."""

    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class Dims:
    """A shape that behaves like a tuple of ints, as ``tensorrt.Dims`` does.

    Like the real class it is indexable and has a length (so ``tuple(dims)`` works) but is not a
    ``tuple`` subclass: code that passes the fake but checks ``isinstance(x, tuple)`` would fail
    on real TensorRT.
    """

    MAX_DIMS = 8

    def __init__(self, shape: Iterable[int] = ()) -> None:
        self._dims = tuple(int(d) for d in shape)

    def __len__(self) -> int:
        return len(self._dims)

    def __getitem__(self, index: int) -> int:
        return self._dims[index]

    def __eq__(self, other: object) -> bool:
        try:
            return self._dims == tuple(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash(self._dims)

    def __repr__(self) -> str:
        return "(" + ", ".join(map(str, self._dims)) + ("," if len(self._dims) == 1 else "") + ")"

    __str__ = __repr__


class ILogger:
    """TensorRT's logger interface: subclass it and override :meth:`log`."""

    class Severity(IntEnum):
        """Message severity (``tensorrt.ILogger.Severity``)."""

        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        """Handle one message; the base class writes it to standard error."""
        print(f"[TRT] [{ILogger.Severity(int(severity)).name[0]}] {msg}", file=sys.stderr)


class Logger(ILogger):
    """A logger that prints messages at or above ``min_severity`` to standard error."""

    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        """Print the message if it is severe enough."""
        if int(severity) <= int(self.min_severity):
            super().log(severity, msg)
