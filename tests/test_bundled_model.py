"""The bundled control policy: reproducible, readable by ONNX Runtime, equal to its reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgert import models
from edgert.engine import Engine, read_model_header
from edgert.errors import InvalidArgumentError
from edgert.testing import fake_tensorrt as ft

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bundled_model",
                                                  ROOT / "tools" / "make_bundled_model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_tool_regenerates_the_shipped_files_byte_for_byte() -> None:
    pytest.importorskip("onnx")
    built = _tool().build()
    assert set(built) == {models.bundled_model_path(), models.bundled_weights_path()}
    for path, data in built.items():
        assert path.read_bytes() == data, f"{path.name} is stale: run tools/make_bundled_model.py"


def test_files_are_small_and_readable() -> None:
    assert models.bundled_model_path().stat().st_size < 400_000
    assert models.bundled_weights_path().stat().st_size < 400_000
    header = read_model_header(models.bundled_model_path())
    assert 8 <= header.onnx_ir_version <= 13  # ONNX Runtime 1.31 reads IR 13 at most
    assert header.onnx_opsets == (("", 13),)


def test_weights() -> None:
    w = models.load_policy_weights()
    assert tuple(w) == models.WEIGHT_NAMES
    assert w["fc1.weight"].shape == (48, 256)
    assert w["fc2.weight"].shape == (256, 256)
    assert w["fc3.weight"].shape == (256, 12)
    assert w["fc3.bias"].shape == (12,)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in w.values())
    with pytest.raises(ValueError, match="read-only"):
        w["fc1.bias"][0] = 1.0
    w.clear()  # a copy: the cache is untouched
    assert len(models.load_policy_weights()) == 6


def test_reference_shapes_and_values() -> None:
    obs = np.random.default_rng(0).standard_normal((4, 48)).astype(np.float32)
    batch = models.policy_reference(obs)
    assert batch.shape == (4, 12)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(models.policy_reference(obs[1]), batch[1], rtol=1e-5, atol=1e-6)
    w = models.load_policy_weights()
    h = np.maximum(obs[0].astype(np.float64) @ w["fc1.weight"] + w["fc1.bias"], 0)
    h = np.maximum(h @ w["fc2.weight"] + w["fc2.bias"], 0)
    np.testing.assert_allclose(batch[0], h @ w["fc3.weight"] + w["fc3.bias"], rtol=1e-5,
                               atol=1e-5)
    assert np.abs(batch).max() > 0.1  # not a degenerate network
    for bad in (np.zeros(47), np.zeros((2, 3, 48))):
        with pytest.raises(InvalidArgumentError):
            models.policy_reference(bad)


@pytest.mark.parametrize("source", ["onnx", "fake-plan"])
def test_every_backend_matches_the_reference(source: str) -> None:
    engine = (Engine.load(models.bundled_model_path()) if source == "onnx"
              else Engine.load(ft.bundled_policy_plan(), trt_module=ft))
    obs = np.random.default_rng(7).uniform(-3, 3, (models.MAX_BATCH, 48)).astype(np.float32)
    out = np.empty((models.MAX_BATCH, 12), np.float32)
    with engine, engine.create_context() as x:
        assert x.set_input_shape(models.INPUT_NAME, obs.shape)
        assert x.set_tensor_address(models.INPUT_NAME, obs.ctypes.data)
        assert x.set_tensor_address(models.OUTPUT_NAME, out.ctypes.data)
        assert x.execute_async_v3(0)
    np.testing.assert_allclose(out, models.policy_reference(obs), rtol=1e-5, atol=1e-5)


def test_a_policy_variant_is_the_policy_plus_its_bias_offset() -> None:
    from edgert.session import InferenceSession

    obs = np.random.default_rng(3).standard_normal((2, models.OBS_DIM)).astype(np.float32)
    assert models.policy_variant_bytes(0.0) == models.bundled_model_path().read_bytes()
    data = models.policy_variant_bytes(0.5)
    assert data != models.bundled_model_path().read_bytes()
    with Engine.load(data) as engine, InferenceSession(engine) as session:
        np.testing.assert_allclose(session.infer(obs)["actions"],
                                   models.policy_reference(obs) + np.float32(0.5),
                                   rtol=1e-5, atol=1e-5)

