"""ONNX models on ONNX Runtime: loading, describing tensors, and options.

ONNX has no optimization profiles. A model may declare one in its metadata under the key
``edgert.profiles``: JSON ``{"input": {"min": [...], "opt": [...], "max": [...]}}``; the bundled
control policy does. Output dimensions that reuse an input's symbolic dimension name (``batch``)
follow that input; other dynamic output dimensions stay -1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

from edgert._compat import StrEnum
from edgert._executable import ProfileShape, TensorLocation, TensorMode, TensorSpec
from edgert.engine._dtypes import from_onnx_type, needs_ml_dtypes
from edgert.engine._onnx_external import external_locations
from edgert.engine._onnx_graph import GraphBoundary, read_boundary
from edgert.engine._source import ModelHeader, ModelSource
from edgert.errors import (
    EdgeRTError,
    EngineLoadError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    VersionMismatchError,
)

__all__ = ["PROFILES_METADATA_KEY", "OnnxLoaded", "OnnxOptimization", "OnnxRuntimeOptions",
           "load_onnx"]

#: ONNX metadata key under which a model may declare its (min, opt, max) input profiles.
PROFILES_METADATA_KEY = "edgert.profiles"
_IR_RE = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")

# Per output, per dimension: a static size, (input name, axis) to follow, or None (unknown);
# None for the whole output when its rank is unknown.
OutputDims = dict[str, tuple[int | tuple[str, int] | None, ...] | None]


class OnnxOptimization(StrEnum):
    """ONNX Runtime graph optimization level."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


@dataclass(frozen=True, kw_only=True, slots=True)
class OnnxRuntimeOptions:
    """How ONNX Runtime runs a model.

    Attributes:
        intra_op_num_threads: Threads inside one operator; 1 keeps a control loop on one core.
        inter_op_num_threads: Threads across operators (sequential execution uses 1).
        providers: Execution providers in order of preference.
        optimization: Graph optimization level.
        spin_wait: Let worker threads spin between operators (lower latency with more than one
            thread, at the price of a busy core).
    """

    intra_op_num_threads: int = 1
    inter_op_num_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    optimization: OnnxOptimization = OnnxOptimization.ALL
    spin_wait: bool = False

    def __post_init__(self) -> None:
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
        if not self.providers or not all(isinstance(p, str) for p in self.providers):
            raise InvalidArgumentError(
                f"providers must be a non-empty tuple of provider names, got {self.providers!r}")
        object.__setattr__(self, "providers", tuple(self.providers))
        try:
            object.__setattr__(self, "optimization", OnnxOptimization(self.optimization))
        except ValueError as err:
            raise InvalidArgumentError(
                f"unknown optimization {self.optimization!r}",
                hint=f"use one of {', '.join(o.value for o in OnnxOptimization)}") from err


@dataclass(slots=True)
class OnnxLoaded:
    """An ONNX Runtime session and what edgert derived from it."""

    ort: ModuleType
    session: Any
    tensors: tuple[TensorSpec, ...]
    output_dims: OutputDims
    onnx_types: dict[str, int]


def _import_ort() -> ModuleType:
    try:
        import onnxruntime
    except Exception as err:
        raise NotSupportedError(
            f"ONNX models need onnxruntime, which cannot be imported: {err}",
            hint="pip install 'edgert[onnx]'") from err
    return cast(ModuleType, onnxruntime)


def _session_options(ort: ModuleType, options: OnnxRuntimeOptions) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_num_threads
    so.inter_op_num_threads = options.inter_op_num_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # errors come back as exceptions; keep a control loop's stderr quiet
    so.graph_optimization_level = {
        OnnxOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        OnnxOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        OnnxOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        OnnxOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.optimization]
    spin = "1" if options.spin_wait else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


def _load_error(err: Exception, label: str, path: str | None, ort: ModuleType) -> EngineLoadError:
    text = str(err).strip()
    lines = (text,)
    m = _IR_RE.search(text)
    if m:
        return VersionMismatchError(
            f"{label} has ONNX IR version {m.group(1)}; ONNX Runtime {ort.__version__} reads "
            f"IR version {m.group(2)} at most", path=path, log_lines=lines,
            hint=f"re-save it with model.ir_version = {m.group(2)} (e.g. onnx.save after setting "
                 "it; its opset must be one that IR version allows), or upgrade onnxruntime")
    if "opset" in text.lower() and ("support" in text.lower() or "development" in text.lower()):
        return VersionMismatchError(
            f"{label} uses an operator set ONNX Runtime {ort.__version__} does not support",
            path=path, log_lines=lines,
            hint="re-export with a lower opset (onnx.version_converter), or upgrade onnxruntime")
    if "protobuf parsing failed" in text or "No graph was found" in text:
        return ModelFormatError(
            f"ONNX Runtime cannot parse {label} as an ONNX model", path=path, log_lines=lines,
            hint="the file is corrupted or truncated: export or copy it again")
    if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
        return EngineLoadError(
            f"ONNX Runtime {ort.__version__} has no kernel for an operator of {label} with "
            "these types", path=path, log_lines=lines,
            hint="ONNX Runtime's words above name the node: re-export it with types its "
                 "CPU kernels support (e.g. float32 instead of a narrow type), or upgrade "
                 "onnxruntime")
    return EngineLoadError(
        f"ONNX Runtime could not load {label}", path=path, log_lines=lines,
        hint="check the model with onnx.checker.check_model(); custom operators (domains "
             "other than ONNX's own) are not supported")


def _dims(shape: Any) -> list[int | str | None]:
    return [d if isinstance(d, (int, str)) else None for d in (shape or [])]


_PROFILE_HINT = 'write JSON like {"input": {"min": [1, 48], "opt": [1, 48], "max": [256, 48]}}'


def _profiles(session: Any, label: str, path: str | None) -> dict[str, ProfileShape]:
    raw = session.get_modelmeta().custom_metadata_map.get(PROFILES_METADATA_KEY)
    if raw is None:
        return {}
    try:
        return {name: ProfileShape(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                for name, p in json.loads(raw).items()}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError,
            InvalidArgumentError) as err:
        raise ModelFormatError(
            f"{label} has malformed {PROFILES_METADATA_KEY} metadata: {err}", path=path,
            hint=_PROFILE_HINT) from err


def _element(arg: Any, label: str) -> Any:
    element = from_onnx_type(arg.type)
    if element is not None:
        return element
    wanted = needs_ml_dtypes(arg.type)
    if wanted is not None:
        raise NotSupportedError(
            f"{label}: tensor {arg.name!r} has type {arg.type}, which numpy lacks; edgert "
            f"reads and writes it as ml_dtypes.{wanted}, and ml_dtypes is not installed",
            hint="pip install ml_dtypes (or 'edgert[onnx]')")
    raise EngineLoadError(
        f"{label}: tensor {arg.name!r} has type {arg.type}, which edgert cannot pass to ONNX "
        "Runtime", path=label,
        hint="edgert passes tensors (every numeric ONNX type, bool and string); give the model "
             "tensor inputs and outputs (sequences and maps are not supported)")


def _describe(session: Any, label: str, boundary: GraphBoundary | None,
              path: str | None) -> tuple[tuple[TensorSpec, ...], OutputDims, dict[str, int]]:
    profiles = _profiles(session, label, path)
    specs: list[TensorSpec] = []
    symbols: dict[str, tuple[str, int]] = {}
    output_dims: OutputDims = {}
    onnx_types: dict[str, int] = {}
    groups = ((TensorMode.INPUT, False, session.get_inputs()),
              (TensorMode.INPUT, True, session.get_overridable_initializers()),
              (TensorMode.OUTPUT, False, session.get_outputs()))
    for mode, optional, args in groups:
        output = mode is TensorMode.OUTPUT
        for arg in args:
            element = _element(arg, label)
            onnx_types[arg.name] = element.onnx_type
            dims = _dims(arg.shape)
            # ORT reports [] both for a 0-d tensor and for one whose rank is not declared;
            # only the graph itself says which (a 0-d tensor has an empty shape field).
            unknown_rank = not dims and not optional and (
                boundary is None or boundary.unknown_rank(arg.name, output=output)
                or arg.name not in (boundary.outputs if output else boundary.inputs))
            shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
            if not output:
                for axis, d in enumerate(dims):
                    if isinstance(d, str):
                        symbols.setdefault(d, (arg.name, axis))
            else:
                output_dims[arg.name] = None if unknown_rank else tuple(
                    d if isinstance(d, int) and d >= 0 else symbols.get(d) if isinstance(d, str)
                    else None for d in dims)
            profile = profiles.get(arg.name) if not output else None
            try:
                specs.append(TensorSpec(
                    name=arg.name, mode=mode, dtype=element.dtype, shape=shape,
                    profiles=(profile,) if profile is not None else (),
                    location=TensorLocation.HOST, trt_dtype_name=element.trt_name,
                    element_bits=element.bits, unknown_rank=unknown_rank, optional=optional,
                    dim_names=tuple(d if isinstance(d, str) else "" for d in dims)
                    if any(isinstance(d, str) for d in dims) else ()))
            except InvalidArgumentError as err:
                if profile is None:
                    raise
                # The metadata is part of the file: a profile that does not fit the tensor is a
                # malformed model, not a bad argument of the caller.
                raise ModelFormatError(
                    f"{label} has malformed {PROFILES_METADATA_KEY} metadata for input "
                    f"{arg.name!r}: {err.message}", path=path, hint=_PROFILE_HINT) from err
    return tuple(specs), output_dims, onnx_types


def _refuse_external_data(src: ModelSource) -> None:
    """ONNX Runtime would read external weight files that no check covers: refuse the model."""
    try:
        names = external_locations(src.data)
    except ValueError:
        return  # not a well-formed ModelProto: ONNX Runtime's own refusal says so
    if names:
        raise EngineLoadError(
            f"{src.label} keeps its weights in other files ({', '.join(names)}): ONNX Runtime "
            "would read them past edgert's integrity checks (a sha256 or signature covers only "
            "the .onnx file), and a model given as bytes would look for them in the working "
            "directory", path=str(src.path) if src.path is not None else None,
            hint="save the weights inside the model (onnx.save_model(model, path, "
                 "save_as_external_data=False); up to 2 GB), or build a TensorRT plan from it "
                 "(Engine.from_onnx / edgert build), which embeds them")


def load_onnx(src: ModelSource, header: ModelHeader, options: OnnxRuntimeOptions) -> OnnxLoaded:
    """Create an ONNX Runtime session for the model.

    Raises:
        NotSupportedError: onnxruntime is missing, or a requested provider is unavailable.
        VersionMismatchError: IR version or opset too new for this ONNX Runtime.
        ModelFormatError: ONNX Runtime cannot parse it, or its edgert metadata is malformed.
        EngineLoadError: Any other load failure, with ONNX Runtime's message in ``log_lines``.
    """
    ort = _import_ort()
    available = set(ort.get_available_providers())
    missing = [p for p in options.providers if p not in available]
    if missing:
        raise NotSupportedError(
            f"ONNX Runtime {ort.__version__} lacks execution provider(s) {', '.join(missing)}",
            hint=f"available here: {', '.join(sorted(available))}")
    path = str(src.path) if src.path is not None else None
    _refuse_external_data(src)
    try:
        session = ort.InferenceSession(bytes(src.data), sess_options=_session_options(ort, options),
                                       providers=list(options.providers))
    except Exception as err:  # ORT raises its own pybind exception types
        raise _load_error(err, src.label, path, ort) from err
    try:
        tensors, output_dims, onnx_types = _describe(session, src.label,
                                                     read_boundary(src.data), path)
    except EdgeRTError:
        raise
    except Exception as err:  # e.g. names or metadata that are not UTF-8 in a damaged file
        raise ModelFormatError(
            f"ONNX Runtime read {src.label} but cannot describe its tensors "
            f"({type(err).__name__}: {err})", path=path,
            hint="the model's names or metadata are damaged: export or copy it again") from err
    return OnnxLoaded(ort=ort, session=session, tensors=tensors, output_dims=output_dims,
                      onnx_types=onnx_types)
