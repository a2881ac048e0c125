"""The fake TensorRT's error recorder interface (``IErrorRecorder``) and its error codes.

As in TensorRT, a runtime with an error recorder reports its errors to the recorder (with an
``ErrorCodeTRT``) instead of logging them; objects made from the runtime use the same recorder.
The code is the number TensorRT's own messages carry ("... Error Code 2: OutOfMemory (...)").
"""

from __future__ import annotations

import re
from enum import IntEnum

__all__ = ["ErrorCodeTRT", "IErrorRecorder", "code_of"]


class ErrorCodeTRT(IntEnum):
    """``tensorrt.ErrorCodeTRT`` (values as in the real bindings)."""

    SUCCESS = 0
    UNSPECIFIED_ERROR = 1
    INTERNAL_ERROR = 2
    INVALID_ARGUMENT = 3
    INVALID_CONFIG = 4
    FAILED_ALLOCATION = 5
    FAILED_INITIALIZATION = 6
    FAILED_EXECUTION = 7
    FAILED_COMPUTATION = 8
    INVALID_STATE = 9
    UNSUPPORTED_STATE = 10


class IErrorRecorder:
    """TensorRT's error recorder interface: subclass it and implement ``report_error`` and the
    query methods (``num_errors``, ``get_error_code``, ...), as with the real one."""

    def __init__(self) -> None:
        pass


_CODE = re.compile(r"Error Code (\d+): ")


def code_of(message: str) -> ErrorCodeTRT:
    """The error code a TensorRT-style message carries (UNSPECIFIED_ERROR if none or unknown)."""
    m = _CODE.search(message)
    if m is not None and int(m.group(1)) in ErrorCodeTRT._value2member_map_:
        return ErrorCodeTRT(int(m.group(1)))
    return ErrorCodeTRT.UNSPECIFIED_ERROR
