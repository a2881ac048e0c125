"""trt tier: build a tiny network with full TensorRT's builder, then load, inspect and run it.

Runs where full TensorRT and a GPU exist (`pytest -m trt` on a Jetson or a TensorRT host);
skipped elsewhere. Written against the documented builder API of TensorRT 10/11.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pytest

from edgert.cli import _inspect
from edgert.engine import Engine, EngineFlavour, Placement
from edgert.errors import EngineLoadError, ModelFormatError, VersionMismatchError

pytestmark = pytest.mark.trt

W = (np.arange(16, dtype=np.float32).reshape(4, 4) - 6.0) / 10.0


def _build(*, version_compatible: bool = False) -> bytes:
    trt = pytest.importorskip("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.float32, (-1, 4))
    weights = network.add_constant((4, 4), trt.Weights(np.ascontiguousarray(W)))
    product = network.add_matrix_multiply(x, trt.MatrixOperation.NONE, weights.get_output(0),
                                          trt.MatrixOperation.NONE)
    relu = network.add_activation(product.get_output(0), trt.ActivationType.RELU)
    y = relu.get_output(0)
    y.name = "y"
    network.mark_output(y)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (2, 4), (8, 4))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None
    return bytes(memoryview(serialized))


class _Device:
    """Device buffers and a stream through cuda.bindings (tests may use it directly)."""

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.ptrs: list[int] = []
        err, self.stream = cudart.cudaStreamCreate()
        assert int(err) == 0

    def alloc(self, nbytes: int) -> int:
        err, ptr = self.rt.cudaMalloc(nbytes)
        assert int(err) == 0
        self.ptrs.append(int(ptr))
        return int(ptr)

    def copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        (err,) = self.rt.cudaMemcpy(dst, src, nbytes, kind)
        assert int(err) == 0

    def close(self) -> None:
        for ptr in self.ptrs:
            self.rt.cudaFree(ptr)
        self.rt.cudaStreamDestroy(self.stream)


def _run(engine: Engine, batch: int) -> np.ndarray:
    x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
    y = np.zeros((batch, 4), np.float32)
    dev = _Device()
    kinds = dev.rt.cudaMemcpyKind
    try:
        with engine.create_context() as ctx:
            assert ctx.placement is Placement.DEVICE
            assert ctx.graph_capturable
            px, py = dev.alloc(x.nbytes), dev.alloc(y.nbytes)
            assert ctx.set_input_shape("x", x.shape)
            assert tuple(ctx.get_tensor_shape("y")) == y.shape
            assert ctx.set_tensor_address("x", px)
            assert ctx.set_tensor_address("y", py)
            dev.copy(px, x.ctypes.data, x.nbytes, kinds.cudaMemcpyHostToDevice)
            assert ctx.execute_async_v3(int(dev.stream)), ctx.last_errors()  # type: ignore[attr-defined]
            assert int(dev.rt.cudaStreamSynchronize(dev.stream)[0]) == 0
            dev.copy(y.ctypes.data, py, y.nbytes, kinds.cudaMemcpyDeviceToHost)
    finally:
        dev.close()
    np.testing.assert_allclose(y, np.maximum(x @ W, 0), rtol=1e-3, atol=1e-4)
    return y


def test_build_load_inspect_run() -> None:
    trt = pytest.importorskip("tensorrt")
    plan = _build()
    with Engine.load(plan, runtime="full") as engine:
        assert engine.flavour is EngineFlavour.FULL
        assert engine.runtime_version == trt.__version__
        major, minor = (int(p) for p in trt.__version__.split(".")[:2])
        assert engine.header.trt_version is not None
        assert engine.header.trt_version[:2] == (major, minor)  # the bytes trtexec reads
        x, y = engine.tensors
        assert (x.name, x.shape, y.name, y.shape) == ("x", (-1, 4), "y", (-1, 4))
        assert x.profiles[0].max == (8, 4)
        assert engine.device_memory_bytes is not None
        for batch in (1, 8):
            _run(engine, batch)


def test_inspect_prints_the_real_plan(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.plan"
    path.write_bytes(_build())
    parser = argparse.ArgumentParser()
    _inspect.register(parser.add_subparsers())
    args = parser.parse_args(["inspect", str(path), "--runtime", "full"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "input  x" in out
    assert "128 bytes at [8, 4]" in out


def test_truncated_real_plan() -> None:
    plan = _build()
    with pytest.raises(ModelFormatError):
        Engine.load(plan[: len(plan) // 2], runtime="full")


def test_version_compatible_plan_on_the_lean_runtime() -> None:
    pytest.importorskip("tensorrt_lean")
    plan = _build(version_compatible=True)
    with pytest.raises(EngineLoadError) as info:
        Engine.load(plan, runtime="lean")
    assert "allow_host_code=True" in (info.value.hint or "")
    with Engine.load(plan, runtime="lean", allow_host_code=True) as engine:
        assert engine.flavour is EngineFlavour.LEAN
        _run(engine, 2)


def test_plain_plan_is_refused_by_the_lean_runtime() -> None:
    pytest.importorskip("tensorrt_lean")
    with pytest.raises(VersionMismatchError, match="not a version-compatible plan"):
        Engine.load(_build(), runtime="lean")
