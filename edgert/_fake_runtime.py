"""The one place production code reaches into :mod:`edgert.testing`: ``--runtime fake``.

``edgert inspect``, ``edgert bench``, ``edgert build`` and ``edgert store`` accept
``--runtime fake`` so that demos and CI can run a TensorRT flow without TensorRT. Only that
explicit request loads the fake module; nothing else in the package imports ``edgert.testing``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["fake_tensorrt_module"]


def fake_tensorrt_module() -> ModuleType:
    """The fake TensorRT module (:mod:`edgert.testing.fake_tensorrt`), loaded on request."""
    return importlib.import_module("edgert.testing.fake_tensorrt")
