"""trt tier: a real NonZero engine (data-dependent output shape) through a session.

Runs where full TensorRT and a GPU exist (`pytest -m trt`); skipped elsewhere. The engine is built
with the documented builder API of TensorRT 10/11 (``INetworkDefinition.add_non_zero``); the
session registers its output allocator, TensorRT calls it through the bindings' trampoline, and
the outputs must equal numpy's ``nonzero`` for every shape, including an empty result.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgert.engine import Engine, TensorRTExecutable
from edgert.session import InferenceSession

pytestmark = pytest.mark.trt


def _build_nonzero() -> bytes:
    trt = pytest.importorskip("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.float32, (-1, 4))
    nz = network.add_non_zero(x).get_output(0)
    nz.name = "nz"
    network.mark_output(nz)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (2, 4), (8, 4))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None
    return bytes(memoryview(serialized))


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    cases = [np.zeros((3, 4), np.float32), np.ones((8, 4), np.float32)]
    for batch in (1, 5, 8, 2, 8):
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        cases.append(np.where(rng.random((batch, 4)) < 0.5, x, 0).astype(np.float32))
    return cases


def test_nonzero_engine_is_data_dependent_and_never_captured() -> None:
    with Engine.load(_build_nonzero(), runtime="full") as engine, \
            engine.create_context() as ctx:
        assert isinstance(ctx, TensorRTExecutable)
        assert engine.tensor("nz").shape == (2, -1)
        assert ctx.data_dependent_outputs == ("nz",)
        assert not ctx.graph_capturable
        bound = ctx.max_output_bytes("nz")
        assert bound is not None
        assert bound >= 2 * 8 * 4 * 4  # every element of the largest input non-zero


@pytest.mark.parametrize("io", ["copy", "zero_copy"])
@pytest.mark.parametrize("slots", [1, 2])
def test_nonzero_engine_through_a_session(io: str, slots: int) -> None:
    with Engine.load(_build_nonzero(), runtime="full") as engine, \
            InferenceSession(engine, io=io, slots=slots) as s:
        assert s.graph_blocker is not None
        assert "(nz)" in s.graph_blocker
        for x in _cases():
            out = s.infer({"x": x})["nz"]
            np.testing.assert_array_equal(out, np.array(np.nonzero(x)))
        xs = _cases()[:slots]
        pending = [s.submit({"x": x}) for x in xs]
        for p, x in zip(pending, xs, strict=True):
            np.testing.assert_array_equal(p.result()["nz"], np.array(np.nonzero(x)))
        assert s.graph_captures == 0
        assert s.executable.last_errors() == ()  # type: ignore[attr-defined]
