"""Test helpers for the fake TensorRT module: a collecting logger, a runtime, raw binding."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgert.testing import fake_tensorrt as ft


class Collect(ft.ILogger):
    """A logger that keeps every message."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[int, str]] = []

    def log(self, severity: Any, msg: str) -> None:
        self.messages.append((int(severity), msg))

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s <= int(ft.ILogger.Severity.ERROR)]


def runtime(module: Any = ft) -> tuple[Any, Collect]:
    """A Runtime of ``module`` with a collecting logger."""
    logger = Collect()
    return module.Runtime(logger), logger


def bind(ctx: Any, name: str, array: np.ndarray) -> None:
    """Bind ``array``'s memory to tensor ``name`` of ``ctx``."""
    assert ctx.set_tensor_address(name, array.ctypes.data)
