"""The fake TensorRT's builder: ONNX model -> fake plan, with TensorRT's builder API names.

Its plans compute for real: the network is the ONNX model itself, carried inside the plan
(base64, in the function name ``edgert.onnx:<precision>:<model>``) and run through ONNX Runtime
when the plan executes, so a plan built here gives the ONNX model's outputs (rounded through
FP16 or BF16 when those flags were set, as reduced precision would). Profiles, flags, the timing
cache and the progress monitor behave like TensorRT's, failures included.

Every class, method, property and enum member name below is TensorRT's own, from the TensorRT
Python API reference (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/):
``Builder`` (``create_network``, ``create_builder_config``, ``create_optimization_profile``,
``build_serialized_network``; infer/Core/Builder.html), ``INetworkDefinition`` (``num_inputs``,
``num_outputs``, ``get_input``, ``get_output``, ``get_flag``; infer/Graph/Network.html),
``ITensor`` (``name``, ``shape``, ``dtype``), ``OnnxParser`` (``parse``, ``parse_from_file``,
``num_errors``, ``get_error``, ``clear_errors``; parsers/Onnx/pyOnnx.html) and ``ParserError``
(``desc``), ``IBuilderConfig`` (``set_flag``, ``get_flag``, ``clear_flag``, ``flags``,
``set_memory_pool_limit``, ``get_memory_pool_limit``, ``add_optimization_profile``,
``num_optimization_profiles``, ``create_timing_cache``, ``set_timing_cache``,
``get_timing_cache``, ``hardware_compatibility_level``, ``builder_optimization_level``,
``progress_monitor``, ``int8_calibrator``; infer/Core/BuilderConfig.html), ``BuilderFlag``,
``MemoryPoolType``, ``HardwareCompatibilityLevel``, ``IOptimizationProfile`` (``set_shape``,
``get_shape``; infer/Core/OptimizationProfile.html), ``ITimingCache`` (``serialize``,
``combine``, ``reset``), ``IHostMemory`` (buffer, ``nbytes``), ``IProgressMonitor``
(``phase_start``, ``step_complete``, ``phase_finish``; infer/Core/ProgressMonitor.html) and
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, and the INT8 calibrators of TensorRT <= 10
(``IInt8Calibrator``, ``IInt8EntropyCalibrator2``: ``get_batch_size``, ``get_batch``,
``read_calibration_cache``, ``write_calibration_cache``; infer/Int8/EntropyCalibrator2.html).
Enum values follow ``NvInfer.h`` of TensorRT
10.x. The lean bindings installed in CI have no builder, so these names cannot be checked there
automatically; ``tests/test_store_trt.py`` checks them against full TensorRT where it exists.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
from collections.abc import MutableMapping
from enum import IntEnum
from typing import Any, cast

import numpy as np

from edgert.testing._fake_trt_network import (
    PREFIX,
    INetworkDefinition,
    ITensor,
    NetworkDefinitionCreationFlag,
    OnnxParser,
    ParserError,
)
from edgert.testing._fake_trt_plan import FakeTensor, make_plan

__all__ = [
    "BUILDER_NAMES",
    "Builder",
    "BuilderFlag",
    "HardwareCompatibilityLevel",
    "IBuilderConfig",
    "IHostMemory",
    "IInt8Calibrator",
    "IInt8EntropyCalibrator2",
    "INetworkDefinition",
    "IOptimizationProfile",
    "IProgressMonitor",
    "ITensor",
    "ITimingCache",
    "MemoryPoolType",
    "NetworkDefinitionCreationFlag",
    "OnnxParser",
    "ParserError",
    "add_builder",
]

_ERROR, _WARNING, _INFO = 1, 2, 3


class BuilderFlag(IntEnum):
    """``tensorrt.BuilderFlag`` (the members edgert uses; values of TensorRT 10.x)."""

    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    VERSION_COMPATIBLE = 13
    EXCLUDE_LEAN_RUNTIME = 14
    BF16 = 17


class MemoryPoolType(IntEnum):
    """``tensorrt.MemoryPoolType`` (the workspace pool)."""

    WORKSPACE = 0


class HardwareCompatibilityLevel(IntEnum):
    """``tensorrt.HardwareCompatibilityLevel``."""

    NONE = 0
    AMPERE_PLUS = 1
    SAME_COMPUTE_CAPABILITY = 2


class IHostMemory(bytes):
    """Serialized data (a plan or a timing cache); supports the buffer protocol."""

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return len(self)


class IProgressMonitor:
    """Subclass it and override the three callbacks (as with TensorRT)."""

    def __init__(self) -> None:
        pass

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        """A phase began."""

    def step_complete(self, phase_name: str, step: int) -> bool:
        """A step finished; return False to cancel the build."""
        return True

    def phase_finish(self, phase_name: str) -> None:
        """A phase ended."""


class IOptimizationProfile:
    """(min, opt, max) shapes per dynamic input."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        """Set an input's shapes."""
        self._shapes[input] = tuple(tuple(int(d) for d in s) for s in (min, opt, max))

    def get_shape(self, input: str) -> list[tuple[int, ...]]:
        """An input's [min, opt, max] (empty if unset)."""
        return list(self._shapes.get(input, ()))


class IInt8Calibrator:
    """Base of INT8 calibrators (TensorRT <= 10); subclass a concrete one."""

    def __init__(self) -> None:
        pass

    def get_batch_size(self) -> int:
        """Samples per calibration batch."""
        raise NotImplementedError

    def get_batch(self, names: list[str]) -> list[int] | None:
        """Device addresses of the next batch's inputs, in ``names`` order; None when done."""
        raise NotImplementedError

    def read_calibration_cache(self) -> Any:
        """A cache from an earlier calibration, or None."""
        return None

    def write_calibration_cache(self, cache: Any) -> None:
        """Keep the cache for the next build."""


class IInt8EntropyCalibrator2(IInt8Calibrator):
    """The entropy calibrator TensorRT recommends for CNNs (same interface)."""


class ITimingCache:
    """Kernel timings; the fake's entries are the models built with it."""

    def __init__(self, entries: set[str]) -> None:
        self._entries = entries

    def serialize(self) -> IHostMemory:
        """The cache as bytes."""
        return IHostMemory(json.dumps({"fake_timing_cache": 1,
                                       "entries": sorted(self._entries)}).encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        """Merge another cache in."""
        self._entries |= input_cache._entries
        return True

    def reset(self) -> bool:
        """Empty the cache."""
        self._entries.clear()
        return True


class IBuilderConfig:
    """Build settings."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.flags = 0
        self._pools: dict[int, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._timing: ITimingCache | None = None
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.builder_optimization_level = 3
        self.progress_monitor: IProgressMonitor | None = None
        self._calibrator: IInt8Calibrator | None = None

    @property
    def int8_calibrator(self) -> IInt8Calibrator | None:
        """The INT8 calibrator (TensorRT <= 10)."""
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: IInt8Calibrator | None) -> None:
        if calibrator is not None and not isinstance(calibrator, IInt8Calibrator):
            raise TypeError("(): incompatible function arguments. The following argument types "
                            "are supported: (self: tensorrt.IBuilderConfig, arg0: "
                            "tensorrt.IInt8Calibrator) -> None")
        self._calibrator = calibrator

    def set_flag(self, flag: BuilderFlag) -> None:
        """Set a builder flag."""
        self.flags |= 1 << int(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        """Clear a builder flag."""
        self.flags &= ~(1 << int(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        """Whether a builder flag is set."""
        return bool(self.flags & (1 << int(flag)))

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        """Limit a memory pool."""
        self._pools[int(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        """A pool's limit (the fake's default: 1 GiB)."""
        return self._pools.get(int(pool), 1 << 30)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        """Add a profile; its index, or -1 if it is invalid."""
        for name, (lo, opt, hi) in profile._shapes.items():
            if not (len(lo) == len(opt) == len(hi)) or any(
                    not a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                self._log(_ERROR, f"IBuilderConfig::addOptimizationProfile: Error Code 3: API "
                                  f"Usage Error (fake_tensorrt: invalid profile of {name})")
                return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        """Profiles added."""
        return len(self._profiles)

    def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache | None:
        """A timing cache from bytes (empty bytes: a new cache); None if they are not one."""
        data = bytes(memoryview(serialized_timing_cache))
        if not data:
            return ITimingCache(set())
        try:
            doc = json.loads(data)
            return ITimingCache({str(e) for e in doc["entries"]})
        except Exception:
            self._log(_ERROR, "IBuilderConfig::createTimingCache: Error Code 1: Serialization "
                              "(fake_tensorrt: not a timing cache)")
            return None

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        """Use a timing cache."""
        self._timing = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        """The timing cache in use."""
        return self._timing


class Builder:
    """Builds fake plans from networks parsed from ONNX models."""

    _version = "10.8.0.43"

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def _log(self, severity: int, message: str) -> None:
        self._logger.log(severity, message)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        """An empty network."""
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        """Default build settings."""
        return IBuilderConfig(self._log)

    def create_optimization_profile(self) -> IOptimizationProfile:
        """An empty profile."""
        return IOptimizationProfile()

    def _check(self, network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        if network._model is None:
            return "Network must have at least one output"
        typed = network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        for flag in (BuilderFlag.FP16, BuilderFlag.BF16, BuilderFlag.INT8):
            if typed and config.get_flag(flag):
                return (f"fake_tensorrt: BuilderFlag.{flag.name} cannot be set for a strongly "
                        "typed network")
        dynamic = [t.name for t in network._inputs if -1 in t.shape]
        if dynamic and not config._profiles:
            return ("Network has dynamic or shape inputs, but no optimization profile has been "
                    "defined.")
        for index, profile in enumerate(config._profiles):
            for t in network._inputs:
                shapes = profile._shapes.get(t.name)
                if t.name in dynamic and shapes is None:
                    return f"Optimization profile {index} has no shapes for input {t.name}"
                if shapes is not None and any(
                        len(s) != len(t.shape) or any(d not in (-1, v)
                                                      for d, v in zip(t.shape, s, strict=True))
                        for s in shapes):
                    return (f"fake_tensorrt: profile {index} of {t.name} {shapes} does not fit "
                            f"its shape {t.shape}")
        return None

    def _progress(self, monitor: IProgressMonitor | None) -> bool:
        if monitor is None:
            return True
        phases = (("Building engine", None, 2), ("Tactic selection", "Building engine", 3))
        monitor.phase_start(*phases[0])
        monitor.phase_start(*phases[1])
        for step in range(3):
            if not monitor.step_complete("Tactic selection", step):
                monitor.phase_finish("Tactic selection")
                monitor.phase_finish("Building engine")
                return False
        monitor.phase_finish("Tactic selection")
        keep = monitor.step_complete("Building engine", 0) and \
            monitor.step_complete("Building engine", 1)
        monitor.phase_finish("Building engine")
        return keep

    def _calibrate(self, network: INetworkDefinition,
                   calibrator: Any) -> dict[str, float] | None:
        """Per-input ranges from the calibration cache, or from running the batches."""
        cached = calibrator.read_calibration_cache()
        if cached:
            try:
                return {str(k): float(v) for k, v in json.loads(bytes(cached))["amax"].items()}
            except Exception:
                self._log(_WARNING, "fake_tensorrt: the calibration cache is not one; "
                                    "calibrating again")
        names = [t.name for t in network._inputs]
        batch = int(calibrator.get_batch_size())
        amax = dict.fromkeys(names, 0.0)
        batches = 0
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            batches += 1
            for t, pointer in zip(network._inputs, pointers, strict=True):
                shape = (batch, *t.shape[1:])
                if t.dtype != "FLOAT" or any(d < 0 for d in shape):
                    continue
                count = int(np.prod(shape))
                raw = (ctypes.c_float * count).from_address(int(pointer))
                data = np.ctypeslib.as_array(raw)
                amax[t.name] = max(amax[t.name], float(np.abs(data).max()))
        if not batches:
            self._log(_ERROR, "IBuilder::buildSerializedNetwork: Error Code 2: Internal Error "
                              "(Calibration failure occurred with no scaling factors detected.)")
            return None
        calibrator.write_calibration_cache(json.dumps({"fake_calibration": 1,
                                                       "amax": amax}).encode())
        return amax

    def build_serialized_network(self, network: INetworkDefinition,
                                 config: IBuilderConfig) -> IHostMemory | None:
        """A serialized fake plan, or None (and an error logged)."""
        problem = self._check(network, config)
        if problem is not None:
            self._log(_ERROR, f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage "
                              f"Error ({problem})")
            return None
        if not self._progress(config.progress_monitor):
            self._log(_ERROR, "IBuilder::buildSerializedNetwork: Error Code 2: Internal Error "
                              "(Build cancelled by the progress monitor.)")
            return None
        model = network._model
        assert model is not None
        digest = hashlib.sha256(model).hexdigest()
        if config._timing is not None:
            config._timing._entries.add(digest)
        precision = ("fp16" if config.get_flag(BuilderFlag.FP16) else
                     "bf16" if config.get_flag(BuilderFlag.BF16) else "fp32")
        if config.get_flag(BuilderFlag.INT8) and config.int8_calibrator is not None:
            amax = self._calibrate(network, config.int8_calibrator)
            if amax is None:
                return None
            precision = "int8@" + ";".join(f"{k}={v:.9g}" for k, v in amax.items())
        profiles = config._profiles
        inputs = [FakeTensor(t.name, t.dtype, t.shape,
                             profiles=[cast(Any, p._shapes[t.name]) for p in profiles]
                             if -1 in t.shape else ())
                  for t in network._inputs]
        outputs = [FakeTensor(t.name, t.dtype, t._follows) for t in network._outputs]
        vc = config.get_flag(BuilderFlag.VERSION_COMPATIBLE) and not config.get_flag(
            BuilderFlag.EXCLUDE_LEAN_RUNTIME)
        plan = make_plan(
            inputs=inputs, outputs=outputs,
            function=PREFIX + precision + ":" + base64.b64encode(model).decode("ascii"),
            version=self._version, version_compatible=vc, device_memory_size=1 << 16,
            name=f"onnx-{digest[:12]}")
        self._log(_INFO, f"Engine generation completed ({len(plan):,} bytes, {precision})")
        return IHostMemory(plan)


#: Names :func:`add_builder` puts on a fake TensorRT module of the full flavour.
BUILDER_NAMES = ("Builder", "BuilderFlag", "HardwareCompatibilityLevel", "IBuilderConfig",
                 "IHostMemory", "IInt8Calibrator", "IInt8EntropyCalibrator2",
                 "INetworkDefinition", "IOptimizationProfile",
                 "IProgressMonitor", "ITensor", "ITimingCache", "MemoryPoolType",
                 "NetworkDefinitionCreationFlag", "OnnxParser", "ParserError")


def add_builder(namespace: MutableMapping[str, Any], *, flavour: str, version: str) -> None:
    """Give a fake TensorRT module (its namespace) the builder, if it imitates full TensorRT.

    Lean and dispatch runtimes have no builder, so their fakes get none.
    """
    if flavour != "full":
        for name in BUILDER_NAMES:
            namespace.pop(name, None)
        return
    for name in BUILDER_NAMES:
        namespace[name] = globals()[name]
    namespace["Builder"] = type("Builder", (Builder,), {
        "_version": version, "__doc__": Builder.__doc__, "__module__": __name__})

