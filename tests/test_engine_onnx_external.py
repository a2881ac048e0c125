"""ONNX models whose weights live in other files are refused (found by a new user's trial).

ONNX Runtime would read those files itself: past edgert's bounded reader, past a pinned sha256
or signature (which covers only the .onnx file), and, for a model given as bytes, from the
working directory rather than the model's. A weight file changed after pinning gave a wrong
answer with no error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgert.engine import Engine
from edgert.errors import EngineLoadError

onnx = pytest.importorskip("onnx")
helper = onnx.helper
numpy_helper = onnx.numpy_helper


def _external_model(tmp_path: Path) -> Path:
    weight = numpy_helper.from_array(np.arange(16 * 16, dtype=np.float32).reshape(16, 16), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    return path


def test_a_model_with_external_weights_is_refused_with_a_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _external_model(tmp_path)
    monkeypatch.chdir(tmp_path)  # where ONNX Runtime would find the weights of a bytes model
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for source in (path, path.read_bytes()):
        with pytest.raises(EngineLoadError, match=r"ext\.onnx\.data") as info:
            Engine.load(source, sha256=digest)
        assert "save_as_external_data=False" in (info.value.hint or "")


def test_the_same_model_with_embedded_weights_loads(tmp_path: Path) -> None:
    model = onnx.load_model(str(_external_model(tmp_path)))  # reads the weights back in
    embedded = tmp_path / "embedded.onnx"
    onnx.save_model(model, str(embedded), save_as_external_data=False)
    with Engine.load(embedded) as engine:
        assert [t.name for t in engine.tensors] == ["x", "y"]
