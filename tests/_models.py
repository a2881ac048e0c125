"""Small ONNX models the tests build (needs the ``onnx`` package; callers importorskip it)."""

from __future__ import annotations

from pathlib import Path


def reflect_pad_model(directory: Path) -> Path:
    """x: float[1, n], reflect-padded by 2: cannot run at n = 1 (like many audio models)."""
    import onnx
    from onnx import TensorProto, helper

    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 2, 0, 2])
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = directory / "pad.onnx"
    onnx.save(model, str(path))
    return path
