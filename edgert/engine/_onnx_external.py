"""Which files an ONNX model keeps its weights in (ONNX "external data").

A model saved with external data stores only the graph in the ``.onnx`` file; each large tensor
names a file (``location``, relative to the model's directory) holding its bytes. ONNX Runtime
would read those files itself, past edgert's bounded reader and past every integrity check
(a pinned ``sha256`` covers only the ``.onnx`` file), and from a model passed as bytes it
resolves them against the working directory, not the model's: ``Engine.load`` therefore refuses
such models (found by a new user's trial, issue 12). The engine cache keys entries by those
files (new weights beside an unchanged ``.onnx`` must not load the plan built from the old
ones) and the model store refuses them at install. Found by walking the protobuf (no ``onnx``
package at run time): graph initializers, sparse initializers, and tensors and subgraphs in node
attributes (If/Loop/Scan bodies), recursively. Field numbers are from onnx/onnx.proto3.
"""

from __future__ import annotations

from edgert.engine._onnx_graph import _walk
from edgert.errors import InvalidArgumentError

__all__ = ["external_locations", "refuse_external_data"]

_MODEL_GRAPH = 7
_MODEL_FUNCTIONS = 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_ATTR_SPARSE, _ATTR_SPARSES = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _tensor(data: memoryview, out: set[str]) -> None:
    for number, value in _walk(data):
        if number == _TENSOR_EXTERNAL_DATA and value is not None:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, v in _walk(value)
                     if v is not None}
            if entry.get(_ENTRY_KEY) == "location" and _ENTRY_VALUE in entry:
                out.add(entry[_ENTRY_VALUE])


def _sparse(data: memoryview, out: set[str]) -> None:
    for number, value in _walk(data):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and value is not None:
            _tensor(value, out)


def _node(data: memoryview, out: set[str]) -> None:
    for number, attribute in _walk(data):
        if number != _NODE_ATTRIBUTE or attribute is None:
            continue
        for n, value in _walk(attribute):
            if value is None:
                continue
            if n in (_ATTR_T, _ATTR_TENSORS):
                _tensor(value, out)
            elif n in (_ATTR_G, _ATTR_GRAPHS):
                _graph(value, out)
            elif n in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(value, out)


def _graph(data: memoryview, out: set[str]) -> None:
    for number, value in _walk(data):
        if value is None:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(value, out)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(value, out)
        elif number == _GRAPH_NODE:
            _node(value, out)


def external_locations(model: bytes | memoryview) -> list[str]:
    """The external-data files an ONNX model names, sorted (empty when it has none).

    Raises:
        ValueError: The bytes are not a well-formed protobuf message.
    """
    out: set[str] = set()
    for number, value in _walk(memoryview(model)):
        if value is None:
            continue
        if number == _MODEL_GRAPH:
            _graph(value, out)
        elif number == _MODEL_FUNCTIONS:
            for n, node in _walk(value):
                if n == _FUNCTION_NODE and node is not None:
                    _node(node, out)
    return sorted(out)


def refuse_external_data(model: bytes | memoryview, label: str) -> None:
    """Refuse an ONNX model that keeps weights in other files (the model store copies one file
    per version: the weights would be left behind and the version fail at activation).

    Raises:
        InvalidArgumentError: It names external-data files.
    """
    try:
        names = external_locations(model)
    except ValueError:
        return  # not protobuf: loading it says so
    if names:
        raise InvalidArgumentError(
            f"{label} keeps its weights in other files ({', '.join(names)}), which the store "
            "would not copy", hint="save the model with its weights inside the .onnx file "
                                   "(onnx.save_model(model, path, save_as_external_data=False); "
                                   "models up to 2 GB), or install a plan built from it")
