"""LoadOptions: how :meth:`~edgert.engine.Engine.load` reads, verifies and deserializes a model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TypedDict

from edgert._fileio import MAX_MODEL_BYTES
from edgert.engine._onnx import OnnxRuntimeOptions
from edgert.engine._trt_module import validate_runtime
from edgert.errors import InvalidArgumentError

__all__ = ["LoadOptions", "LoadOverrides"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadOptions:
    """Everything :meth:`~edgert.engine.Engine.load` takes besides the model, validated once.

    Attributes:
        runtime: ``auto``, ``full``, ``lean``, ``dispatch`` or ``onnxruntime``.
        device: CUDA device ordinal for TensorRT.
        sha256: Expected SHA-256 of the bytes (64 hex characters or 32 raw bytes).
        hmac_key: Key for an HMAC-SHA256 check (bytes, str, or a path to a key file); never
            shown in the options' repr.
        signature: The expected HMAC-SHA256 tag.
        allow_host_code: Let TensorRT run host code embedded in a version-compatible plan.
        plugins: Plugin shared libraries TensorRT should load first (stored as a tuple).
        temp_dir: Writable directory where TensorRT may unpack an embedded lean runtime.
        trt_module: A TensorRT module to use instead of importing one.
        onnx_options: How ONNX Runtime runs ONNX models (None: one thread, CPU).
        max_bytes: Refuse a model file larger than this.

    Raises:
        InvalidArgumentError: An unknown runtime, a device that is not an ordinal,
            ``onnx_options`` of another type, or one path given as ``plugins``.
    """

    runtime: str = "auto"
    device: int = 0
    sha256: str | bytes | None = None
    hmac_key: str | bytes | os.PathLike[str] | None = field(default=None, repr=False)
    signature: str | bytes | None = None
    allow_host_code: bool = False
    plugins: Sequence[str | os.PathLike[str]] = ()
    temp_dir: str | os.PathLike[str] | None = None
    trt_module: ModuleType | None = None
    onnx_options: OnnxRuntimeOptions | None = None
    max_bytes: int = MAX_MODEL_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime", validate_runtime(self.runtime))
        device = self.device
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise InvalidArgumentError(f"device must be a CUDA device ordinal >= 0, got {device!r}")
        if self.onnx_options is not None and not isinstance(self.onnx_options, OnnxRuntimeOptions):
            raise InvalidArgumentError("onnx_options must be an OnnxRuntimeOptions or None")
        if isinstance(self.plugins, (str, os.PathLike)):
            raise InvalidArgumentError("plugins must be a sequence of paths, not one path",
                                       hint="write plugins=[path]")
        object.__setattr__(self, "plugins", tuple(self.plugins))


class LoadOverrides(TypedDict, total=False):
    """The :class:`LoadOptions` fields as keyword arguments of ``Engine.load``."""

    runtime: str
    device: int
    sha256: str | bytes | None
    hmac_key: str | bytes | os.PathLike[str] | None
    signature: str | bytes | None
    allow_host_code: bool
    plugins: Sequence[str | os.PathLike[str]]
    temp_dir: str | os.PathLike[str] | None
    trt_module: ModuleType | None
    onnx_options: OnnxRuntimeOptions | None
    max_bytes: int
