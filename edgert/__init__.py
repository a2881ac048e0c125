"""edgert: predictable-latency neural network inference for NVIDIA edge hardware.

The public API is re-exported here; everything else is private. ``import edgert`` loads neither
CUDA nor TensorRT: those load on first use, so control processes that only need
:mod:`edgert.realtime` or :mod:`edgert.power` never pay for them.
"""

from edgert._version import __version__
from edgert.errors import (
    CommandError,
    CommandTimeoutError,
    ConcurrentUseError,
    CudaError,
    EdgeRTError,
    EngineLoadError,
    InferenceError,
    InputError,
    IntegrityError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    PermissionDeniedError,
    PoolExhausted,
    RealtimeError,
    RebootRequiredError,
    RequestTimeoutError,
    ResourceClosedError,
    VersionMismatchError,
)

__all__ = [
    "CommandError",
    "CommandTimeoutError",
    "ConcurrentUseError",
    "CudaError",
    "EdgeRTError",
    "EngineLoadError",
    "InferenceError",
    "InputError",
    "IntegrityError",
    "InvalidArgumentError",
    "ModelFormatError",
    "NotSupportedError",
    "PermissionDeniedError",
    "PoolExhausted",
    "RealtimeError",
    "RebootRequiredError",
    "RequestTimeoutError",
    "ResourceClosedError",
    "VersionMismatchError",
    "__version__",
]
