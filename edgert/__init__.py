"""edgert: predictable-latency neural network inference for NVIDIA edge hardware.

The public API is re-exported here; everything else is private. Nothing is imported until it is
used (PEP 562): ``import edgert`` loads only this file and the version, ``edgert.InferenceSession``
imports :mod:`edgert.session` (and numpy) on first access, and a control process that imports only
:mod:`edgert.realtime` or :mod:`edgert.power` never pays for sessions, CUDA or TensorRT (nor for
numpy until it makes a :class:`~edgert.realtime.PeriodicLoop`, whose statistics use numpy).
"""

import importlib as _importlib
import logging as _logging
import typing as _typing

from edgert._version import __version__

# How to add a public name: list it in _EXPORTS under the module that defines it, add the same
# import to the TYPE_CHECKING block below (what mypy and editors see) and add it to __all__. A new
# public subpackage goes into _SUBPACKAGES, the TYPE_CHECKING block and __all__. One name per line
# keeps merges simple. tests/test_imports.py fails when the three lists disagree, and when
# `import edgert` starts importing a subpackage eagerly; tests/test_typing_exports.py runs mypy.

#: Subpackages reachable as attributes (``edgert.bench``), imported on first access.
_SUBPACKAGES = (
    "bench",
    "cuda",
    "doctor",
    "engine",
    "kernels",
    "memory",
    "models",
    "platform",
    "power",
    "realtime",
    "session",
    "stats",
    "store",
    "testing",
)

#: The module that defines each public name; the name is imported from it on first access.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "edgert.engine": (
        "Engine",
        "EngineFlavour",
        "EngineFormat",
        "Executable",
        "IntegrityStatus",
        "LoadOptions",
    "OnnxRuntimeOptions",
        "OutputAllocator",
        "Placement",
        "ProfileShape",
        "TensorLocation",
        "TensorMode",
        "TensorSpec",
        "read_model_header",
    ),
    "edgert.errors": (
        "CommandError",
        "CommandTimeoutError",
        "ConcurrentUseError",
        "CudaError",
        "EdgeRTError",
        "EngineLoadError",
        "InferenceError",
        "InputError",
        "IntegrityError",
        "InvalidArgumentError",
        "ModelFormatError",
        "NotSupportedError",
        "OutOfMemoryError",
        "PermissionDeniedError",
        "PoolExhausted",
        "RealtimeError",
        "RebootRequiredError",
        "RequestTimeoutError",
        "ResourceBusyError",
        "ResourceClosedError",
        "VersionMismatchError",
    ),
    "edgert.memory": (
        "BufferPool",
        "DeviceBuffer",
        "HostBuffer",
        "Lease",
        "PoolOptions",
        "PoolStats",
    ),
    "edgert.power": (
        "CommandResult",
        "CommandRunner",
        "JetsonClocks",
        "NvmlSensors",
        "NvpModel",
        "PowerMode",
        "PowerRails",
        "RailReading",
        "SubprocessRunner",
        "ThermalGovernor",
        "ThermalLevel",
        "ThermalZones",
    ),
    "edgert.realtime": (
        "ActivePolicy",
        "CapabilityCheck",
        "CapabilityVerdict",
        "LoopReport",
        "MemoryLock",
        "OverrunPolicy",
        "PeriodicLoop",
        "PolicyReport",
        "RealtimeCapabilities",
        "RealtimePolicy",
        "RealtimeThread",
        "SchedPolicy",
        "SettingOutcome",
        "Tick",
        "lock_memory",
        "realtime_capabilities",
    ),
    "edgert.session": (
        "GraphMode",
        "InferenceSession",
        "IoMode",
        "ModelGroup",
        "OutputMode",
        "Pending",
        "RequestTimings",
        "SessionOptions",
        "SessionStats",
        "SwapResult",
        "SyncMode",
        "TimingMode",
    ),
    "edgert.stats": (
        "LatencyHistogram",
        "LatencyStats",
        "LatencySummary",
    ),
    "edgert.store": (
        "BuildError",
        "BuildOptions",
        "EngineBuilder",
        "EngineCache",
        "HealthCheckError",
        "HealthPolicy",
        "HealthReport",
        "ModelStore",
        "StoreError",
    ),
    "edgert.cuda": (
        "GpuPartition",
        "GpuPartitions",
        "green_context_support",
        "partition_sms",
    ),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

if _typing.TYPE_CHECKING:  # what mypy and editors see; at run time __getattr__ below
    from edgert import (
        bench,
        cuda,
        doctor,
        engine,
        kernels,
        memory,
        models,
        platform,
        power,
        realtime,
        session,
        stats,
        store,
        testing,
    )
    from edgert.cuda import (
        GpuPartition,
        GpuPartitions,
        green_context_support,
        partition_sms,
    )
    from edgert.engine import (
        Engine,
        EngineFlavour,
        EngineFormat,
        Executable,
        IntegrityStatus,
        LoadOptions,
        OnnxRuntimeOptions,
        OutputAllocator,
        Placement,
        ProfileShape,
        TensorLocation,
        TensorMode,
        TensorSpec,
        read_model_header,
    )
    from edgert.errors import (
        CommandError,
        CommandTimeoutError,
        ConcurrentUseError,
        CudaError,
        EdgeRTError,
        EngineLoadError,
        InferenceError,
        InputError,
        IntegrityError,
        InvalidArgumentError,
        ModelFormatError,
        NotSupportedError,
        OutOfMemoryError,
        PermissionDeniedError,
        PoolExhausted,
        RealtimeError,
        RebootRequiredError,
        RequestTimeoutError,
        ResourceBusyError,
        ResourceClosedError,
        VersionMismatchError,
    )
    from edgert.memory import (
        BufferPool,
        DeviceBuffer,
        HostBuffer,
        Lease,
        PoolOptions,
        PoolStats,
    )
    from edgert.power import (
        CommandResult,
        CommandRunner,
        JetsonClocks,
        NvmlSensors,
        NvpModel,
        PowerMode,
        PowerRails,
        RailReading,
        SubprocessRunner,
        ThermalGovernor,
        ThermalLevel,
        ThermalZones,
    )
    from edgert.realtime import (
        ActivePolicy,
        CapabilityCheck,
        CapabilityVerdict,
        LoopReport,
        MemoryLock,
        OverrunPolicy,
        PeriodicLoop,
        PolicyReport,
        RealtimeCapabilities,
        RealtimePolicy,
        RealtimeThread,
        SchedPolicy,
        SettingOutcome,
        Tick,
        lock_memory,
        realtime_capabilities,
    )
    from edgert.session import (
        GraphMode,
        InferenceSession,
        IoMode,
        ModelGroup,
        OutputMode,
        Pending,
        RequestTimings,
        SessionOptions,
        SessionStats,
        SwapResult,
        SyncMode,
        TimingMode,
    )
    from edgert.stats import (
        LatencyHistogram,
        LatencyStats,
        LatencySummary,
    )
    from edgert.store import (
        BuildError,
        BuildOptions,
        EngineBuilder,
        EngineCache,
        HealthCheckError,
        HealthPolicy,
        HealthReport,
        ModelStore,
        StoreError,
    )

# A library never decides where its log lines go; the application configures logging.
_logging.getLogger("edgert").addHandler(_logging.NullHandler())


# Hidden from type checkers: they see the imports above, so a misspelt name stays an error
# (a visible module __getattr__ would make every attribute of edgert type-check as Any).
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        """Import a public name (or subpackage) on first access and keep it in the module."""
        if name in _SUBPACKAGES:
            value = _importlib.import_module(f"edgert.{name}")
        elif name in _LAZY:
            value = getattr(_importlib.import_module(_LAZY[name]), name)
        else:
            raise AttributeError(f"module 'edgert' has no attribute {name!r}")
        globals()[name] = value  # later accesses are plain lookups
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActivePolicy",
    "BufferPool",
    "BuildError",
    "BuildOptions",
    "CapabilityCheck",
    "CapabilityVerdict",
    "CommandError",
    "CommandResult",
    "CommandRunner",
    "CommandTimeoutError",
    "ConcurrentUseError",
    "CudaError",
    "DeviceBuffer",
    "EdgeRTError",
    "Engine",
    "EngineBuilder",
    "EngineCache",
    "EngineFlavour",
    "EngineFormat",
    "EngineLoadError",
    "Executable",
    "GpuPartition",
    "GpuPartitions",
    "GraphMode",
    "HealthCheckError",
    "HealthPolicy",
    "HealthReport",
    "HostBuffer",
    "InferenceError",
    "InferenceSession",
    "InputError",
    "IntegrityError",
    "IntegrityStatus",
    "InvalidArgumentError",
    "IoMode",
    "JetsonClocks",
    "LatencyHistogram",
    "LatencyStats",
    "LatencySummary",
    "Lease",
    "LoadOptions",
    "LoopReport",
    "MemoryLock",
    "ModelFormatError",
    "ModelGroup",
    "ModelStore",
    "NotSupportedError",
    "NvmlSensors",
    "NvpModel",
    "OnnxRuntimeOptions",
    "OutOfMemoryError",
    "OutputAllocator",
    "OutputMode",
    "OverrunPolicy",
    "Pending",
    "PeriodicLoop",
    "PermissionDeniedError",
    "Placement",
    "PolicyReport",
    "PoolExhausted",
    "PoolOptions",
    "PoolStats",
    "PowerMode",
    "PowerRails",
    "ProfileShape",
    "RailReading",
    "RealtimeCapabilities",
    "RealtimeError",
    "RealtimePolicy",
    "RealtimeThread",
    "RebootRequiredError",
    "RequestTimeoutError",
    "RequestTimings",
    "ResourceBusyError",
    "ResourceClosedError",
    "SchedPolicy",
    "SessionOptions",
    "SessionStats",
    "SettingOutcome",
    "StoreError",
    "SubprocessRunner",
    "SwapResult",
    "SyncMode",
    "TensorLocation",
    "TensorMode",
    "TensorSpec",
    "ThermalGovernor",
    "ThermalLevel",
    "ThermalZones",
    "Tick",
    "TimingMode",
    "VersionMismatchError",
    "__version__",
    "bench",
    "cuda",
    "doctor",
    "engine",
    "green_context_support",
    "kernels",
    "lock_memory",
    "memory",
    "models",
    "partition_sms",
    "platform",
    "power",
    "read_model_header",
    "realtime",
    "realtime_capabilities",
    "session",
    "stats",
    "store",
    "testing",
]
