"""trt tier: the model lifecycle with full TensorRT's real builder, on a GPU.

Skipped unless full TensorRT and a CUDA device exist (`pytest -m trt` on a Jetson or a TensorRT
host). Also checks that every builder name the fake TensorRT offers exists on the real module
with the same enum values -- the lean bindings CI has carry no builder to check against.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.engine import Engine, EngineFlavour, EngineFormat
from edgert.session import InferenceSession
from edgert.store import BuildOptions, EngineBuilder, HealthPolicy, ModelStore
from edgert.store._cache import CacheStatus, EngineCache
from edgert.testing import _fake_trt_builder as fb

pytestmark = pytest.mark.trt

OBS = np.random.default_rng(2).standard_normal((4, models.OBS_DIM)).astype(np.float32)
SHAPES = "obs:1x48,4x48,256x48"


def _trt() -> Any:
    return pytest.importorskip("tensorrt")


def _actions(engine: Engine) -> np.ndarray:
    with InferenceSession(engine, outputs="copy") as session:
        return np.asarray(session.infer({"obs": OBS})["actions"])


def test_fake_builder_names_exist_on_full_tensorrt() -> None:
    trt = _trt()
    for name in fb.BUILDER_NAMES:
        fake = getattr(fb, name)
        if name.startswith("IInt8") and not hasattr(trt.BuilderFlag, "INT8"):
            assert not hasattr(trt, name), f"{name} is back on TensorRT {trt.__version__}"
            continue  # TensorRT 11 removed the calibrators with the weak-typing flags
        assert hasattr(trt, name), name
        real = getattr(trt, name)
        if issubclass(fake, enum.IntEnum):
            for member, value in fake.__members__.items():
                if hasattr(real, member):  # TensorRT 11 removed the weak-typing flags
                    assert int(getattr(real, member)) == int(value), f"{name}.{member}"
                else:
                    assert member in ("FP16", "BF16", "INT8"), f"{name}.{member} is missing"
            continue
        for attr in vars(fake):
            if not attr.startswith("_") and attr != "int8_calibrator":
                assert hasattr(real, attr), f"{name}.{attr}"


def test_builder_builds_a_plan_that_computes_the_model(tmp_path: Path) -> None:
    trt = _trt()
    fp16 = hasattr(trt.BuilderFlag, "FP16")
    options = BuildOptions(profiles=SHAPES, fp16=fp16, timing_cache=tmp_path / "timing.cache")
    seen: list[tuple[str, int, int, int]] = []
    with EngineBuilder() as builder:
        plan = builder.build(models.bundled_model_path(), options,
                             progress=lambda *a: seen.append(a))
    assert (tmp_path / "timing.cache").stat().st_size > 0
    with Engine.load(plan) as engine:
        assert engine.flavour is EngineFlavour.FULL
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS),
                                   atol=0.05 if fp16 else 1e-3, rtol=0.01)


def test_engine_cache_builds_once_and_rebuilds_a_corrupt_entry(tmp_path: Path) -> None:
    _trt()
    cache = EngineCache(tmp_path / "cache")
    first = cache.load(models.bundled_model_path(), BuildOptions(profiles=SHAPES))
    first.engine.close()
    assert first.status is CacheStatus.BUILT
    assert first.plan_path is not None
    second = cache.load(models.bundled_model_path(), BuildOptions(profiles=SHAPES))
    with second.engine as engine:
        assert second.status is CacheStatus.HIT
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-3)
    data = first.plan_path.read_bytes()
    first.plan_path.write_bytes(data[: len(data) // 2])
    third = cache.load(models.bundled_model_path(), BuildOptions(profiles=SHAPES))
    third.engine.close()
    assert third.status is CacheStatus.REBUILT
    with Engine.from_onnx(models.bundled_model_path(), cache_dir=tmp_path / "cache",
                          build=BuildOptions(profiles=SHAPES)) as engine:
        assert engine.format is EngineFormat.TENSORRT_PLAN


def test_store_activates_a_built_version_against_onnx_runtime(tmp_path: Path) -> None:
    _trt()
    store = ModelStore(tmp_path / "store", cache_dir=tmp_path / "cache",
                       build=BuildOptions(profiles=SHAPES))
    store.install(models.bundled_model_path(), "1")
    report = store.activate("1", policy=HealthPolicy(atol=1e-3, rtol=1e-3))
    assert report.reference == "1's ONNX model on ONNX Runtime"
    assert report.p99_ms is not None


def test_hot_swap_between_two_built_plans(tmp_path: Path) -> None:
    _trt()
    data = models.bundled_model_path().read_bytes()
    bias = models.load_policy_weights()["fc3.bias"]
    shifted = tmp_path / "shifted.onnx"
    shifted.write_bytes(data.replace(bias.tobytes(), (bias + np.float32(1.0)).tobytes()))
    cache = EngineCache(tmp_path / "cache")
    a = cache.load(models.bundled_model_path(), BuildOptions(profiles=SHAPES)).engine
    b = cache.load(shifted, BuildOptions(profiles=SHAPES)).engine
    with a, b, InferenceSession(a, outputs="copy") as session:
        session.warmup()
        session.swap(b, handoff_s=0.0)
        got = np.asarray(session.infer({"obs": OBS})["actions"])
        np.testing.assert_allclose(got, models.policy_reference(OBS) + 1.0, atol=1e-3)


def test_int8_calibration_with_a_cache(tmp_path: Path) -> None:
    trt = _trt()
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        pytest.skip(f"TensorRT {trt.__version__} has no calibrators (explicit quantization only)")
    from edgert.store import make_calibrator

    rng = np.random.default_rng(4)
    batches = [{"obs": rng.standard_normal((16, 48)).astype(np.float32)} for _ in range(8)]
    cache = tmp_path / "calibration.cache"
    options = BuildOptions(profiles=SHAPES, int8=True)
    calibrator = make_calibrator(trt, batches, cache_path=cache)
    try:
        with EngineBuilder() as builder:
            plan = builder.build(models.bundled_model_path(), options, calibrator=calibrator)
    finally:
        calibrator.close()
    assert cache.stat().st_size > 0
    with Engine.load(plan) as engine:
        assert np.isfinite(_actions(engine)).all()
