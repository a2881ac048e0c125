"""Models that live on the robot: build TensorRT plans, cache them, version them, swap them.

:class:`EngineBuilder` builds plans from ONNX with full TensorRT. :class:`EngineCache` (behind
:meth:`edgert.engine.Engine.from_onnx`) builds once per model, options, TensorRT and GPU, and
falls back to ONNX Runtime where nothing can build. :class:`ModelStore` keeps versions with a
manifest and activates a candidate only after it passed a health gate. See docs/lifecycle.md.
"""

from edgert.store._builder import EngineBuilder, ProgressCallback, has_builder
from edgert.store._cache import (
    CacheResult,
    CacheStatus,
    DeviceIdentity,
    EngineCache,
    default_cache_dir,
)
from edgert.store._calibrator import make_calibrator
from edgert.store._errors import BuildError, HealthCheckError, StoreError
from edgert.store._health import HealthPolicy, HealthReport, check_health, sample_inputs
from edgert.store._history import StoreEvent
from edgert.store._manifest import Manifest
from edgert.store._options import BuildOptions, HardwareCompatibility, format_shapes, parse_shapes
from edgert.store._store import ModelStore

__all__ = [
    "BuildError",
    "BuildOptions",
    "CacheResult",
    "CacheStatus",
    "DeviceIdentity",
    "EngineBuilder",
    "EngineCache",
    "HardwareCompatibility",
    "HealthCheckError",
    "HealthPolicy",
    "HealthReport",
    "Manifest",
    "ModelStore",
    "ProgressCallback",
    "StoreError",
    "StoreEvent",
    "check_health",
    "default_cache_dir",
    "format_shapes",
    "has_builder",
    "make_calibrator",
    "parse_shapes",
    "sample_inputs",
]
