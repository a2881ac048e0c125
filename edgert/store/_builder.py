"""EngineBuilder: ONNX -> TensorRT plan with full TensorRT's builder.

Only full TensorRT (the ``tensorrt`` module) has a builder; lean and dispatch runtimes do not,
and features are found by attribute presence, never by version number: TensorRT 11 removed the
weak-typing flags (``BuilderFlag.FP16``/``BF16``/``INT8``) and INT8 calibrators, so asking for
them there raises :class:`~edgert.errors.NotSupportedError` with the migration path. Every
TensorRT name used here is in TensorRT's Python API reference (``tensorrt.Builder``,
``INetworkDefinition``, ``OnnxParser``, ``IBuilderConfig``, ``BuilderFlag``,
``IOptimizationProfile``, ``ITimingCache``, ``IProgressMonitor``,
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, ``MemoryPoolType.WORKSPACE``,
``HardwareCompatibilityLevel``): https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._executable import ProfileShape
from edgert._owner import Owner
from edgert.engine._onnx import PROFILES_METADATA_KEY
from edgert.engine._source import EngineFormat, Source, read_source, sniff
from edgert.engine._trt_logger import bridge_for
from edgert.engine._trt_module import requires_cuda
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.store._errors import BuildError
from edgert.store._files import atomic_write
from edgert.store._options import BuildOptions, HardwareCompatibility

__all__ = ["EngineBuilder", "ProgressCallback", "has_builder"]

#: ``callback(phase, step, steps, depth)``: a builder phase advanced; return False to cancel.
ProgressCallback = Callable[[str, int, int, int], "bool | None"]

_TRT11_PRECISION = ("TensorRT {v} has no BuilderFlag.{flag}: networks are strongly typed since "
                    "TensorRT 11")


def has_builder(trt: ModuleType | None) -> bool:
    """Whether ``trt`` can build plans (full TensorRT, or a fake with a builder)."""
    return trt is not None and hasattr(trt, "Builder") and hasattr(trt, "OnnxParser")


def _import_full() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except Exception as err:  # a broken install raises OSError/RuntimeError, not ImportError
        raise NotSupportedError(
            f"building a TensorRT plan needs full TensorRT (the 'tensorrt' module): {err}",
            hint="install TensorRT with its builder (JetPack's python3-libnvinfer, or NVIDIA's "
                 "pip index); lean and dispatch runtimes cannot build. ONNX models still run "
                 "on ONNX Runtime") from err


def _make_monitor(trt: ModuleType, callback: ProgressCallback) -> Any:
    # A class statement so pybind11's base initialiser runs (as for the logger bridge).
    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._depth: dict[str, int] = {}
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None,
                        num_steps: int) -> None:
            try:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self._steps[phase_name] = int(num_steps)
                callback(phase_name, 0, int(num_steps), depth)
            except Exception:  # never raise into TensorRT's C++ frames
                pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                keep = callback(phase_name, int(step) + 1, self._steps.get(phase_name, 0),
                                self._depth.get(phase_name, 0))
                return keep is not False
            except Exception:
                return True

        def phase_finish(self, phase_name: str) -> None:
            try:
                steps = self._steps.pop(phase_name, 0)
                callback(phase_name, steps, steps, self._depth.pop(phase_name, 0))
            except Exception:
                pass

    return _Monitor()


_Profiles = tuple[tuple[tuple[str, ProfileShape], ...], ...]


def _declared_profiles(data: bytes | memoryview) -> _Profiles:
    """The profile a model declares in its ``edgert.profiles`` metadata (read by ONNX Runtime)."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        meta = ort.InferenceSession(bytes(data), options, providers=["CPUExecutionProvider"]
                                    ).get_modelmeta().custom_metadata_map
        text = meta.get(PROFILES_METADATA_KEY)
    except Exception:  # no ONNX Runtime, or it cannot read the model: no declared profile
        return ()
    if not text:
        return ()
    try:
        declared = json.loads(text)
        profile = {name: (p["min"], p["opt"], p["max"]) for name, p in declared.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()
    profiles: _Profiles = BuildOptions(profiles=profile).profiles
    return profiles


class EngineBuilder(Owner):
    """Builds TensorRT plans from ONNX models with full TensorRT.

    Args:
        trt_module: A TensorRT module with a builder to use instead of importing ``tensorrt``
            (e.g. :mod:`edgert.testing.fake_tensorrt`).
        device: CUDA device to build for (the plan is tuned for this GPU).

    Raises:
        NotSupportedError: No builder (lean/dispatch only, or no TensorRT), or a real TensorRT
            and no CUDA device.
    """

    def __init__(self, *, trt_module: ModuleType | None = None, device: int = 0) -> None:
        trt = trt_module if trt_module is not None else _import_full()
        if not has_builder(trt):
            name = getattr(trt, "__name__", "this TensorRT module")
            raise NotSupportedError(
                f"{name} has no builder (Builder/OnnxParser): lean and dispatch runtimes only "
                "run plans", hint="build on a machine with full TensorRT, or let "
                "Engine.from_onnx fall back to ONNX Runtime")
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise InvalidArgumentError(f"device must be a CUDA device ordinal >= 0, got {device!r}")
        if requires_cuda(trt):
            import edgert.cuda  # not at import time: `import edgert.store` must not load CUDA

            if not edgert.cuda.is_available():
                raise NotSupportedError(
                    f"TensorRT builds need a CUDA device: {edgert.cuda.unavailable_reason()}",
                    hint="build on the target machine (first boot), or run the ONNX model on "
                         "ONNX Runtime here")
            edgert.cuda.set_device(device)
        self._trt = trt
        self._bridge = bridge_for(trt)
        self._bridge.drain()
        builder = trt.Builder(self._bridge.trt_logger)
        self._state: dict[str, Any] = {"builder": builder}
        self._own(self._state.clear, "EngineBuilder")

    @property
    def trt_module(self) -> ModuleType:
        """The TensorRT module that builds."""
        return self._trt

    @property
    def trt_version(self) -> str:
        """Its version string."""
        return str(getattr(self._trt, "__version__", "unknown"))

    def build(self, onnx: Source, options: BuildOptions | None = None, *,
              progress: ProgressCallback | None = None, calibrator: Any = None,
              model_path: str | os.PathLike[str] | None = None) -> bytes:
        """Parse an ONNX model and build a serialized plan.

        Args:
            onnx: Path to the ONNX model (external weights are found next to it) or its bytes.
            options: How to build (default :class:`BuildOptions` ()).
            progress: Called as phases advance (``IProgressMonitor``); return False to cancel.
            calibrator: An ``IInt8Calibrator`` object for implicit INT8 (TensorRT <= 10 only);
                needs ``options.int8`` (see :func:`make_calibrator`).
            model_path: Where the model's file is, when ``onnx`` is its bytes: external weights
                are looked up next to it.

        Returns:
            The plan's bytes.

        Raises:
            InvalidArgumentError: Not an ONNX model; a profile names an unknown input; a
                calibrator without ``int8``.
            NotSupportedError: This TensorRT lacks a requested feature.
            BuildError: The parser or the builder failed (TensorRT's messages attached).
            ResourceClosedError: The builder is closed.
        """
        self._check_open()
        options = options if options is not None else BuildOptions()
        if not isinstance(options, BuildOptions):
            raise InvalidArgumentError("options must be a BuildOptions")
        if calibrator is not None and not options.int8:
            raise InvalidArgumentError("a calibrator needs int8=True")
        src = read_source(onnx)
        label = str(model_path) if src.path is None and model_path is not None else src.label
        header = sniff(src.data, label)
        if header.format is not EngineFormat.ONNX:
            raise InvalidArgumentError(f"{label} is not an ONNX model",
                                       hint="the builder takes .onnx files")
        trt, builder = self._trt, self._state["builder"]
        self._bridge.drain()
        network = builder.create_network(self._network_flags(options))
        parser = trt.OnnxParser(network, self._bridge.trt_logger)
        # The bytes read (and checked) here are what is parsed; the path only locates external
        # weights.
        where = src.path if src.path is not None else model_path
        ok = parser.parse(bytes(src.data), os.fspath(where) if where is not None else None)
        if not ok:
            errors = tuple(str(e.desc() if hasattr(e, "desc") else e)
                           for e in (parser.get_error(i) for i in range(parser.num_errors)))
            raise BuildError(f"TensorRT's ONNX parser rejected {label}",
                             log_lines=errors + self._bridge.drain(),
                             hint="the parser's messages above say why; check the model with "
                                  "`polygraphy inspect model` or onnx.checker (unsupported "
                                  "operators need a plugin)")
        config = builder.create_builder_config()
        self._configure(config, options, calibrator)
        self._add_profiles(builder, network, config, options, label=label, data=src.data)
        cache = self._load_timing_cache(config, options)
        if progress is not None and hasattr(trt, "IProgressMonitor") and hasattr(
                config, "progress_monitor"):
            config.progress_monitor = _make_monitor(trt, progress)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(f"TensorRT could not build a plan from {label}",
                             log_lines=self._bridge.drain(),
                             hint="read TensorRT's messages above; a larger workspace_bytes or "
                                  "fewer precision flags often help")
        if cache is not None:
            self._save_timing_cache(config, options)
        return bytes(memoryview(serialized))

    def build_file(self, onnx: Source, output: str | os.PathLike[str],
                   options: BuildOptions | None = None, *,
                   progress: ProgressCallback | None = None, calibrator: Any = None) -> Path:
        """:meth:`build`, then write the plan atomically (temp file, fsync, rename) to ``output``.

        Raises:
            Everything :meth:`build` raises, and PermissionDeniedError/EdgeRTError when the
            output cannot be written.
        """
        plan = self.build(onnx, options, progress=progress, calibrator=calibrator)
        path = Path(os.fspath(output))
        atomic_write(path, plan)
        return path

    # -- configuration --------------------------------------------------------------------

    def _network_flags(self, options: BuildOptions) -> int:
        if not options.strongly_typed:
            return 0
        flag = getattr(getattr(self._trt, "NetworkDefinitionCreationFlag", None),
                       "STRONGLY_TYPED", None)
        if flag is None:
            raise NotSupportedError(f"TensorRT {self.trt_version} has no strongly typed networks",
                                    hint="strongly typed networks need TensorRT 9.1 or newer")
        return 1 << int(flag)

    def _flag(self, name: str) -> Any:
        flag = getattr(self._trt.BuilderFlag, name, None)
        if flag is None:
            hint = ("build a strongly typed network from a model converted to this precision "
                    "(ModelOpt AutoCast for FP16/BF16, Q/DQ nodes for INT8)"
                    if name in ("FP16", "BF16", "INT8") else
                    "this TensorRT version cannot build with this option")
            raise NotSupportedError(_TRT11_PRECISION.format(v=self.trt_version, flag=name)
                                    if name in ("FP16", "BF16", "INT8") else
                                    f"TensorRT {self.trt_version} has no BuilderFlag.{name}",
                                    hint=hint)
        return flag

    def _configure(self, config: Any, options: BuildOptions, calibrator: Any) -> None:
        trt = self._trt
        for wanted, name in ((options.fp16, "FP16"), (options.bf16, "BF16"),
                             (options.int8, "INT8"),
                             (options.version_compatible, "VERSION_COMPATIBLE"),
                             (options.exclude_lean_runtime, "EXCLUDE_LEAN_RUNTIME")):
            if wanted:
                config.set_flag(self._flag(name))
        if calibrator is not None:
            if not hasattr(config, "int8_calibrator"):
                raise NotSupportedError(
                    f"TensorRT {self.trt_version} has no INT8 calibrators",
                    hint="quantize the model explicitly (Q/DQ nodes, e.g. with ModelOpt) and "
                         "build it without a calibrator")
            try:
                config.int8_calibrator = calibrator
            except TypeError as err:
                raise InvalidArgumentError(
                    f"calibrator must be a {getattr(self._trt, '__name__', 'tensorrt')}"
                    f".IInt8Calibrator, got {type(calibrator).__name__}",
                    hint="make one with edgert.store.make_calibrator(trt, batches)") from err
        if options.workspace_bytes is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
        if options.hardware_compatibility is not HardwareCompatibility.NONE:
            levels = getattr(trt, "HardwareCompatibilityLevel", None)
            level = getattr(levels, str(options.hardware_compatibility).upper(), None)
            if level is None or not hasattr(config, "hardware_compatibility_level"):
                raise NotSupportedError(
                    f"TensorRT {self.trt_version} has no hardware compatibility level "
                    f"{options.hardware_compatibility}",
                    hint="AMPERE_PLUS needs TensorRT 8.6+, SAME_COMPUTE_CAPABILITY 10.x+")
            config.hardware_compatibility_level = level
        if options.optimization_level is not None:
            config.builder_optimization_level = options.optimization_level

    def _add_profiles(self, builder: Any, network: Any, config: Any, options: BuildOptions, *,
                      label: str, data: bytes | memoryview) -> None:
        inputs = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            inputs[str(tensor.name)] = tuple(int(d) for d in tensor.shape)
        dynamic = {n: s for n, s in inputs.items() if any(d < 0 for d in s)}
        profiles = options.profiles
        if dynamic and not profiles:
            profiles = _declared_profiles(data)
        if dynamic and not profiles:
            example = ";".join(
                f"{n}:" + ",".join(["x".join("1" if d < 0 else str(d) for d in s)] * 3)
                for n, s in dynamic.items())
            raise InvalidArgumentError(
                f"{label} has dynamic inputs ({', '.join(f'{n} {s}' for n, s in dynamic.items())})"
                " and no optimization profile was given (nor declared in its edgert.profiles "
                "metadata)",
                hint=f"give each dynamic input its MIN,OPT,MAX shapes, profiles={example!r} "
                     "with the sizes the robot uses in place of the 1s of the dynamic "
                     "dimensions, or declare them in the model's edgert.profiles metadata")
        for index, profile in enumerate(profiles):
            p = builder.create_optimization_profile()
            for name, shapes in profile:
                if name not in inputs:
                    raise InvalidArgumentError(
                        f"profile {index} names {name!r}, which is not an input of {label}",
                        hint=f"inputs: {', '.join(inputs)}")
                if len(shapes.min) != len(inputs[name]):
                    raise InvalidArgumentError(
                        f"profile {index} gives {name!r} rank {len(shapes.min)}; the model's "
                        f"input has shape {inputs[name]}")
                p.set_shape(name, shapes.min, shapes.opt, shapes.max)
            missing = set(dynamic) - {n for n, _ in profile}
            if missing:
                raise InvalidArgumentError(
                    f"profile {index} lacks dynamic inputs {sorted(missing)} of {label}")
            if config.add_optimization_profile(p) < 0:
                raise BuildError(f"TensorRT refused optimization profile {index}",
                                 log_lines=self._bridge.drain())

    def _load_timing_cache(self, config: Any, options: BuildOptions) -> Any:
        path = options.timing_cache
        if path is None:
            return None
        assert isinstance(path, Path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as err:
            raise InvalidArgumentError(f"cannot read timing cache {path}: {err.strerror or err}",
                                       hint="fix its permissions or give another path") from err
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            # A cache from another TensorRT or GPU: start afresh rather than fail the build.
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, True)
        return cache

    def _save_timing_cache(self, config: Any, options: BuildOptions) -> None:
        path = options.timing_cache
        assert isinstance(path, Path)
        cache = config.get_timing_cache()
        if cache is not None:
            atomic_write(path, bytes(memoryview(cache.serialize())))

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<EngineBuilder {getattr(self._trt, '__name__', '?')} {self.trt_version}{state}>"
