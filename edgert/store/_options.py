"""Build options: what a TensorRT plan is built with, and the trtexec-like shape spec.

A profile spec names one input's (min, opt, max) shapes the way trtexec writes a shape:
``obs:1x48,1x48,256x48`` (name, colon, three ``x``-separated shapes). Several inputs are
separated by ``;`` or whitespace: ``"a:1x3,4x3,8x3; b:1,4,8"``. A single shape (``obs:4x48``)
means min = opt = max.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert._compat import StrEnum
from edgert._executable import ProfileShape
from edgert.errors import InvalidArgumentError

__all__ = ["BuildOptions", "HardwareCompatibility", "format_shapes", "parse_shapes"]

_NAME_SHAPES = re.compile(r"^(?P<name>[^:\s]+):(?P<shapes>[0-9x,]+)$")


class HardwareCompatibility(StrEnum):
    """``IBuilderConfig.hardware_compatibility_level``: which GPUs a plan may run on."""

    NONE = "none"  # only GPUs of the building GPU's compute capability (fastest)
    AMPERE_PLUS = "ampere_plus"  # any Ampere or newer GPU (slower kernels)
    SAME_COMPUTE_CAPABILITY = "same_compute_capability"  # any GPU of the same CC


def _shape(text: str, where: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split("x"))
    except ValueError:
        raise InvalidArgumentError(f"bad shape {text!r} in {where!r}",
                                   hint="write shapes like 1x48 (dimensions joined by x)") from None
    if not dims or any(d < 0 for d in dims):
        raise InvalidArgumentError(f"bad shape {text!r} in {where!r}")
    return dims


def parse_input_shapes(spec: str) -> dict[str, tuple[int, ...]]:
    """Parse trtexec's ``--shapes``: ``images:1x3x320x320,state:2x1x128`` (one shape per input,
    entries joined by commas or spaces).

    Raises:
        InvalidArgumentError: The spec is malformed or names an input twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"empty shape spec {spec!r}",
                                   hint="write e.g. images:1x3x320x320,state:2x1x128")
    out: dict[str, tuple[int, ...]] = {}
    for entry in re.split(r"[,;\s]+", spec.strip()):
        if not entry:
            continue
        name, colon, dims = entry.rpartition(":")
        if not colon or not name or not dims:
            raise InvalidArgumentError(
                f"cannot read input shape {entry!r}",
                hint="write NAME:SHAPE with shapes like 1x3x320x320, e.g. images:1x3x320x320")
        if name in out:
            raise InvalidArgumentError(f"input {name!r} appears twice in {spec!r}")
        out[name] = _shape(dims, entry)
    return out


def parse_shapes(spec: str) -> dict[str, ProfileShape]:
    """Parse a compact profile spec (see the module documentation).

    Raises:
        InvalidArgumentError: The spec is malformed, ranks differ, or min <= opt <= max fails.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"empty shape spec {spec!r}",
                                   hint="write e.g. obs:1x48,1x48,256x48")
    out: dict[str, ProfileShape] = {}
    for entry in re.split(r"[;\s]+", spec.strip()):
        if not entry:
            continue
        m = _NAME_SHAPES.match(entry)
        if m is None:
            raise InvalidArgumentError(
                f"cannot read shape spec {entry!r}",
                hint="write NAME:MIN,OPT,MAX with shapes like 1x48, e.g. obs:1x48,1x48,256x48")
        name = m["name"]
        shapes = [_shape(s, entry) for s in m["shapes"].split(",")]
        if len(shapes) == 1:
            shapes *= 3
        if len(shapes) != 3:
            raise InvalidArgumentError(f"{entry!r} has {len(shapes)} shapes; give 1 or 3 "
                                       "(min,opt,max)")
        if name in out:
            raise InvalidArgumentError(f"input {name!r} appears twice in {spec!r}")
        out[name] = _profile(name, *shapes)
    return out


def _profile(name: str, lo: tuple[int, ...], opt: tuple[int, ...],
             hi: tuple[int, ...]) -> ProfileShape:
    if not len(lo) == len(opt) == len(hi):
        raise InvalidArgumentError(f"min/opt/max of {name!r} have different ranks")
    if any(not a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
        raise InvalidArgumentError(f"profile of {name!r} needs min <= opt <= max in every "
                                   f"dimension, got {lo}, {opt}, {hi}")
    return ProfileShape(lo, opt, hi)


def format_shapes(profile: Mapping[str, ProfileShape]) -> str:
    """The compact spec of one profile (inverse of :func:`parse_shapes`)."""
    def dims(s: tuple[int, ...]) -> str:
        return "x".join(map(str, s))
    return ";".join(f"{n}:{dims(p.min)},{dims(p.opt)},{dims(p.max)}"
                    for n, p in sorted(profile.items()))


def _normalize_profiles(value: Any) -> tuple[tuple[tuple[str, ProfileShape], ...], ...]:
    if value is None or value == ():
        return ()
    items: Iterable[Any] = [value] if isinstance(value, (str, Mapping)) else value
    result = []
    for item in items:
        parsed = parse_shapes(item) if isinstance(item, str) else dict(item)
        profile = []
        for name, given in sorted(parsed.items()):
            shapes = given
            if not isinstance(given, ProfileShape):
                try:
                    lo, opt, hi = (tuple(int(d) for d in s) for s in given)
                except (TypeError, ValueError):
                    raise InvalidArgumentError(
                        f"profile of {name!r} must be (min, opt, max) shapes") from None
                shapes = _profile(name, lo, opt, hi)
            profile.append((str(name), shapes))
        result.append(tuple(profile))
    return tuple(result)


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How to build a TensorRT plan from an ONNX model (trtexec's build flags, typed).

    Args:
        fp16: Allow FP16 kernels (``BuilderFlag.FP16``; weakly typed networks, TensorRT <= 10).
        bf16: Allow BF16 kernels (``BuilderFlag.BF16``; TensorRT <= 10).
        int8: Allow INT8 kernels (``BuilderFlag.INT8``): explicit quantization from the ONNX
            model's Q/DQ nodes, or a calibrator given to :meth:`EngineBuilder.build`.
        strongly_typed: Build a strongly typed network (types come from the ONNX model;
            ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; always on in TensorRT 11).
        profiles: Optimization profiles: compact specs (``"obs:1x48,1x48,256x48"``), mappings
            ``{input: (min, opt, max)}``, or a sequence of either (one per profile).
        workspace_bytes: Limit of the builder's workspace memory pool (None: TensorRT's default).
        version_compatible: Build a plan that later TensorRT runtimes of the same major version
            can run (``BuilderFlag.VERSION_COMPATIBLE``); it embeds a lean runtime, which is
            host code: loading it needs ``allow_host_code=True``.
        exclude_lean_runtime: With ``version_compatible``, leave the lean runtime out of the plan
            (``BuilderFlag.EXCLUDE_LEAN_RUNTIME``); the loading side supplies one.
        hardware_compatibility: Which GPUs the plan may run on (:class:`HardwareCompatibility`).
        optimization_level: ``builder_optimization_level`` 0-5 (None: TensorRT's default, 3).
        timing_cache: File that keeps TensorRT's kernel timings between builds (read if present,
            written after each build). Not part of the engine cache key: it speeds builds up
            and does not change what a plan computes.

    Raises:
        InvalidArgumentError: Contradictory or malformed options.
    """

    fp16: bool = False
    bf16: bool = False
    int8: bool = False
    strongly_typed: bool = False
    profiles: Any = ()
    workspace_bytes: int | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: HardwareCompatibility | str = HardwareCompatibility.NONE
    optimization_level: int | None = None
    timing_cache: Path | str | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("fp16", "bf16", "int8", "strongly_typed", "version_compatible",
                     "exclude_lean_runtime"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be True or False")
        object.__setattr__(self, "profiles", _normalize_profiles(self.profiles))
        try:
            object.__setattr__(self, "hardware_compatibility",
                               HardwareCompatibility(self.hardware_compatibility))
        except ValueError:
            raise InvalidArgumentError(
                f"unknown hardware_compatibility {self.hardware_compatibility!r}",
                hint="use " + ", ".join(h.value for h in HardwareCompatibility)) from None
        if self.strongly_typed and (self.fp16 or self.bf16 or self.int8):
            raise InvalidArgumentError(
                "fp16/bf16/int8 flags contradict strongly_typed: a strongly typed network takes "
                "its precisions from the ONNX model",
                hint="convert the model to the precision you want (e.g. ModelOpt AutoCast, or "
                     "Q/DQ nodes) and build it strongly typed, or drop strongly_typed")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise InvalidArgumentError("exclude_lean_runtime needs version_compatible=True")
        ws = self.workspace_bytes
        if ws is not None and (isinstance(ws, bool) or not isinstance(ws, int) or ws <= 0):
            raise InvalidArgumentError(f"workspace_bytes must be a positive int, got {ws!r}")
        lvl = self.optimization_level
        if lvl is not None and (isinstance(lvl, bool) or not isinstance(lvl, int)
                                or not 0 <= lvl <= 5):
            raise InvalidArgumentError(f"optimization_level must be 0..5, got {lvl!r}")
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))

    @property
    def embeds_host_code(self) -> bool:
        """Whether plans built with these options carry a lean runtime (host code)."""
        return self.version_compatible and not self.exclude_lean_runtime

    def key_fields(self) -> dict[str, Any]:
        """Everything that changes what a plan is, as JSON-ready values (the cache key's part)."""
        return {
            "fp16": self.fp16, "bf16": self.bf16, "int8": self.int8,
            "strongly_typed": self.strongly_typed,
            "profiles": [format_shapes(dict(p)) for p in self.profiles],
            "workspace_bytes": self.workspace_bytes,
            "version_compatible": self.version_compatible,
            "exclude_lean_runtime": self.exclude_lean_runtime,
            "hardware_compatibility": str(self.hardware_compatibility),
            "optimization_level": self.optimization_level,
        }

    def describe(self) -> str:
        """One line for logs and manifests."""
        return json.dumps(self.key_fields(), sort_keys=True)
