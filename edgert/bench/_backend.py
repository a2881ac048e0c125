"""Which backend a benchmark runs on, and opening it.

* A TensorRT plan runs on the TensorRT runtime that imports (full, lean, dispatch) on the GPU.
* An ONNX model runs through ONNX Runtime on the host.
* No model (or ``"bundled"``): the bundled control policy. With a usable CUDA device it runs as
  :class:`~edgert.kernels.KernelExecutable` (the same network compiled to CUDA
  kernels with NVRTC), because without a TensorRT builder there is no plan of it to load and the
  GPU is what is being measured; if that cannot be compiled it falls back to ONNX Runtime, and
  says so. Without CUDA it runs through ONNX Runtime on the host.
* An :class:`~edgert.engine.Engine` or :class:`~edgert.engine.Executable` is used as given
  (borrowed: the caller closes it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._fake_runtime import fake_tensorrt_module
from edgert.errors import EdgeRTError, InvalidArgumentError

__all__ = ["Backend", "BackendInfo", "open_backend"]

BUNDLED = "bundled"


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendInfo:
    """What a benchmark ran on.

    Attributes:
        kind: ``tensorrt``, ``onnxruntime``, ``kernel`` (the bundled model as CUDA kernels) or
            ``executable`` (an Executable passed in).
        model: The model file, ``bundled``, or a description of the object passed in.
        runtime: The runtime and its version, e.g. ``onnxruntime 1.23.2``.
        reason: Why this backend was chosen.
        device: ``host`` or ``cuda:N`` (filled in once the session is made).
        device_name: The GPU's name, or ``host CPU``.
        io: The session's resolved I/O mode.
        cuda_graph: The session's resolved graph mode.
        slots: Requests in flight at once.
        sync: How the host waits for the device.
        batch: Batch size of each request.
        inputs: Input shapes used, by name.
        graph_captures: CUDA graphs the session captured (0: every request was enqueued
            plainly).
    """

    kind: str
    model: str
    runtime: str
    reason: str
    device: str = "host"
    device_name: str | None = None
    io: str = ""
    cuda_graph: str = ""
    slots: int = 1
    sync: str = ""
    batch: int = 1
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    graph_captures: int = 0

    @property
    def on_gpu(self) -> bool:
        """Whether requests ran on a CUDA device (device timings come from CUDA events)."""
        return self.device.startswith("cuda")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"kind": self.kind, "model": self.model, "runtime": self.runtime,
                "reason": self.reason, "device": self.device, "device_name": self.device_name,
                "io": self.io, "cuda_graph": self.cuda_graph, "slots": self.slots,
                "sync": self.sync, "batch": self.batch,
                "inputs": {name: list(shape) for name, shape in self.inputs},
                "graph_captures": self.graph_captures}


class Backend:
    """The model object a session drives, what was opened for it, and its description."""

    def __init__(self, model: Any, info: BackendInfo, closers: list[Callable[[], None]],
                 notes: list[str]) -> None:
        self.model = model
        self.info = info
        self.notes = notes
        self._closers = closers

    def close(self) -> None:
        """Close what :func:`open_backend` opened (never what the caller passed in)."""
        while self._closers:
            self._closers.pop()()


def _engine_info(engine: Any, model: str, reason: str) -> BackendInfo:
    flavour = str(engine.flavour)
    kind = "onnxruntime" if flavour == "onnxruntime" else "tensorrt"
    return BackendInfo(kind=kind, model=model, reason=reason,
                       runtime=f"{engine.runtime_module} {engine.runtime_version}"
                       + ("" if kind == "onnxruntime" else f" ({flavour})"))


def _load(path: Path, runtime: str, label: str, reason: str | None,
          trt_module: ModuleType | None = None) -> Backend:
    from edgert.engine import Engine

    engine = Engine.load(path, runtime=runtime, trt_module=trt_module)
    if reason is None:
        reason = ("an ONNX model: ONNX Runtime on the host" if str(engine.flavour) ==
                  "onnxruntime" else f"a TensorRT plan on {engine.runtime_module}")
    return Backend(engine, _engine_info(engine, label, reason), [engine.close], [])


def _bundled(runtime: str, device: int | str | None) -> Backend:
    from edgert import cuda
    from edgert.models import bundled_model_path

    path = bundled_model_path()
    notes: list[str] = []
    if runtime == "fake":  # the TensorRT code path without a GPU: the fake's plan of the model
        from edgert.engine import Engine

        fake = fake_tensorrt_module()
        engine = Engine.load(fake.bundled_policy_plan(), trt_module=fake)
        reason = "the bundled model as a plan on the fake TensorRT module (computes on the host)"
        return Backend(engine, _engine_info(engine, BUNDLED, reason), [engine.close], notes)
    if device != "host" and runtime == "auto" and cuda.is_available():
        from edgert.kernels import KernelExecutable

        try:
            exe = KernelExecutable(device=device if isinstance(device, int) else 0)
        except EdgeRTError as err:
            notes.append(f"the bundled model could not be compiled to CUDA kernels "
                         f"({err.message}); it runs through ONNX Runtime on the host instead")
        else:
            info = BackendInfo(kind="kernel", model=BUNDLED,
                               runtime="NVRTC kernels (edgert.kernels.KernelExecutable)",
                               reason="the bundled model as CUDA kernels: a GPU is present "
                                      "and there is no TensorRT plan of it")
            return Backend(exe, info, [exe.close], notes)
    if device != "host" and runtime == "auto" and not cuda.is_available():
        reason = f"no CUDA device ({cuda.unavailable_reason()}): ONNX Runtime on the host"
    else:
        reason = "the bundled ONNX model through ONNX Runtime on the host"
    backend = _load(path, "onnxruntime" if runtime == "auto" else runtime, BUNDLED, reason)
    backend.notes.extend(notes)
    return backend


def open_backend(model: Any, *, runtime: str = "auto",
                 device: int | str | None = None) -> Backend:
    """Resolve what to run (see the module docstring).

    Args:
        model: None or ``"bundled"``, a path, an Engine, or an Executable.
        runtime: For paths: ``auto``, ``full``, ``lean``, ``dispatch``, ``onnxruntime``, or
            ``fake`` (:mod:`edgert.testing.fake_tensorrt`, for tests without a GPU).
        device: ``"host"`` keeps the bundled model off the GPU.

    Raises:
        InvalidArgumentError: ``model`` is none of the accepted kinds.
        EngineLoadError: The model file could not be loaded (or a subclass of it).
        NotSupportedError: The runtime the model needs is missing here.
    """
    from edgert.engine import Engine, Executable

    if model is None or (isinstance(model, str) and model == BUNDLED):
        return _bundled(runtime, device)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if runtime == "fake":
            return _load(path, "auto", str(path), "a TensorRT plan on the fake TensorRT module",
                         trt_module=fake_tensorrt_module())
        return _load(path, runtime, str(path), None)
    if isinstance(model, Engine):
        info = _engine_info(model, str(model.path) if model.path else "Engine (from bytes)",
                            "the Engine passed in")
        return Backend(model, info, [], [])
    if isinstance(model, Executable):
        info = BackendInfo(kind="kernel" if type(model).__name__ == "KernelExecutable"
                           else "executable", model=type(model).__name__,
                           runtime=f"{type(model).__module__}.{type(model).__name__}",
                           reason="the Executable passed in")
        return Backend(model, info, [], [])
    raise InvalidArgumentError(
        f"cannot benchmark a {type(model).__name__}",
        hint="pass a model path (.plan/.engine/.onnx), 'bundled' or None, an edgert Engine, "
             "or an Executable")
