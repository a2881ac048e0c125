"""An INT8 entropy calibrator over your own sample batches, with a calibration cache file.

TensorRT up to 10.x calibrates INT8 by running representative batches through the network
(``IInt8EntropyCalibrator2``); the ranges it finds are kept in a calibration cache, so later
builds -- the first boot of every robot of a fleet -- skip the calibration pass. TensorRT 11
removed calibrators (use explicit quantization: Q/DQ nodes in the model); there
:func:`make_calibrator` raises :class:`~edgert.errors.NotSupportedError`.

Calibration batches must be on the GPU: each input is copied into a device buffer the
calibrator owns (freed by ``close()``). A TensorRT module that computes on the host (the fake)
gets host addresses instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert.engine._trt_module import requires_cuda
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.store._files import atomic_write

__all__ = ["make_calibrator"]


def _batches(batches: Sequence[Mapping[str, npt.ArrayLike]]) -> list[dict[str, Any]]:
    out = [{k: np.ascontiguousarray(v) for k, v in b.items()} for b in batches]
    if not out:
        raise InvalidArgumentError("no calibration batches",
                                   hint="give a few hundred representative samples in batches")
    names = set(out[0])
    sizes = {a.shape[0] if a.ndim else 0 for b in out for a in b.values()}
    if any(set(b) != names for b in out) or len(sizes) != 1 or 0 in sizes:
        raise InvalidArgumentError(
            "calibration batches must all have the same inputs and the same batch size "
            "(the first dimension)", hint="drop or pad the last, smaller batch")
    return out


def make_calibrator(trt_module: ModuleType, batches: Sequence[Mapping[str, npt.ArrayLike]], *,
                    cache_path: str | os.PathLike[str] | None = None, device: int = 0) -> Any:
    """An ``IInt8EntropyCalibrator2`` of ``trt_module`` over ``batches``.

    Pass it to :meth:`EngineBuilder.build` (``calibrator=``, with ``int8=True``) and keep it
    alive until the build returns; close it afterwards. With ``cache_path``, an existing cache
    is used instead of calibrating, and a new one is written there (atomically).

    Args:
        trt_module: The TensorRT module that builds (``tensorrt``, or the fake).
        batches: ``{input name: array}`` per batch, all with the same batch size.
        cache_path: The calibration cache file.
        device: CUDA device for the batch buffers.

    Raises:
        NotSupportedError: This TensorRT has no calibrators (TensorRT 11).
        InvalidArgumentError: No batches, or batches that disagree in inputs or batch size.
    """
    base = getattr(trt_module, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise NotSupportedError(
            f"TensorRT {getattr(trt_module, '__version__', '?')} has no INT8 calibrators",
            hint="quantize the model explicitly (Q/DQ nodes, e.g. with ModelOpt) and build it "
                 "with int8=True and no calibrator")
    data = _batches(batches)
    cache = Path(os.fspath(cache_path)) if cache_path is not None else None
    on_device = requires_cuda(trt_module)

    class _Calibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()  # pybind11 requires the base initialiser to run
            self._next = 0
            self._buffers: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return int(next(iter(data[0].values())).shape[0])

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            if self._next >= len(data):
                return None
            batch = data[self._next]
            self._next += 1
            pointers = []
            for name in names:
                array = batch.get(name)
                if array is None:
                    return None  # TensorRT asks for an input the batches lack: stop cleanly
                pointers.append(self._place(name, array))
            return pointers

        def _place(self, name: str, array: npt.NDArray[Any]) -> int:
            if not on_device:
                self._buffers[name] = array  # the fake reads host memory
                return int(array.ctypes.data)
            from edgert.memory import DeviceBuffer

            buffer = self._buffers.get(name)
            if buffer is None or buffer.nbytes < array.nbytes:
                if buffer is not None:
                    buffer.close()
                buffer = self._buffers[name] = DeviceBuffer(array.nbytes, device=device)
            buffer.copy_from(array, nbytes=array.nbytes)
            return int(buffer.ptr)

        def read_calibration_cache(self) -> bytes | None:
            if cache is None:
                return None
            try:
                return cache.read_bytes() or None
            except FileNotFoundError:
                return None

        def write_calibration_cache(self, cache_data: Any) -> None:
            if cache is not None:
                atomic_write(cache, bytes(memoryview(cache_data)))

        def close(self) -> None:
            for buffer in self._buffers.values():
                if hasattr(buffer, "close"):
                    buffer.close()
            self._buffers.clear()

    return _Calibrator()
