"""Which TensorRT flavours import here (never creating a Runtime)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

__all__ = ["TENSORRT_FLAVOURS", "TensorRTFlavour", "find_tensorrt"]

#: TensorRT flavour -> Python module; ``runtime="auto"`` tries them in this order.
TENSORRT_FLAVOURS: dict[str, str] = {
    "full": "tensorrt",
    "lean": "tensorrt_lean",
    "dispatch": "tensorrt_dispatch",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorRTFlavour:
    """One TensorRT Python module and whether it imports.

    Attributes:
        flavour: ``full``, ``lean`` or ``dispatch``.
        module: The module name.
        version: Its ``__version__`` when it imports.
        error: Why it does not import (None when it does, or when it is simply not installed).
        installed: The module was found.
    """

    flavour: str
    module: str
    version: str | None
    error: str | None
    installed: bool


def find_tensorrt() -> list[TensorRTFlavour]:
    """Try to import each TensorRT flavour. Never raises and never creates a Runtime."""
    found: list[TensorRTFlavour] = []
    for flavour, name in TENSORRT_FLAVOURS.items():
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            found.append(TensorRTFlavour(flavour=flavour, module=name, version=None, error=None,
                                         installed=False))
            continue
        try:
            mod = importlib.import_module(name)
            version = str(getattr(mod, "__version__", "unknown"))
            found.append(TensorRTFlavour(flavour=flavour, module=name, version=version,
                                         error=None, installed=True))
        except Exception as err:  # a wheel for another CUDA major fails here with an OSError
            found.append(TensorRTFlavour(flavour=flavour, module=name, version=None,
                                         error=f"{type(err).__name__}: {err}", installed=True))
    return found
