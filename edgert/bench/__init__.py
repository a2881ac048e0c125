"""Benchmarks the way a robot runs a model: ``edgert bench`` as a library call.

:func:`run` runs a model in a periodic loop (or back to back) on the best backend here, under a
real-time policy where permitted, with thermal, power and NVML readings alongside, and returns a
:class:`BenchReport`: throughput; total, enqueue, H2D, compute and D2H latency; wake-up jitter;
deadline misses; temperatures and throttling at start and end; warnings; the environment.

    >>> from edgert import bench
    >>> report = bench.run(duration_s=1.0)                  # doctest: +SKIP
    >>> print(report.render())                              # doctest: +SKIP
    >>> report.latency["total"].p99_us, report.deadline_misses  # doctest: +SKIP

:func:`run_under_load` measures a control model's latency beside a background GPU load (a
persistent GEMM, convolutions or another model), optionally on SM partitions (docs/multimodel.md).

See docs/bench.md.
"""

from edgert.bench._backend import BackendInfo
from edgert.bench._load import GpuLoad, LoadThroughput, SessionLoad
from edgert.bench._load_kernels import LoadExecutable, LoadKernels, LoadKind
from edgert.bench._multimodel import LoadReport, ModelPlacement, control_latency, run_under_load
from edgert.bench._options import BenchOptions, BenchOverrides
from edgert.bench._report import (
    SCHEMA,
    STAGES,
    BenchProgress,
    BenchReport,
    BenchWarning,
    RealtimeOutcome,
    ThermalSummary,
)
from edgert.bench._run import Notify, Progress, run, run_options
from edgert.bench._sampler import SensorSample

__all__ = [
    "SCHEMA",
    "STAGES",
    "BackendInfo",
    "BenchOptions",
    "BenchOverrides",
    "BenchProgress",
    "BenchReport",
    "BenchWarning",
    "GpuLoad",
    "LoadExecutable",
    "LoadKernels",
    "LoadKind",
    "LoadReport",
    "LoadThroughput",
    "ModelPlacement",
    "Notify",
    "Progress",
    "RealtimeOutcome",
    "SensorSample",
    "SessionLoad",
    "ThermalSummary",
    "control_latency",
    "run",
    "run_options",
    "run_under_load",
]
