"""EngineBuilder and `edgert build` through the fake TensorRT builder (CI tier)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.cli import main
from edgert.engine import Engine
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.session import InferenceSession
from edgert.store import BuildError, BuildOptions, EngineBuilder, format_shapes, parse_shapes
from edgert.testing import fake_tensorrt as ft

MODEL = models.bundled_model_path()
SHAPES = "obs:1x48,4x48,256x48"
OBS = np.random.default_rng(3).standard_normal((4, 48)).astype(np.float32)


def _run(plan: bytes) -> np.ndarray:
    with Engine.load(plan, trt_module=ft, allow_host_code=True) as engine, \
            InferenceSession(engine, outputs="copy") as session:
        return np.asarray(session.infer({"obs": OBS})["actions"])


class _Recording:
    """Wraps the fake builder's config to record what the EngineBuilder set on it."""

    def __init__(self) -> None:
        self.configs: list[Any] = []
        self.network_flags: list[int] = []
        module = ft.make_module()
        recorder = self

        class Builder(module.Builder):  # type: ignore[misc,name-defined]
            def create_builder_config(self) -> Any:
                config = super().create_builder_config()
                recorder.configs.append(config)
                return config

            def create_network(self, flags: int = 0) -> Any:
                recorder.network_flags.append(flags)
                return super().create_network(flags)

        module.Builder = Builder  # type: ignore[attr-defined]
        self.module = module


def test_shape_specs_parse_like_trtexec() -> None:
    profile = parse_shapes("obs:1x48,4x48,256x48; mask:1x1")
    assert profile["obs"].min == (1, 48)
    assert profile["obs"].max == (256, 48)
    assert profile["mask"].opt == (1, 1)
    assert format_shapes(parse_shapes(format_shapes(profile))) == format_shapes(profile)
    for bad in ("obs", "obs:1x48,2x48", "obs:4x48,1x48,8x48", "obs:1x48,1x4x1,2x48", ":1",
                "obs:1x48;obs:1x48", ""):
        with pytest.raises(InvalidArgumentError):
            parse_shapes(bad)


def test_options_refuse_contradictions() -> None:
    with pytest.raises(InvalidArgumentError, match="strongly typed"):
        BuildOptions(strongly_typed=True, fp16=True)
    with pytest.raises(InvalidArgumentError, match="version_compatible"):
        BuildOptions(exclude_lean_runtime=True)
    with pytest.raises(InvalidArgumentError):
        BuildOptions(workspace_bytes=0)
    with pytest.raises(InvalidArgumentError):
        BuildOptions(optimization_level=6)
    with pytest.raises(InvalidArgumentError):
        BuildOptions(hardware_compatibility="turing_plus")
    assert BuildOptions(profiles=SHAPES) == BuildOptions(profiles=[parse_shapes(SHAPES)])


def test_every_option_reaches_tensorrt() -> None:
    rec = _Recording()
    timing = None
    options = BuildOptions(fp16=True, int8=True, profiles=[SHAPES, "obs:8x48,16x48,32x48"],
                           workspace_bytes=1 << 26, version_compatible=True,
                           exclude_lean_runtime=True, hardware_compatibility="ampere_plus",
                           optimization_level=5, timing_cache=timing)
    with EngineBuilder(trt_module=rec.module) as builder:
        plan = builder.build(MODEL, options)
    config = rec.configs[-1]
    flag = rec.module.BuilderFlag
    for name in ("FP16", "INT8", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"):
        assert config.get_flag(getattr(flag, name)), name
    assert not config.get_flag(flag.BF16)
    assert config.get_memory_pool_limit(rec.module.MemoryPoolType.WORKSPACE) == 1 << 26
    assert config.hardware_compatibility_level == rec.module.HardwareCompatibilityLevel.AMPERE_PLUS
    assert config.builder_optimization_level == 5
    assert config.num_optimization_profiles == 2
    assert rec.network_flags[-1] == 0
    with Engine.load(plan, trt_module=ft) as engine:
        assert engine.num_profiles == 2
        assert engine.profiles[1]["obs"].max == (32, 48)


def test_strongly_typed_sets_the_network_flag() -> None:
    rec = _Recording()
    with EngineBuilder(trt_module=rec.module) as builder:
        builder.build(MODEL, BuildOptions(strongly_typed=True, profiles=SHAPES))
    typed = rec.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert rec.network_flags[-1] == 1 << int(typed)


def test_reduced_precision_changes_outputs_within_its_rounding() -> None:
    ref = models.policy_reference(OBS)
    with EngineBuilder(trt_module=ft) as builder:
        fp32 = _run(builder.build(MODEL, BuildOptions(profiles=SHAPES)))
        fp16 = _run(builder.build(MODEL, BuildOptions(profiles=SHAPES, fp16=True)))
        bf16 = _run(builder.build(MODEL, BuildOptions(profiles=SHAPES, bf16=True)))
    np.testing.assert_allclose(fp32, ref, atol=1e-5)
    assert 0 < np.abs(fp16 - ref).max() < 0.05
    assert np.abs(bf16 - ref).max() > np.abs(fp16 - ref).max()


def test_tensorrt_11_has_no_weak_typing_flags() -> None:
    module = ft.make_module(version="11.4.0.106")

    class BuilderFlag:  # TensorRT 11: FP16/BF16/INT8 removed
        VERSION_COMPATIBLE = ft.BuilderFlag.VERSION_COMPATIBLE  # type: ignore[attr-defined]
        EXCLUDE_LEAN_RUNTIME = ft.BuilderFlag.EXCLUDE_LEAN_RUNTIME  # type: ignore[attr-defined]

    module.BuilderFlag = BuilderFlag  # type: ignore[attr-defined]
    with EngineBuilder(trt_module=module) as builder:
        with pytest.raises(NotSupportedError, match="strongly typed") as info:
            builder.build(MODEL, BuildOptions(profiles=SHAPES, fp16=True))
        assert "AutoCast" in str(info.value)
        plan = builder.build(MODEL, BuildOptions(profiles=SHAPES, strongly_typed=True))
    assert plan[:4] == b"ftrt"


def test_calibrators_need_int8_and_a_tensorrt_that_has_them() -> None:
    from edgert.store import make_calibrator

    good = make_calibrator(ft, [{"obs": np.ones((2, 48), np.float32)}])
    with EngineBuilder(trt_module=ft) as builder:
        with pytest.raises(InvalidArgumentError, match="int8"):
            builder.build(MODEL, BuildOptions(profiles=SHAPES), calibrator=good)
        with pytest.raises(InvalidArgumentError, match="IInt8Calibrator"):
            builder.build(MODEL, BuildOptions(profiles=SHAPES, int8=True), calibrator=object())
        builder.build(MODEL, BuildOptions(profiles=SHAPES, int8=True), calibrator=good)
    module = ft.make_module(version="11.4.0.106")
    base = module.Builder  # type: ignore[attr-defined]

    def _removed(self: Any) -> Any:
        raise AttributeError("int8_calibrator")  # TensorRT 11 removed it

    class Builder(base):  # type: ignore[misc,valid-type]
        def create_builder_config(self) -> Any:
            config = super().create_builder_config()
            config.__class__ = type("IBuilderConfig", (type(config),),
                                    {"int8_calibrator": property(_removed)})
            return config

    module.Builder = Builder  # type: ignore[attr-defined]
    with EngineBuilder(trt_module=module) as builder, \
            pytest.raises(NotSupportedError, match="calibrators"):
        builder.build(MODEL, BuildOptions(profiles=SHAPES, int8=True), calibrator=good)


def test_profile_errors_name_the_inputs() -> None:
    with EngineBuilder(trt_module=ft) as builder:
        with pytest.raises(InvalidArgumentError, match="not an input"):
            builder.build(MODEL, BuildOptions(profiles="state:1x48,4x48,8x48"))
        with pytest.raises(InvalidArgumentError, match="rank"):
            builder.build(MODEL, BuildOptions(profiles="obs:1,4,8"))


def test_dynamic_model_without_a_profile_says_how_to_give_one(tmp_path: Path) -> None:
    data = MODEL.read_bytes().replace(b"edgert.profiles", b"edgert.profileX")
    with EngineBuilder(trt_module=ft) as builder, \
            pytest.raises(InvalidArgumentError, match="profiles='obs:1x48,1x48,1x48'"):
        builder.build(data)


def test_parser_errors_become_build_errors() -> None:
    with EngineBuilder(trt_module=ft) as builder, pytest.raises(BuildError, match="parser"):
        builder.build(MODEL.read_bytes().replace(b"Relu", b"Rexu"))  # an unknown operator
    with EngineBuilder(trt_module=ft) as builder, pytest.raises(InvalidArgumentError):
        builder.build(ft.bundled_policy_plan())


def test_progress_reaches_the_callback_and_can_cancel() -> None:
    seen: list[tuple[str, int, int, int]] = []
    with EngineBuilder(trt_module=ft) as builder:
        builder.build(MODEL, BuildOptions(profiles=SHAPES), progress=lambda *a: seen.append(a))
        assert ("Building engine", 2, 2, 0) in seen
        assert any(depth == 1 for *_, depth in seen)
        with pytest.raises(BuildError, match="cancelled"):
            builder.build(MODEL, BuildOptions(profiles=SHAPES), progress=lambda *a: False)


def test_timing_cache_is_read_and_written(tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"garbage from another TensorRT")
    with EngineBuilder(trt_module=ft) as builder:
        builder.build(MODEL, BuildOptions(profiles=SHAPES, timing_cache=cache))
    first = cache.read_bytes()
    assert b"entries" in first
    other = MODEL.read_bytes().replace(models.load_policy_weights()["fc3.bias"].tobytes(),
                                       np.zeros(12, np.float32).tobytes())
    with EngineBuilder(trt_module=ft) as builder:
        builder.build(other, BuildOptions(profiles=SHAPES, timing_cache=cache))
    assert len(cache.read_bytes()) > len(first)  # the earlier entries were kept


def test_no_builder_on_lean_or_dispatch() -> None:
    for flavour in ("lean", "dispatch"):
        with pytest.raises(NotSupportedError, match="no builder"):
            EngineBuilder(trt_module=ft.make_module(flavour=flavour))
    with pytest.raises(NotSupportedError, match="no builder"):
        EngineBuilder(trt_module=types.ModuleType("tensorrt_lean"))


def test_closed_builder_refuses() -> None:
    builder = EngineBuilder(trt_module=ft)
    builder.close()
    builder.close()
    with pytest.raises(Exception, match="closed"):
        builder.build(MODEL, BuildOptions(profiles=SHAPES))


def test_cli_build_writes_a_plan_that_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    out = tmp_path / "policy.plan"
    rc = main(["build", str(MODEL), "--fp16", "--shapes", SHAPES, "-o", str(out),
               "--runtime", "fake", "--workspace-mib", "64"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "sha256" in captured.out
    assert "Building engine" in captured.err  # progress, one line per finished phase
    np.testing.assert_allclose(_run(out.read_bytes()), models.policy_reference(OBS), atol=0.05)
    rc = main(["build", str(MODEL), "--fp16", "--strongly-typed", "-o", str(out),
               "--runtime", "fake"])
    assert rc == 2  # an impossible combination of flags: a usage error
    assert "--strongly-typed" in capsys.readouterr().err


def test_int8_calibration_runs_the_batches_once_then_uses_its_cache(tmp_path: Path) -> None:
    from edgert.store import make_calibrator

    rng = np.random.default_rng(1)
    batches = [{"obs": rng.standard_normal((8, 48)).astype(np.float32)} for _ in range(4)]
    cache = tmp_path / "calibration.cache"
    options = BuildOptions(profiles=SHAPES, int8=True)
    calls: list[int] = []
    calibrator = make_calibrator(ft, batches, cache_path=cache)
    real_get_batch = calibrator.get_batch
    calibrator.get_batch = lambda names, *a: calls.append(1) or real_get_batch(names)
    with EngineBuilder(trt_module=ft) as builder:
        plan = builder.build(MODEL, options, calibrator=calibrator)
    calibrator.close()
    assert len(calls) == 5  # four batches, then None
    assert b"amax" in cache.read_bytes()
    # INT8 loses what 8 bits cannot hold of the inputs: close to the model, not equal
    error = np.abs(_run(plan) - models.policy_reference(OBS)).max()
    assert 0 < error < 0.1
    # the next build (the next robot) reads the cache and calibrates nothing
    again = make_calibrator(ft, batches, cache_path=cache)
    again.get_batch = lambda names, *a: pytest.fail("calibrated again despite the cache")
    with EngineBuilder(trt_module=ft) as builder:
        assert _run(builder.build(MODEL, options, calibrator=again)).shape == (4, 12)
    again.close()


def test_calibrators_refuse_bad_batches_and_tensorrt_11() -> None:
    from edgert.store import make_calibrator

    with pytest.raises(InvalidArgumentError, match="no calibration batches"):
        make_calibrator(ft, [])
    with pytest.raises(InvalidArgumentError, match="same batch size"):
        make_calibrator(ft, [{"obs": np.zeros((8, 48), np.float32)},
                             {"obs": np.zeros((4, 48), np.float32)}])
    trt11 = types.ModuleType("tensorrt")
    trt11.__version__ = "11.4.0.106"  # type: ignore[attr-defined]
    with pytest.raises(NotSupportedError, match="Q/DQ"):
        make_calibrator(trt11, [{"obs": np.zeros((8, 48), np.float32)}])
    empty = make_calibrator(ft, [{"obs": np.zeros((8, 48), np.float32)}])
    empty.get_batch = lambda names, *a: None
    with EngineBuilder(trt_module=ft) as builder, pytest.raises(BuildError, match="Calibration"):
        builder.build(MODEL, BuildOptions(profiles=SHAPES, int8=True), calibrator=empty)
