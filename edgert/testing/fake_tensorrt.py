"""A fake TensorRT module: the part of TensorRT's runtime API edgert uses, on host memory.

Pass it where a TensorRT module is expected -- ``Engine.load(plan, trt_module=fake_tensorrt)``
-- and every engine and session path runs on a machine without a GPU, failure modes included.
It declares ``EDGERT_REQUIRES_CUDA = False``, so edgert skips its CUDA check for it (and only for
it); ``EDGERT_FLAVOUR`` says which runtime it imitates ("full" here; :func:`make_module` makes
lean and dispatch variants, or other versions).

Its plans are a small documented format (see ``edgert/testing/_fake_trt_plan.py``, made with
:func:`make_plan`): TensorRT's ``ftrt`` tag and version bytes, then a JSON header of tensors,
profiles and flags, and the name of a Python function (from a registry you can extend with
:func:`register_function`) that computes the outputs. Execution reads inputs from and writes
outputs to the raw *host* addresses given to ``set_tensor_address``.

What it imitates:

* deserialization failures with TensorRT's messages: bad magic, another TensorRT version
  (``Version tag does not match``), a non-version-compatible plan on lean/dispatch
  (``Unexpected call to stub loadRunner``), plus truncated plans, version-compatible plans
  without ``engine_host_code_allowed``, no writable place for the embedded lean runtime, and an
  out-of-memory failure (``make_plan(fail_deserialize="oom")``);
* context allocation failure (``fail_context=True``) and failing enqueues
  (``fail_enqueue_after=N``);
* dynamic shapes with optimization profiles, outputs whose shape follows an input, and
  data-dependent output shapes (NonZero: the ``nonzero`` and ``onnx.NonZero`` functions), written
  either to a preallocated address or through an ``IOutputAllocator`` that the context calls on
  every enqueue exactly as TensorRT's bindings do (``reallocate_output_async`` on 10+, else
  ``reallocate_output``, then ``notify_shape``);
* logging through the ``ILogger`` given to ``Runtime``, errors at ERROR severity, or, once an
  ``IErrorRecorder`` is set as the runtime's ``error_recorder``, errors reported to it with
  their ``ErrorCodeTRT`` instead.

Version rules: a plan loads when its major.minor equals the runtime's; a version-compatible plan
also loads on a newer runtime of the same major version (only with ``engine_host_code_allowed``).
"""

from __future__ import annotations

import os
import tempfile
import types
from typing import Any

from edgert.testing._fake_trt_alloc import IOutputAllocator
from edgert.testing._fake_trt_builder import add_builder
from edgert.testing._fake_trt_engine import ICudaEngine, IExecutionContext
from edgert.testing._fake_trt_errors import ErrorCodeTRT, IErrorRecorder, code_of
from edgert.testing._fake_trt_plan import (
    FakeTensor,
    PlanError,
    make_plan,
    parse_plan,
    register_function,
)
from edgert.testing._fake_trt_types import (
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    ILogger,
    Logger,
    TempfileControlFlag,
    TensorIOMode,
    TensorLocation,
)

#: The TensorRT version the fake claims to be (plans record it; a mismatch is reported like TRT).
__version__ = "10.8.0.43"
#: Tells ``Engine.load`` this module computes on host memory and needs no CUDA device.
EDGERT_REQUIRES_CUDA = False
#: The flavour ``Engine.load`` reports for engines loaded through the fake.
EDGERT_FLAVOUR = "full"

#: Names that exist only in the fake (everything else imitates tensorrt and is checked against it).
FAKE_ONLY_NAMES = ("EDGERT_FLAVOUR", "EDGERT_REQUIRES_CUDA", "FAKE_ONLY_NAMES", "FakeTensor",
                   "bundled_policy_plan", "make_module", "make_plan", "register_function")

__all__ = [
    "EDGERT_FLAVOUR",
    "EDGERT_REQUIRES_CUDA",
    "FAKE_ONLY_NAMES",
    "DataType",
    "Dims",
    "ErrorCodeTRT",
    "ExecutionContextAllocationStrategy",
    "FakeTensor",
    "ICudaEngine",
    "IErrorRecorder",
    "IExecutionContext",
    "ILogger",
    "IOutputAllocator",
    "IPluginRegistry",
    "Logger",
    "Runtime",
    "TempfileControlFlag",
    "TensorIOMode",
    "TensorLocation",
    "__version__",
    "bundled_policy_plan",
    "get_plugin_registry",
    "make_module",
    "make_plan",
    "register_function",
]

_ERROR, _INFO = ILogger.Severity.ERROR, ILogger.Severity.INFO


def _serialization_number(version: tuple[int, ...]) -> int:
    # Stands in for TensorRT's internal serialization version (e.g. 237); invented by the fake.
    return 200 + 10 * version[0] + version[1]


class IPluginRegistry:
    """Plugin libraries: the fake only checks that the file exists."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._libraries: list[str] = []

    def load_library(self, plugin_path: str) -> object | None:
        """Load a plugin library; returns a handle, or None (and logs) if it cannot be opened."""
        if not os.path.isfile(plugin_path):
            self._log(_ERROR, f"IPluginRegistry::loadLibrary: Error Code 1: Internal Error "
                              f"(fake_tensorrt: cannot open plugin library {plugin_path})")
            return None
        self._libraries.append(plugin_path)
        return object()


class Runtime:
    """Deserializes fake plans; logs through the ``ILogger`` it was given."""

    _flavour = EDGERT_FLAVOUR
    _version = __version__

    def __init__(self, logger: ILogger) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("__init__(): incompatible constructor arguments: Runtime(logger: "
                            "ILogger)")
        self._logger = logger
        self.engine_host_code_allowed = False
        self.temporary_directory = ""
        self.tempfile_control_flags = (1 << TempfileControlFlag.ALLOW_IN_MEMORY_FILES) | (
            1 << TempfileControlFlag.ALLOW_TEMPORARY_FILES)
        self.max_threads = 1
        self._recorder: IErrorRecorder | None = None
        self._registry = IPluginRegistry(self._log)

    @property
    def logger(self) -> ILogger:
        """The logger given at construction."""
        return self._logger

    @property
    def error_recorder(self) -> IErrorRecorder | None:
        """Where errors go instead of the logger; None sends them to the logger."""
        return self._recorder

    @error_recorder.setter
    def error_recorder(self, recorder: IErrorRecorder | None) -> None:
        self._recorder = recorder

    def _log(self, severity: int, message: str) -> None:
        recorder = self._recorder
        if recorder is not None and int(severity) <= _ERROR:
            recorder.report_error(code_of(message), message)  # type: ignore[attr-defined]
            return
        self._logger.log(ILogger.Severity(int(severity)), message)

    def get_plugin_registry(self) -> IPluginRegistry:
        """This runtime's plugin registry."""
        return self._registry

    def _lean_runtime_unpackable(self) -> str | None:
        flags = int(self.tempfile_control_flags)
        if flags & (1 << TempfileControlFlag.ALLOW_IN_MEMORY_FILES):
            return None
        directory = self.temporary_directory or tempfile.gettempdir()
        if flags & (1 << TempfileControlFlag.ALLOW_TEMPORARY_FILES) and os.access(
                directory, os.W_OK | os.X_OK):
            return None
        return f"cannot unpack the embedded lean runtime: no in-memory files, and {directory} " \
               "is not usable for temporary files"

    def _version_problem(self, plan_version: tuple[int, ...], compatible: bool) -> str | None:
        mine = tuple(int(p) for p in self._version.split(".")[:2])
        theirs = tuple(plan_version[:2])
        if compatible:
            if not self.engine_host_code_allowed:
                return ("IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                        "(Cannot deserialize engine with lean runtime since "
                        "IRuntime::getEngineHostCodeAllowed() is false.)")
            if theirs[0] == mine[0] and theirs <= mine:
                unpack = self._lean_runtime_unpackable()
                return None if unpack is None else (
                    f"IRuntime::deserializeCudaEngine: Error Code 1: Internal Error "
                    f"(fake_tensorrt: {unpack})")
        elif self._flavour in ("lean", "dispatch"):
            return ("IRuntime::deserializeCudaEngine: Error Code 1: Internal Error (Unexpected "
                    "call to stub loadRunner for ReformatRunner)")
        elif theirs == mine:
            return None
        return ("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                "assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not "
                f"match. Note: Current Version: {_serialization_number(mine)}, Serialized Engine "
                f"Version: {_serialization_number(theirs)})")

    def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
        """An engine from plan bytes (any buffer), or None with the reason logged."""
        data = bytes(memoryview(serialized_engine))
        try:
            plan = parse_plan(data)
        except PlanError as err:
            self._log(_ERROR, str(err))
            return None
        problem = self._version_problem(plan.version, plan.version_compatible)
        if problem is None and plan.fail.get("deserialize") == "oom":
            problem = ("IRuntime::deserializeCudaEngine: Error Code 2: OutOfMemory (fake_tensorrt:"
                       f" could not allocate {plan.device_memory_size} bytes)")
        if problem is not None:
            self._log(_ERROR, problem)
            return None
        self._log(_INFO, f"Loaded engine size: {len(data) >> 20} MiB")
        return ICudaEngine(plan, self._log, int(self._version.split(".")[0]))


_global_registry = IPluginRegistry(lambda severity, message: None)


def get_plugin_registry() -> IPluginRegistry:
    """The process-wide plugin registry (runtimes also have their own)."""
    return _global_registry


def make_module(*, flavour: str = "full", version: str = __version__) -> types.ModuleType:
    """A fake TensorRT module imitating another flavour (``lean``, ``dispatch``) or version.

    Raises:
        ValueError: Unknown flavour.
    """
    if flavour not in ("full", "lean", "dispatch"):
        raise ValueError(f"flavour must be full, lean or dispatch, got {flavour!r}")
    module = types.ModuleType(f"{__name__}[{flavour} {version}]", __doc__)
    for name in __all__:
        setattr(module, name, globals()[name])
    module.Runtime = type("Runtime", (Runtime,), {  # type: ignore[attr-defined]
        "_flavour": flavour, "_version": version, "__doc__": Runtime.__doc__})
    module.__version__ = version  # type: ignore[attr-defined]
    module.EDGERT_FLAVOUR = flavour  # type: ignore[attr-defined]
    add_builder(vars(module), flavour=flavour, version=version)
    return module


add_builder(globals(), flavour=EDGERT_FLAVOUR, version=__version__)  # the builder: not in __all__


def bundled_policy_plan(*, version: str = __version__, version_compatible: bool = False,
                        **flags: Any) -> bytes:
    """A fake plan of edgert's bundled control policy (``obs`` (-1, 48) -> ``actions`` (-1, 12)).

    It computes :func:`edgert.models.policy_reference`. ``flags`` go to :func:`make_plan`
    (e.g. ``fail_enqueue_after=3``).
    """
    from edgert import models

    batch = (models.MAX_BATCH, models.OBS_DIM)
    return make_plan(
        inputs=[FakeTensor(models.INPUT_NAME, "FLOAT", (-1, models.OBS_DIM),
                           profiles=[((1, models.OBS_DIM), (1, models.OBS_DIM), batch)])],
        outputs=[FakeTensor(models.OUTPUT_NAME, "FLOAT",
                            (f"{models.INPUT_NAME}:0", models.ACTION_DIM))],
        function="edgert.control_policy", version=version,
        version_compatible=version_compatible, device_memory_size=1 << 19,
        name="control_policy", **flags)
