"""What ONNX Runtime's metadata cannot say about a model's boundary tensors, read from the file.

ONNX Runtime reports the shape of a tensor whose type carries no shape as ``[]``, the same as
a 0-d (scalar) tensor. The two differ: ``ReduceSum(keepdims=1)`` of an unknown-rank input has
that input's rank, not rank 0. This module walks the model's protobuf just far enough to tell
them apart (ModelProto.graph -> GraphProto.input/output -> ValueInfoProto.type ->
TypeProto.tensor_type -> has ``shape`` or not), without copying the graph: initializers and
nodes are skipped over by length.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgert.engine._protowire import fields

__all__ = ["GraphBoundary", "read_boundary"]

# Field numbers from onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
_MODEL_GRAPH = 7
_GRAPH_INPUT = 11
_GRAPH_OUTPUT = 12
_VALUE_NAME = 1
_VALUE_TYPE = 2
_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2


@dataclass(frozen=True, slots=True)
class GraphBoundary:
    """Which graph inputs and outputs declare a shape (a rank), by name.

    Attributes:
        inputs: Graph input name -> whether its tensor type has a shape.
        outputs: Graph output name -> whether its tensor type has a shape.
    """

    inputs: dict[str, bool]
    outputs: dict[str, bool]

    def unknown_rank(self, name: str, *, output: bool) -> bool:
        """Whether ``name`` is a tensor whose rank the model does not declare."""
        table = self.outputs if output else self.inputs
        return table.get(name) is False


def _walk(data: memoryview) -> list[tuple[int, memoryview | None]]:
    """(field number, bytes of a length-delimited field or None) for each field of a message."""
    return [(n, v if isinstance(v, memoryview) else None) for n, _w, v in fields(data)]


def _first(fields: list[tuple[int, memoryview | None]], number: int) -> memoryview | None:
    for n, value in fields:
        if n == number and value is not None:
            return value
    return None


def _value_info(data: memoryview) -> tuple[str, bool | None]:
    """(name, has shape) of a ValueInfoProto; has shape is None for non-tensor types."""
    fields = _walk(data)
    raw_name = _first(fields, _VALUE_NAME)
    name = bytes(raw_name).decode("utf-8", "replace") if raw_name is not None else ""
    type_proto = _first(fields, _VALUE_TYPE)
    if type_proto is None:
        return name, False
    tensor = _first(_walk(type_proto), _TYPE_TENSOR)
    if tensor is None:
        return name, None
    return name, any(n == _TENSOR_SHAPE for n, _ in _walk(tensor))


def read_boundary(model: bytes | memoryview) -> GraphBoundary | None:
    """Read which graph inputs and outputs declare a shape; None if the bytes cannot be walked.

    Never raises: ONNX Runtime has already accepted the model, and this only refines what its
    metadata says.
    """
    try:
        graph = _first(_walk(memoryview(model)), _MODEL_GRAPH)
        if graph is None:
            return None
        inputs: dict[str, bool] = {}
        outputs: dict[str, bool] = {}
        for number, value in _walk(graph):
            if value is None or number not in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                continue
            name, has_shape = _value_info(value)
            if has_shape is not None:
                (inputs if number == _GRAPH_INPUT else outputs)[name] = has_shape
        return GraphBoundary(inputs, outputs)
    except (ValueError, IndexError):
        return None
