"""``ICudaEngine`` and ``IExecutionContext`` of the fake TensorRT.

The context computes on the HOST memory whose raw addresses were given to
``set_tensor_address`` (CI has no GPU); the stream handle is ignored and the work is done before
``execute_async_v3`` returns. An output with an ``IOutputAllocator`` (``set_output_allocator``)
gets its memory from that allocator on every enqueue instead, then its shape through
``notify_shape`` (see :mod:`edgert.testing._fake_trt_alloc`). As in TensorRT, the context's
``get_tensor_shape`` keeps -1 for data-dependent dimensions even after a run: only the allocator
learns the real shape. Failures return False/None and log through the runtime's logger,
as TensorRT does. Messages that start with ``fake_tensorrt:`` are the fake's own wording;
the others follow TensorRT's format.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert.testing._fake_trt_alloc import IOutputAllocator, call_notify, call_reallocate
from edgert.testing._fake_trt_plan import NUMPY_DTYPES, ParsedPlan, get_function
from edgert.testing._fake_trt_types import (
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    TensorIOMode,
    TensorLocation,
)

__all__ = ["ICudaEngine", "IExecutionContext"]

LogFn = Callable[[int, str], None]
_ERROR = 1
_PACKED = (DataType.INT4, DataType.FP4)
_STATIC = ExecutionContextAllocationStrategy.STATIC


def _nbytes(dtype: DataType, shape: Sequence[int]) -> int:
    count = math.prod(shape)
    return (count + 1) // 2 if dtype in _PACKED else count * np.dtype(NUMPY_DTYPES[dtype]).itemsize


class ICudaEngine:
    """A deserialized fake engine. Made by ``Runtime.deserialize_cuda_engine``."""

    def __init__(self, plan: ParsedPlan, log: LogFn, api_major: int = 10) -> None:
        self._plan = plan
        self._log = log
        # The major version of the runtime that deserialized it: it decides which output
        # allocator callback a context calls (8.6 knows no reallocate_output_async).
        self._api_major = api_major
        self._tensors = {t["name"]: t for t in plan.tensors}
        self._order = [t["name"] for t in plan.tensors]

    @property
    def name(self) -> str:
        """The engine's name."""
        return self._plan.name

    @property
    def num_io_tensors(self) -> int:
        """Number of input and output tensors."""
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        """Number of optimization profiles (at least 1)."""
        return self._plan.num_profiles

    @property
    def device_memory_size_v2(self) -> int:
        """Scratch memory a context needs, as the plan declares."""
        return self._plan.device_memory_size

    def get_device_memory_size_for_profile_v2(self, profile_index: int) -> int:
        """Scratch memory for one profile (the same for all, in the fake)."""
        return self._plan.device_memory_size

    def _tensor(self, name: str, call: str) -> dict[str, Any] | None:
        t = self._tensors.get(name)
        if t is None:
            self._log(_ERROR, f"ICudaEngine::{call}: Error Code 3: API Usage Error (Parameter "
                              f"check failed, condition: name is a tensor of this engine. "
                              f"fake_tensorrt: no tensor named {name!r})")
        return t

    def get_tensor_name(self, index: int) -> str:
        """The name of I/O tensor ``index``."""
        if not 0 <= index < len(self._order):
            self._log(_ERROR, f"ICudaEngine::getIOTensorName: Error Code 3: API Usage Error "
                              f"(index {index} out of range)")
            return ""
        return str(self._order[index])

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        """INPUT, OUTPUT, or NONE for an unknown name."""
        t = self._tensors.get(name)
        return TensorIOMode[t["mode"]] if t is not None else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        """The tensor's element type."""
        t = self._tensor(name, "getTensorDataType")
        return DataType[t["dtype"]] if t is not None else DataType.FLOAT

    def get_tensor_shape(self, name: str) -> Dims:
        """The tensor's shape, -1 for dynamic or data-dependent dimensions."""
        t = self._tensor(name, "getTensorShape")
        if t is None:
            return Dims(())
        return Dims(d if isinstance(d, int) else -1 for d in t["shape"])

    def get_tensor_location(self, name: str) -> TensorLocation:
        """DEVICE or HOST."""
        t = self._tensor(name, "getTensorLocation")
        return TensorLocation[t["location"]] if t is not None else TensorLocation.DEVICE

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        """``[min, opt, max]`` of a dynamic input under a profile; ``[]`` (and an error) else."""
        t = self._tensor(name, "getProfileShape")
        if t is None or not t["profiles"] or not 0 <= profile_index < len(t["profiles"]):
            if t is not None:
                self._log(_ERROR, f"ICudaEngine::getProfileShape: Error Code 3: API Usage Error "
                                  f"(fake_tensorrt: {name!r} has no profile {profile_index})")
            return []
        return [Dims(s) for s in t["profiles"][profile_index]]

    def is_shape_inference_io(self, name: str) -> bool:
        """Fake engines have no shape tensors."""
        return False

    def create_execution_context(
        self, strategy: ExecutionContextAllocationStrategy = _STATIC,
    ) -> IExecutionContext | None:
        """A new context, or None if the plan asks to simulate an allocation failure."""
        if self._plan.fail.get("context"):
            self._log(_ERROR, "ICudaEngine::createExecutionContext: Error Code 2: OutOfMemory "
                              f"(fake_tensorrt: could not allocate {self._plan.device_memory_size}"
                              " bytes of device memory)")
            return None
        return IExecutionContext(self)


class IExecutionContext:
    """An execution context of a fake engine; see the module documentation."""

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.name = ""
        self._log = engine._log
        self._t = engine._tensors
        self._profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {
            n: tuple(t["shape"]) for n, t in self._t.items()
            if t["mode"] == "INPUT" and -1 not in t["shape"]}
        self._addresses: dict[str, int] = {}
        self._allocators: dict[str, Any] = {}
        self._runs = 0

    @property
    def active_optimization_profile(self) -> int:
        """The profile in use."""
        return self._profile

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        """Switch profile (done at once; the stream is ignored)."""
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            self._log(_ERROR, "IExecutionContext::setOptimizationProfileAsync: Error Code 3: API "
                              f"Usage Error (profile index {profile_index} out of range)")
            return False
        self._profile = profile_index
        for n, t in self._t.items():
            if t["mode"] == "INPUT" and -1 in t["shape"]:
                self._shapes.pop(n, None)
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        """Set a dynamic input's shape; False with a logged error if not allowed."""
        t = self._t.get(name)
        dims = tuple(int(d) for d in shape)
        problem = None
        if t is None or t["mode"] != "INPUT":
            problem = f"{name!r} is not an input tensor"
        elif len(dims) != len(t["shape"]) or any(
                d < 0 or s not in (-1, d) for d, s in zip(dims, t["shape"], strict=True)):
            problem = f"shape {dims} does not match {tuple(t['shape'])}"
        elif t["profiles"]:
            lo, _, hi = t["profiles"][self._profile]
            if any(not a <= d <= b for a, d, b in zip(lo, dims, hi, strict=True)):
                problem = (f"shape {dims} of {name!r} is outside profile {self._profile} "
                           f"(min {tuple(lo)}, max {tuple(hi)})")
        if problem:
            self._log(_ERROR, "IExecutionContext::setInputShape: Error Code 3: API Usage Error "
                              f"(Parameter check failed. fake_tensorrt: {problem})")
            return False
        self._shapes[name] = dims
        return True

    def _resolve(self, t: dict[str, Any], use_max: bool = False) -> tuple[int, ...]:
        """An output's shape from the input shapes; -1 where it depends on the data (its
        ``max_shape`` bound with ``use_max``, -1 if the plan gives none)."""
        out = []
        for i, d in enumerate(t["shape"]):
            if isinstance(d, int) and d >= 0:
                out.append(d)
            elif isinstance(d, str):
                source, _, axis = d.rpartition(":")
                src = self._t[source]
                if use_max and -1 in src["shape"]:
                    out.append(src["profiles"][self._profile][2][int(axis)])
                else:
                    shape = self._shapes.get(source)
                    out.append(shape[int(axis)] if shape is not None else -1)
            else:
                out.append(t["max_shape"][i] if use_max and t["max_shape"] is not None else -1)
        return tuple(out)

    def get_tensor_shape(self, name: str) -> Dims:
        """An input's set shape, or an output's shape inferred from the inputs (-1 unknown)."""
        t = self._t.get(name)
        if t is None:
            self._log(_ERROR, f"IExecutionContext::getTensorShape: Error Code 3: API Usage Error "
                              f"(fake_tensorrt: no tensor named {name!r})")
            return Dims(())
        if t["mode"] == "INPUT":
            return Dims(self._shapes.get(name, tuple(t["shape"])))
        return Dims(self._resolve(t))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        """Bind a tensor to raw HOST memory at ``memory``."""
        if name not in self._t:
            self._log(_ERROR, "IExecutionContext::setTensorAddress: Error Code 3: API Usage Error"
                              f" (fake_tensorrt: no tensor named {name!r})")
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        """The address bound to a tensor (0 if none); for an output with an allocator, the
        address the allocator returned last."""
        return self._addresses.get(name, 0)

    def set_output_allocator(self, name: str, output_allocator: IOutputAllocator | None) -> bool:
        """Have ``output_allocator`` provide output ``name``'s memory on every enqueue; ``None``
        unsets it. False (and a logged error) if ``name`` is not an output.

        Raises:
            TypeError: ``output_allocator`` is neither an ``IOutputAllocator`` nor None (as the
                bindings' argument check does).
        """
        if output_allocator is not None and not isinstance(output_allocator, IOutputAllocator):
            raise TypeError("set_output_allocator(): incompatible function arguments. The "
                            "following argument types are supported: (self, name: str, "
                            "output_allocator: IOutputAllocator) -> bool")
        t = self._t.get(name)
        if t is None or t["mode"] != "OUTPUT":
            self._log(_ERROR, "IExecutionContext::setOutputAllocator: Error Code 3: API Usage "
                              f"Error (fake_tensorrt: {name!r} is not an output tensor)")
            return False
        if output_allocator is None:
            self._allocators.pop(name, None)
        else:
            self._allocators[name] = output_allocator
        return True

    def get_output_allocator(self, name: str) -> IOutputAllocator | None:
        """The allocator set for output ``name``, or None."""
        return self._allocators.get(name)

    def infer_shapes(self) -> list[str]:
        """Names of inputs whose shapes are not yet specified (empty on success)."""
        return [n for n, t in self._t.items() if t["mode"] == "INPUT" and n not in self._shapes]

    @property
    def all_binding_shapes_specified(self) -> bool:
        """Whether every input shape is specified."""
        return not self.infer_shapes()

    def get_max_output_size(self, name: str) -> int:
        """Upper bound in bytes of an output under the active profile (-1 if unknown)."""
        t = self._t.get(name)
        if t is None or t["mode"] != "OUTPUT":
            return -1
        shape = self._resolve(t, use_max=True)
        return -1 if -1 in shape else _nbytes(DataType[t["dtype"]], shape)

    def _fail(self, text: str) -> bool:
        self._log(_ERROR, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error ({text})")
        return False

    def _view(self, t: dict[str, Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
        dtype = DataType[t["dtype"]]
        size = _nbytes(dtype, shape)
        raw = memoryview((ctypes.c_char * size).from_address(self._addresses[t["name"]])).cast("B")
        if dtype in _PACKED:
            return np.frombuffer(raw, dtype=np.uint8)
        return np.frombuffer(raw, dtype=np.dtype(NUMPY_DTYPES[dtype])).reshape(shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Compute synchronously on host memory; the stream handle is ignored."""
        limit = self.engine._plan.fail.get("enqueue_after")
        if limit is not None and self._runs >= limit:
            self._log(_ERROR, "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime "
                              "(an illegal memory access was encountered)")
            return False
        missing = self.infer_shapes()
        if missing:
            return self._fail(f"fake_tensorrt: input shape of {missing[0]!r} is not specified; "
                              "call set_input_shape first")
        for n in self._t:
            if not self._addresses.get(n) and n not in self._allocators:
                return self._fail(f"Address is not set for tensor {n}. Call setTensorAddress "
                                  "before enqueue/execute.")
        inputs = {n: self._view(t, self._shapes[n]) for n, t in self._t.items()
                  if t["mode"] == "INPUT"}
        function = get_function(self.engine._plan.function)
        if function is None:
            return self._fail(f"fake_tensorrt: no function {self.engine._plan.function!r} is "
                              "registered (fake_tensorrt.register_function)")
        try:
            result = function(inputs)
        except Exception as err:
            return self._fail(f"fake_tensorrt: function raised {type(err).__name__}: {err}")
        outputs = [t for t in self._t.values() if t["mode"] == "OUTPUT"]
        values = ([result[t["name"]] for t in outputs] if isinstance(result, dict)
                  else list(result) if isinstance(result, (list, tuple)) else [result])
        if len(values) != len(outputs):
            return self._fail(f"fake_tensorrt: function returned {len(values)} outputs, "
                              f"expected {len(outputs)}")
        arrays = []
        for t, value in zip(outputs, values, strict=True):
            array = np.ascontiguousarray(value, dtype=NUMPY_DTYPES[DataType[t["dtype"]]])
            problem = self._check_output(t, array)
            if problem:
                return self._fail(f"fake_tensorrt: {problem}")
            arrays.append(array)
        for t, array in zip(outputs, arrays, strict=True):
            name = t["name"]
            allocator = self._allocators.get(name)
            if allocator is not None:
                # TensorRT asks for at least one byte even for an empty tensor.
                size = max(array.nbytes, 1)
                address = call_reallocate(allocator, name, self._addresses.get(name, 0), size,
                                          api_major=self.engine._api_major,
                                          stream_handle=stream_handle)
                if not address:
                    self._log(_ERROR, "IExecutionContext::enqueueV3: Error Code 2: OutOfMemory "
                                      f"(fake_tensorrt: the output allocator of {name!r} gave "
                                      f"no memory for {size} bytes)")
                    return False
                self._addresses[name] = address
            ctypes.memmove(self._addresses[name], array.ctypes.data, array.nbytes)
            if allocator is not None:
                call_notify(allocator, name, array.shape)
        self._runs += 1
        return True

    def _check_output(self, t: dict[str, Any], array: npt.NDArray[Any]) -> str | None:
        """Why a function's value for output ``t`` is impossible for the plan, or None."""
        expected = self._resolve(t)
        if array.ndim != len(expected) or any(
                e >= 0 and a != e for a, e in zip(array.shape, expected, strict=True)):
            return f"function gave {t['name']!r} shape {array.shape}, expected {expected}"
        if -1 in expected:
            limit_bytes = self.get_max_output_size(t["name"])
            if limit_bytes < 0 and t["name"] not in self._allocators:
                return (f"data-dependent output {t['name']!r} has neither a max_shape in the "
                        "plan nor an output allocator")
            if 0 <= limit_bytes < array.nbytes:
                return (f"data-dependent output {t['name']!r} of shape {array.shape} exceeds its "
                        f"max size {limit_bytes}")
        return None
