"""Engines: load TensorRT plans (full, lean or dispatch runtime) and ONNX models, verify their
integrity, describe their tensors, and make the executables that sessions drive.

``import edgert.engine`` imports neither TensorRT, ONNX Runtime nor CUDA; they load when a model
of their kind is loaded.
"""

from edgert._executable import (
    Executable,
    OutputAllocator,
    Placement,
    ProfileShape,
    TensorLocation,
    TensorMode,
    TensorSpec,
)
from edgert.engine._engine import Engine
from edgert.engine._integrity import SIDECAR_SUFFIX, IntegrityStatus
from edgert.engine._load_options import LoadOptions
from edgert.engine._onnx import PROFILES_METADATA_KEY, OnnxOptimization, OnnxRuntimeOptions
from edgert.engine._onnx_executable import OnnxExecutable
from edgert.engine._source import PLAN_MAGIC, EngineFormat, ModelHeader, read_model_header
from edgert.engine._trt_executable import TensorRTExecutable
from edgert.engine._trt_logger import LOGGER_NAME as TENSORRT_LOGGER_NAME
from edgert.engine._trt_module import RUNTIME_CHOICES, EngineFlavour

__all__ = [
    "PLAN_MAGIC",
    "PROFILES_METADATA_KEY",
    "RUNTIME_CHOICES",
    "SIDECAR_SUFFIX",
    "TENSORRT_LOGGER_NAME",
    "Engine",
    "EngineFlavour",
    "EngineFormat",
    "Executable",
    "IntegrityStatus",
    "LoadOptions",
    "ModelHeader",
    "OnnxExecutable",
    "OnnxOptimization",
    "OnnxRuntimeOptions",
    "OutputAllocator",
    "Placement",
    "ProfileShape",
    "TensorLocation",
    "TensorMode",
    "TensorRTExecutable",
    "TensorSpec",
    "read_model_header",
]
