"""Deserializing a TensorRT plan and describing its tensors (the only code that drives TensorRT).

Only the name-based API (TensorRT 8.6+) is used, and optional features are found by attribute
presence. No TensorRT ``Runtime`` is ever created when CUDA is unavailable: without a driver that
can crash the interpreter. The fake TensorRT, which declares it needs no GPU, is the exception.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._executable import ProfileShape, TensorLocation, TensorMode, TensorSpec
from edgert.engine._dtypes import from_trt_name
from edgert.engine._source import ModelHeader, ModelSource
from edgert.engine._trt_logger import LogBridge, TrtError, bridge_for
from edgert.engine._trt_module import EngineFlavour, requires_cuda
from edgert.errors import (
    EngineLoadError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    VersionMismatchError,
)

__all__ = ["TrtLoaded", "check_temp_dir", "describe_tensors", "deserialize_plan",
           "device_memory_bytes"]

_log = logging.getLogger("edgert.engine")

# Exact fragments of TensorRT's deserialization errors, as libnvinfer_lean 11.4 spells them
# (`strings libnvinfer_lean.so.11`); 8.6 - 10.x use the same words. Matched whole, never by
# a loose word: "stub" alone also matches CUDA's "libcuda.so is a stub" (issue 12).
_NEEDS_VC = ("Unexpected call to stub loadRunner",)
_HOST_CODE = ("getEngineHostCodeAllowed() is false",)
_OTHER_VERSION = ("Version tag does not match",
                  "The engine plan file is not compatible with this version of TensorRT")
_OTHER_GPU = ("The engine plan file is generated on an incompatible device",)
_TRUNCATED = ("plan.header.size == blobSize", "bufferSize >= minBufferSize",
              "cursor < blobSize", "cursor == blobSize")
_NOT_A_PLAN = ("Magic tag does not match",)
_OTHER_PLATFORM = ("Platform specific tag mismatch",)
# The code and category of a logged error: "IRuntime::deserializeCudaEngine: Error Code 2:
# OutOfMemory (...)" (format "%s: Error Code %d: %s (%.486s)" in libnvinfer_lean).
_LOGGED = re.compile(r"Error Code (\d+): ([A-Za-z][A-Za-z ]*) \(")
_FAILED_ALLOCATION = 5  # ErrorCode::kFAILED_ALLOCATION


@dataclass(slots=True)
class TrtLoaded:
    """A deserialized engine with the runtime that must outlive it and the log bridge."""

    trt: ModuleType
    runtime: Any
    engine: Any
    bridge: LogBridge

    def release(self) -> None:
        """Drop the engine, then the runtime (TensorRT needs the runtime to outlive engines)."""
        self.engine = None
        self.runtime = None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:4]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _check_cuda(label: str, device: int) -> None:
    import edgert.cuda  # imported here: `import edgert.engine` must not load CUDA

    if not edgert.cuda.is_available():
        raise NotSupportedError(
            f"cannot deserialize TensorRT plan {label}: no CUDA device "
            f"({edgert.cuda.unavailable_reason()})",
            hint="TensorRT plans run only on an NVIDIA GPU; `edgert inspect` still describes the "
                 "plan's header here, and an ONNX model of the network runs on ONNX Runtime")
    edgert.cuda.set_device(device)


def _configure(trt: ModuleType, runtime: Any, *, allow_host_code: bool,
               temp_dir: Path | None, plugins: Sequence[str | os.PathLike[str]],
               bridge: LogBridge) -> None:
    if allow_host_code:
        runtime.engine_host_code_allowed = True
    if temp_dir is not None:
        runtime.temporary_directory = str(temp_dir)
        flags = trt.TempfileControlFlag
        runtime.tempfile_control_flags = (1 << int(flags.ALLOW_IN_MEMORY_FILES)) | (
            1 << int(flags.ALLOW_TEMPORARY_FILES))
    if plugins:
        registry = (runtime.get_plugin_registry() if hasattr(runtime, "get_plugin_registry")
                    else trt.get_plugin_registry())
        for plugin in plugins:
            if registry.load_library(os.fspath(plugin)) is None:
                raise EngineLoadError(
                    f"TensorRT could not load plugin library {os.fspath(plugin)}",
                    log_lines=bridge.drain(),
                    hint="check the path and that the library was built for this TensorRT "
                         "version and CUDA")


def check_temp_dir(temp_dir: str | os.PathLike[str] | None) -> Path | None:
    """Validate ``temp_dir=``.

    Raises:
        InvalidArgumentError: It is not a writable directory.
    """
    if temp_dir is None:
        return None
    path = Path(os.fspath(temp_dir))
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"temp_dir {path} is not a writable directory",
            hint="TensorRT unpacks a plan's embedded lean runtime there: pick a writable "
                 "directory (e.g. a tmpfs such as /dev/shm or /run/user/UID on read-only robots)")
    return path


def _out_of_memory(lines: tuple[str, ...], records: tuple[TrtError, ...]) -> bool:
    if any(r.code == _FAILED_ALLOCATION for r in records):
        return True
    return any(m.group(2) == "OutOfMemory" for m in map(_LOGGED.search, lines) if m)


def _failure(lines: tuple[str, ...], records: tuple[TrtError, ...], *, label: str,
             path: str | None, header: ModelHeader, trt_version: str, flavour: EngineFlavour,
             allow_host_code: bool) -> EngineLoadError:
    """Classify a failed deserialization: by the recorder's error codes where they decide it,
    else by exact fragments of TensorRT's messages (recorded or logged)."""
    texts = lines + tuple(r.text for r in records)
    rv = _version_tuple(trt_version)
    pv = header.trt_version

    def said(fragments: tuple[str, ...]) -> bool:
        return any(f in t for t in texts for f in fragments)

    def make(cls: type[EngineLoadError], message: str, hint: str) -> EngineLoadError:
        return cls(message, hint=hint, path=path, log_lines=lines)

    if said(_NEEDS_VC):
        return make(VersionMismatchError,
            f"{label} is not a version-compatible plan, and the {flavour.value} runtime runs "
            "only version-compatible plans",
            hint="load it with runtime='full' (the TensorRT version that built it), or rebuild "
                 "it with trtexec --versionCompatible (BuilderFlag.VERSION_COMPATIBLE)")
    if not allow_host_code and said(_HOST_CODE):
        return make(EngineLoadError,
            f"{label} is a version-compatible plan that embeds host code, which is not allowed",
            hint="pass allow_host_code=True, but only for a plan whose sha256 or HMAC you "
                 "verified: its host code runs in this process")
    if (pv is not None and tuple(pv[:2]) != rv[:2]) or said(_OTHER_VERSION):
        built = header.trt_version_str or "another TensorRT version"
        hint = (f"rebuild the plan with TensorRT {trt_version} for this GPU, or build it "
                f"version-compatible (trtexec --versionCompatible) with TensorRT {rv[0]}.x and "
                "load it with runtime='lean' and allow_host_code=True")
        if pv is not None and pv[0] == rv[0] and tuple(pv[:2]) < rv[:2] and not allow_host_code:
            hint = ("if it was built version-compatible, pass allow_host_code=True (only for a "
                    "plan whose sha256 or HMAC you verified: its host code runs in this "
                    f"process); otherwise {hint}")
        return make(VersionMismatchError,
            f"{label} was built with TensorRT {built}; this runtime is {flavour.value} "
            f"TensorRT {trt_version} and cannot load it", hint=hint)
    if said(_OTHER_GPU):
        return make(EngineLoadError,
            f"{label} was built for another GPU (compute capability); this one cannot run it",
            hint="build the plan on (or for) this GPU, or build it hardware-compatible "
                 "(trtexec --hardwareCompatibilityLevel=ampere+) for Ampere and newer")
    if said(_TRUNCATED):
        return make(ModelFormatError,
            f"{label} is a truncated TensorRT plan ({header.size_bytes:,} bytes)",
            hint="copy the plan again and compare its size or sha256 with the original")
    if said(_NOT_A_PLAN):
        return make(ModelFormatError,
            f"TensorRT does not recognise {label} as a plan", hint="export the engine again "
            "(trtexec --saveEngine or IBuilder.build_serialized_network)")
    if said(_OTHER_PLATFORM):
        return make(EngineLoadError,
            f"{label} was built for another platform (operating system or CPU architecture)",
            hint="build the plan on (or for) the platform that runs it, e.g. on the Jetson "
                 "itself for aarch64 JetPack")
    if _out_of_memory(lines, records):
        return make(EngineLoadError,
            f"TensorRT ran out of memory deserializing {label}",
            hint="free GPU memory (other engines, pools, processes: see nvidia-smi) or load "
                 "a smaller plan; on Jetson the GPU shares the system's RAM")
    hint = ("the plan may be truncated or corrupted (compare its sha256 with the original), "
            "built for another GPU architecture, or need plugin libraries (plugins=[...])")
    if not allow_host_code:
        hint += "; a version-compatible plan also needs allow_host_code=True (trusted plans only)"
    return make(EngineLoadError, f"TensorRT could not deserialize {label}", hint=hint)


def deserialize_plan(
    src: ModelSource, header: ModelHeader, *, trt: ModuleType, flavour: EngineFlavour,
    device: int, allow_host_code: bool, plugins: Sequence[str | os.PathLike[str]],
    temp_dir: Path | None,
) -> TrtLoaded:
    """Create a runtime (after the CUDA check) and deserialize the plan.

    Raises:
        NotSupportedError: No CUDA device (real TensorRT modules only).
        EngineLoadError: Deserialization failed; the subclass and hint say why, ``log_lines``
            holds TensorRT's own messages.
    """
    label = src.label
    if requires_cuda(trt):
        _check_cuda(label, device)
    elif device < 0:
        raise InvalidArgumentError(f"device must be >= 0, got {device}")
    if allow_host_code:
        _log.info("allow_host_code=True: host code embedded in %s may run in this process", label)
    bridge = bridge_for(trt)
    bridge.drain()  # drop errors of earlier, unrelated calls on this thread
    trt_version = str(getattr(trt, "__version__", "unknown"))
    try:
        runtime = trt.Runtime(bridge.trt_logger)
    except Exception as err:
        raise EngineLoadError(
            f"TensorRT ({flavour.value} {trt_version}) could not create a runtime: {err}",
            log_lines=bridge.drain(), path=str(src.path) if src.path else None,
            hint="run `edgert doctor`: the CUDA driver may be too old for this TensorRT") \
            from err
    if runtime is None:
        raise EngineLoadError(f"TensorRT ({flavour.value}) could not create a runtime",
                              log_lines=bridge.drain(), hint="run `edgert doctor`")
    recorder = bridge.trt_recorder
    if recorder is not None and hasattr(runtime, "error_recorder"):
        # Engines and contexts made from this runtime report to it too (with error codes).
        runtime.error_recorder = recorder
    _configure(trt, runtime, allow_host_code=allow_host_code, temp_dir=temp_dir,
               plugins=plugins, bridge=bridge)
    try:
        engine = runtime.deserialize_cuda_engine(src.data)
    except Exception as err:  # bindings raise on some inputs instead of returning None
        bridge.emit(1, f"{type(err).__name__}: {err}")
        engine = None
    records = bridge.recorded()
    lines = bridge.drain()  # also raises what a callback caught (e.g. KeyboardInterrupt)
    if engine is None:
        raise _failure(lines, records, label=label, path=str(src.path) if src.path else None,
                       header=header, trt_version=trt_version, flavour=flavour,
                       allow_host_code=allow_host_code)
    return TrtLoaded(trt=trt, runtime=runtime, engine=engine, bridge=bridge)


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _profiles(engine: Any, name: str, count: int) -> tuple[ProfileShape, ...]:
    out = []
    for index in range(count):
        try:
            shapes = engine.get_tensor_profile_shape(name, index)
        except Exception:  # raised for inputs without a profile (static engines); none to report
            return ()
        if len(shapes) != 3:
            return ()
        lo, opt, hi = (_shape(s) for s in shapes)
        if any(d < 0 for d in lo + opt + hi):
            return ()
        out.append(ProfileShape(lo, opt, hi))
    return tuple(out)


def describe_tensors(engine: Any) -> tuple[TensorSpec, ...]:
    """Every I/O tensor of an ``ICudaEngine``, inputs first.

    Raises:
        EngineLoadError: The engine uses a data type edgert does not know.
    """
    count = int(engine.num_optimization_profiles)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for index in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name).name == "INPUT"
        dtype_name = engine.get_tensor_dtype(name).name
        element = from_trt_name(dtype_name)
        if element is None:
            raise EngineLoadError(
                f"tensor {name!r} has TensorRT data type {dtype_name}, which edgert does not know",
                hint="upgrade edgert, or rebuild the engine with a standard I/O type")
        shape = _shape(engine.get_tensor_shape(name))
        spec = TensorSpec(
            name=name, mode=TensorMode.INPUT if is_input else TensorMode.OUTPUT,
            dtype=element.dtype, shape=shape,
            # Static inputs have no profile to ask about (TensorRT would log an error).
            profiles=_profiles(engine, name, count) if is_input and -1 in shape else (),
            location=TensorLocation(engine.get_tensor_location(name).name.lower()),
            trt_dtype_name=element.trt_name, element_bits=element.bits)
        (inputs if is_input else outputs).append(spec)
    return tuple(inputs + outputs)


def device_memory_bytes(engine: Any) -> int | None:
    """Scratch memory one context needs (TensorRT 10.1+ name first, then the older one)."""
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if hasattr(engine, attr):
            return int(getattr(engine, attr))
    return None
