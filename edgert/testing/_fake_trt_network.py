"""The fake TensorRT's network side: ``INetworkDefinition``, ``ITensor`` and ``OnnxParser``.

The parser reads an ONNX model through ONNX Runtime (which checks it) and keeps the model as the
network; plans built from it name the function ``edgert.onnx:<precision>:<base64 model>``, which
:func:`_resolve` turns back into the model running on ONNX Runtime. Names follow TensorRT's
Python API (see :mod:`edgert.testing._fake_trt_builder` for the sources).
"""

from __future__ import annotations

import base64
import os
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert.testing._fake_trt_plan import register_resolver

__all__ = ["PREFIX", "INetworkDefinition", "ITensor", "NetworkDefinitionCreationFlag",
           "OnnxParser", "ParserError"]

#: Function-name prefix of plans the fake builder makes.
PREFIX = "edgert.onnx:"
_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int8)": "INT8",
              "tensor(int32)": "INT32", "tensor(int64)": "INT64", "tensor(bool)": "BOOL",
              "tensor(uint8)": "UINT8", "tensor(bfloat16)": "BF16"}


class NetworkDefinitionCreationFlag(IntEnum):
    """``tensorrt.NetworkDefinitionCreationFlag``."""

    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class ITensor:
    """A network input or output."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str,
                 follows: tuple[int | str, ...]) -> None:
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self._follows = follows


class INetworkDefinition:
    """A network; the fake's is the ONNX model the parser read."""

    def __init__(self, flags: int) -> None:
        self._flags = int(flags)
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._model: bytes | None = None

    @property
    def num_inputs(self) -> int:
        """Number of inputs."""
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        """Number of outputs."""
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        """Input ``index``."""
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        """Output ``index``."""
        return self._outputs[index]

    def get_flag(self, flag: NetworkDefinitionCreationFlag) -> bool:
        """Whether a creation flag was set."""
        return bool(self._flags & (1 << int(flag)))


class ParserError:
    """One parser error."""

    def __init__(self, text: str) -> None:
        self._text = text

    def desc(self) -> str:
        """What went wrong."""
        return self._text

    def __str__(self) -> str:
        return self._text


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class OnnxParser:
    """Reads an ONNX model into a network (through ONNX Runtime, which checks it)."""

    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        self._network = network
        self._logger = logger
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        """Errors of the last parse."""
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        """Error ``index``."""
        return self._errors[index]

    def clear_errors(self) -> None:
        """Forget the errors."""
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        """Parse the ONNX file at ``model``."""
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as err:
            self._errors.append(ParserError(f"ModelImporter.cpp: Failed to open {model}: {err}"))
            return False
        return self.parse(data, model)  # weights are found beside the file

    def parse(self, model: Any, path: str | None = None) -> bool:
        """Parse an ONNX model from bytes; ``path`` (the model's file) locates external weights,
        which end up inside the plan as TensorRT's do."""
        import onnxruntime as ort

        data = bytes(memoryview(model))
        try:
            data = _inline_external_data(data, path)
        except Exception as err:
            self._errors.append(ParserError(f"ModelImporter.cpp: fake_tensorrt: cannot read the "
                                            f"model's external weights: {err}"))
            return False
        try:
            sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as err:
            self._errors.append(ParserError(f"ModelImporter.cpp: fake_tensorrt: the ONNX model "
                                            f"cannot be parsed: {err}"))
            return False
        symbols: dict[str, str] = {}
        net = self._network
        for arg in sess.get_inputs():
            dtype = _ORT_TYPES.get(arg.type)
            if dtype is None:
                self._errors.append(ParserError(f"fake_tensorrt: input {arg.name} has "
                                                f"unsupported type {arg.type}"))
                return False
            for axis, d in enumerate(arg.shape):
                if isinstance(d, str):
                    symbols.setdefault(d, f"{arg.name}:{axis}")
            net._inputs.append(ITensor(arg.name, _dims(arg.shape), dtype, ()))
        for arg in sess.get_outputs():
            dtype = _ORT_TYPES.get(arg.type)
            follows: list[int | str] = []
            for d in arg.shape:
                if isinstance(d, int) and d >= 0:
                    follows.append(d)
                elif isinstance(d, str) and d in symbols:
                    follows.append(symbols[d])
                else:
                    self._errors.append(ParserError(
                        f"fake_tensorrt: output {arg.name} has a dimension ({d!r}) that follows "
                        "no input; the fake builder cannot size it"))
                    return False
            if dtype is None:
                self._errors.append(ParserError(f"fake_tensorrt: output {arg.name} has "
                                                f"unsupported type {arg.type}"))
                return False
            net._outputs.append(ITensor(arg.name, _dims(arg.shape), dtype, tuple(follows)))
        net._model = data
        return True


def _inline_external_data(data: bytes, path: str | None) -> bytes:
    """``data`` with the weights it keeps in external files (found next to ``path``) moved
    inside it. Without a path there is nowhere to look: the fake refuses rather than guess the
    working directory."""
    from edgert.engine._onnx_external import external_locations

    try:
        if not external_locations(data):
            return data
    except ValueError:
        return data  # not protobuf: ONNX Runtime says why
    if path is None:
        raise RuntimeError("the model keeps weights in external files; parse it with the path of "
                           "its file (parse(model, path)) so they can be found")
    try:
        import onnx
        from onnx.external_data_helper import load_external_data_for_model
    except ImportError:
        raise RuntimeError("the fake needs the onnx package for external data "
                           "(pip install 'edgert[onnx]')") from None
    proto = onnx.load_model_from_string(data)
    load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    inlined: bytes = proto.SerializeToString()
    return inlined


def _round(array: npt.NDArray[Any], precision: str) -> npt.NDArray[Any]:
    if array.dtype != np.float32 or precision == "fp32":
        return array
    if precision == "fp16":
        return array.astype(np.float16).astype(np.float32)
    bits = np.ascontiguousarray(array).view(np.uint32) & np.uint32(0xFFFF0000)
    rounded: npt.NDArray[Any] = bits.view(np.float32)
    return rounded


def _quantize(array: npt.NDArray[Any], amax: float | None) -> npt.NDArray[Any]:
    """Symmetric INT8 quantization with the calibrated range, back to float (what INT8 loses)."""
    if amax is None or amax <= 0 or array.dtype != np.float32:
        return array
    scale = np.float32(amax / 127.0)
    out: npt.NDArray[Any] = (np.clip(np.round(array / scale), -127, 127) * scale).astype(
        np.float32)
    return out


def _resolve(name: str) -> Any:
    """The function a builder-made plan names: its ONNX model on ONNX Runtime."""
    import onnxruntime as ort

    precision, _, encoded = name[len(PREFIX):].partition(":")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(base64.b64decode(encoded), options,
                                providers=["CPUExecutionProvider"])

    amax = {k: float(v) for k, v in (p.split("=") for p in precision[5:].split(";") if p)} \
        if precision.startswith("int8@") else None

    def run(inputs: Any) -> list[npt.NDArray[Any]]:
        if amax is not None:  # INT8: inputs lose what the calibrated range cannot hold
            fed = {k: _quantize(np.asarray(v), amax.get(k)) for k, v in inputs.items()}
            return [np.asarray(o) for o in sess.run(None, fed)]
        fed = {k: _round(np.asarray(v), precision) for k, v in inputs.items()}
        return [_round(np.asarray(o), precision) for o in sess.run(None, fed)]

    return run


register_resolver(PREFIX, _resolve)
