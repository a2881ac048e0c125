"""`edgert inspect` on engines with data-dependent output shapes: what a session will do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgert.cuda
from edgert.cli import _inspect
from edgert.engine import Engine
from edgert.testing import fake_tensorrt as ft

ft.register_function("tests.inspect.nonzero_and_copy", lambda i: {
    "idx": np.flatnonzero(i["x"]).astype(np.int32), "y": i["x"].copy()})


def _plan(tmp_path: Path) -> Path:
    path = tmp_path / "nonzero.plan"
    path.write_bytes(ft.make_plan(
        inputs=[ft.FakeTensor("x", "FLOAT", (-1,), profiles=[((1,), (8,), (64,))])],
        outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(64,)),
                 ft.FakeTensor("y", "FLOAT", ("x:0",))],
        function="tests.inspect.nonzero_and_copy"))
    return path


def test_data_dependent_output_is_reported_with_no_graph_capture(tmp_path: Path) -> None:
    report = _inspect.inspect_model(_plan(tmp_path), runtime="fake")
    graph = report["cuda_graph"]
    assert graph["capturable"] is False
    assert graph["data_dependent_outputs"] == ["idx"]
    assert "data-dependent output shape (idx)" in graph["reason"]
    assert "output allocator" in graph["reason"]
    rows = {t["name"]: t for t in report["tensors"]}
    assert rows["idx"]["data_dependent"] is True
    assert rows["idx"]["max_bytes"] is None
    assert rows["idx"]["bound_bytes"] == 64 * 4  # TensorRT's get_max_output_size
    assert rows["y"]["data_dependent"] is False
    assert rows["y"]["max_bytes"] == 64 * 4
    assert rows["x"]["data_dependent"] is False
    json.dumps(report)  # JSON-ready
    text = _inspect.render(report)
    assert "graphs     never captured: data-dependent output shape (idx)" in text
    assert "data-dependent: size known during each run, at most 256 bytes" in text


def test_ordinary_engines_say_why_or_that_they_may_be_captured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report = _inspect.inspect_model("bundled")
    assert report["cuda_graph"] == {"capturable": False, "reason": "tensors live on the host",
                                    "data_dependent_outputs": []}
    assert "never captured: tensors live on the host" in _inspect.render(report)
    device_like = ft.make_module()
    device_like.EDGERT_REQUIRES_CUDA = True  # type: ignore[attr-defined]
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: True)
    monkeypatch.setattr(edgert.cuda, "set_device", lambda device: None)
    with Engine.load(ft.bundled_policy_plan(), trt_module=device_like) as engine, \
            engine.create_context() as ctx:
        assert _inspect._graph_facts(ctx) == {"capturable": True, "reason": None,
                                              "data_dependent_outputs": []}
