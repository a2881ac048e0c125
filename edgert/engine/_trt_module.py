"""Choosing the runtime: which TensorRT module (full, lean, dispatch or injected), or ONNX Runtime.

Features are detected by attribute presence, never by version number. An injected module (the
fake TensorRT) may declare ``EDGERT_REQUIRES_CUDA = False`` and ``EDGERT_FLAVOUR``; real modules
have neither, so they require CUDA and their flavour follows from their import name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgert._compat import StrEnum
from edgert.errors import InvalidArgumentError, NotSupportedError

__all__ = [
    "RUNTIME_CHOICES",
    "EngineFlavour",
    "flavour_of",
    "requires_cuda",
    "resolve_trt_module",
    "validate_runtime",
]


class EngineFlavour(StrEnum):
    """The runtime that loaded an engine."""

    FULL = "full"  # tensorrt: builder and runtime, runs any plan of its own version
    LEAN = "lean"  # tensorrt_lean: runs version-compatible plans of its own version
    DISPATCH = "dispatch"  # tensorrt_dispatch: runs version-compatible plans via their lean runtime
    ONNXRUNTIME = "onnxruntime"  # ONNX models, on the host


_MODULE_NAMES = {
    EngineFlavour.FULL: "tensorrt",
    EngineFlavour.LEAN: "tensorrt_lean",
    EngineFlavour.DISPATCH: "tensorrt_dispatch",
}
_PIP_NAMES = {
    EngineFlavour.FULL: "tensorrt (from NVIDIA's index, or JetPack's python3-libnvinfer)",
    EngineFlavour.LEAN: "tensorrt-lean-cu13 (pip install 'edgert[lean]')",
    EngineFlavour.DISPATCH: "tensorrt-dispatch-cu13",
}
#: Accepted values of ``Engine.load(runtime=...)``.
RUNTIME_CHOICES = ("auto", "full", "lean", "dispatch", "onnxruntime")


def validate_runtime(runtime: str) -> str:
    """Check a ``runtime=`` argument.

    Raises:
        InvalidArgumentError: Not one of :data:`RUNTIME_CHOICES`.
    """
    if not isinstance(runtime, str) or runtime not in RUNTIME_CHOICES:
        raise InvalidArgumentError(
            f"unknown runtime {runtime!r}",
            hint=f"use one of {', '.join(RUNTIME_CHOICES)}; to use a TensorRT module of your "
                 "own (e.g. the fake), pass it as trt_module=")
    return runtime


def flavour_of(module: ModuleType) -> EngineFlavour:
    """The flavour a TensorRT module provides (declared by injected modules, else by name)."""
    declared = getattr(module, "EDGERT_FLAVOUR", None)
    if declared is not None:
        return EngineFlavour(declared)
    root = getattr(module, "__name__", "").split(".")[0]
    for flavour, name in _MODULE_NAMES.items():
        if root == name:
            return flavour
    return EngineFlavour.FULL


def requires_cuda(module: ModuleType) -> bool:
    """False only for a module that declares it needs no GPU (the fake TensorRT)."""
    return getattr(module, "EDGERT_REQUIRES_CUDA", True) is not False


def _import(flavour: EngineFlavour) -> ModuleType:
    return importlib.import_module(_MODULE_NAMES[flavour])


def resolve_trt_module(
    runtime: str, trt_module: ModuleType | None
) -> tuple[ModuleType, EngineFlavour]:
    """The TensorRT module to use and its flavour.

    Raises:
        InvalidArgumentError: ``runtime`` names ONNX Runtime, or contradicts ``trt_module``.
        NotSupportedError: The requested module (or, for ``auto``, every one) fails to import.
    """
    if runtime == "onnxruntime":
        raise InvalidArgumentError(
            "runtime='onnxruntime' cannot load a TensorRT plan",
            hint="use runtime='auto' (or full/lean/dispatch) for .plan files")
    if trt_module is not None:
        flavour = flavour_of(trt_module)
        if runtime not in ("auto", flavour.value):
            raise InvalidArgumentError(
                f"runtime={runtime!r} contradicts the injected module, which is {flavour.value}",
                hint="leave runtime='auto' when passing trt_module=")
        return trt_module, flavour
    if runtime != "auto":
        flavour = EngineFlavour(runtime)
        try:
            return _import(flavour), flavour
        except Exception as err:  # a broken install raises OSError/RuntimeError, not ImportError
            raise NotSupportedError(
                f"runtime={runtime!r} needs the Python module {_MODULE_NAMES[flavour]!r}, which "
                f"cannot be imported: {err}",
                hint=f"install {_PIP_NAMES[flavour]}, or use runtime='auto'") from err
    failures = []
    for flavour in (EngineFlavour.FULL, EngineFlavour.LEAN, EngineFlavour.DISPATCH):
        try:
            return _import(flavour), flavour
        except Exception as err:
            failures.append(f"{_MODULE_NAMES[flavour]}: {err}")
    raise NotSupportedError(
        "no TensorRT runtime can be imported (" + "; ".join(failures) + ")",
        hint="install a TensorRT runtime, e.g. pip install 'edgert[lean]' for version-compatible "
             "plans, or load an ONNX model instead (runs on ONNX Runtime)")
