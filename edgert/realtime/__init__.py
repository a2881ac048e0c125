"""Real-time execution for control loops: scheduling, affinity, locked memory, GC, periodic loops.

Nothing here imports CUDA, so a control process can use it without a GPU stack.

* :class:`RealtimePolicy` - what to change for the calling thread (SCHED_FIFO/RR priority, CPU
  affinity, mlockall, prefaulting, GC freeze, PM QoS); ``policy.apply()`` is a context manager
  that restores everything on exit and reports what was applied and refused.
* :func:`lock_memory` - mlockall as a context manager.
* :class:`RealtimeThread` - a thread that applies a policy to itself; exceptions reach join().
* :class:`PeriodicLoop` - absolute-deadline periodic loop with wake-up latency, step time,
  deadline misses and skipped periods.
* :class:`~edgert.stats.LatencyStats` - the fixed-memory latency recorder (re-exported).
* :func:`realtime_capabilities` - what would succeed on this machine, and why not.

See docs/realtime.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgert._latency import LatencyHistogram, LatencySummary
from edgert.realtime._capability import (
    CapabilityCheck,
    CapabilityVerdict,
    RealtimeCapabilities,
    realtime_capabilities,
)
from edgert.realtime._loop import LoopReport, OverrunPolicy, PeriodicLoop, Tick
from edgert.realtime._memlock import MemoryLock, lock_memory
from edgert.realtime._policy import ActivePolicy, PolicyReport, RealtimePolicy, SettingOutcome
from edgert.realtime._sched import SchedPolicy
from edgert.realtime._thread import RealtimeThread

if TYPE_CHECKING:
    from edgert.stats import LatencyStats


if not TYPE_CHECKING:  # type checkers see the import above; a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        # LatencyStats needs numpy; importing edgert.realtime must not (DESIGN.md, targets).
        if name == "LatencyStats":
            from edgert.stats import LatencyStats

            return LatencyStats
        raise AttributeError(f"module 'edgert.realtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActivePolicy",
    "CapabilityCheck",
    "CapabilityVerdict",
    "LatencyHistogram",
    "LatencyStats",
    "LatencySummary",
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
]
