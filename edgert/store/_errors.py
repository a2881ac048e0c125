"""Errors of the model lifecycle layer (building, caching, the model store, health gates).

They derive from :class:`edgert.errors.EdgeRTError` like every edgert error, and carry a hint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgert.errors import EdgeRTError

if TYPE_CHECKING:
    from edgert.store._health import HealthReport

__all__ = ["BuildError", "HealthCheckError", "StoreError"]


class BuildError(EdgeRTError):
    """TensorRT could not parse or build the network; ``log_lines`` holds its own messages."""

    def __init__(self, message: str, *, hint: str | None = None,
                 log_lines: tuple[str, ...] = ()) -> None:
        if log_lines:
            message = message + "\n  " + "\n  ".join(log_lines[-8:])
        super().__init__(message, hint=hint)
        self.log_lines = log_lines


class StoreError(EdgeRTError):
    """The model store's directory or manifest is not what it must be."""


class HealthCheckError(EdgeRTError):
    """A candidate model failed its activation gate; the current version stays active.

    Attributes:
        report: What was measured and why it failed.
    """

    def __init__(self, message: str, *, report: HealthReport, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report
