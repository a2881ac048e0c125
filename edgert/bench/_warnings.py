"""The automatic warnings of a benchmark report (the ones trtexec prints, and a control loop's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgert.bench._backend import BackendInfo
from edgert.bench._report import BenchWarning, RealtimeOutcome, ThermalSummary
from edgert.realtime import LoopReport
from edgert.stats import LatencySummary

__all__ = ["ENQUEUE_BOUND_RATIO", "RtBudget", "find_warnings", "read_rt_budget"]

#: trtexec's rule: the host is the bottleneck when the median enqueue time is above this
#: fraction of the median compute time.
ENQUEUE_BOUND_RATIO = 0.8


#: The kernel's RT throttling, documented in Documentation/scheduler/sched-rt-group.rst.
RT_THROTTLING_DOC = "https://docs.kernel.org/scheduler/sched-rt-group.html"
_RUNTIME_FILE = "/proc/sys/kernel/sched_rt_runtime_us"
_PERIOD_FILE = "/proc/sys/kernel/sched_rt_period_us"


@dataclass(frozen=True, slots=True)
class RtBudget:
    """How much of each period real-time threads may run (sched_rt_runtime_us / _period_us).

    Attributes:
        runtime_us: RT time allowed per period.
        period_us: The period.
        read: False when the files could not be read and the kernel's defaults are assumed.
    """

    runtime_us: int
    period_us: int
    read: bool = True


def read_rt_budget(root: Path) -> RtBudget | None:
    """The RT throttling budget under ``root``, or None when throttling is off (-1).

    Unreadable or malformed files give the kernel's defaults (950000 of 1000000 us), marked
    ``read=False``: throttling is on unless someone turned it off.
    """
    from edgert.platform import read_text

    try:
        runtime = int(read_text(root, _RUNTIME_FILE) or "")
        period = int(read_text(root, _PERIOD_FILE) or "")
    except ValueError:
        return RtBudget(950_000, 1_000_000, read=False)
    if runtime < 0 or period <= 0 or runtime >= period:
        return None
    return RtBudget(runtime, period)


def _rt_throttling(budget: RtBudget, latency: Mapping[str, LatencySummary | None]
                   ) -> BenchWarning:
    # A FIFO thread that never sleeps uses all of its CPU; the kernel then stops it for
    # period - runtime of every period so that other tasks can run (sched-rt-group.rst).
    pause_ms = (budget.period_us - budget.runtime_us) / 1000
    where = _RUNTIME_FILE if budget.read else \
        f"the kernel's default; {_RUNTIME_FILE} could not be read"
    total = latency.get("total")
    seen = "" if total is None or total.max_ns is None else \
        f" (the longest request here took {total.max_ns / 1e6:.1f} ms)"
    return BenchWarning(
        code="rt_throttling",
        message=f"back to back under SCHED_FIFO the loop never sleeps, and the kernel lets "
                f"real-time threads run only {budget.runtime_us / 1000:g} ms of every "
                f"{budget.period_us / 1000:g} ms ({where}): it may stop the loop for up to "
                f"{pause_ms:g} ms once a period, which shows as requests that long in the "
                f"maximum and as gaps in the timeline{seen}",
        hint="measure throughput without the real-time policy (--no-rt), or a control loop "
             f"at a rate (--rate HZ); see {RT_THROTTLING_DOC}")


def _p50(latency: Mapping[str, LatencySummary | None], stage: str) -> float | None:
    s = latency.get(stage)
    return None if s is None else s.p50_ns


def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f} us"


def _periods(n: int) -> str:
    return "1 period was" if n == 1 else f"{n:,} periods were"


def find_warnings(*, backend: BackendInfo, latency: Mapping[str, LatencySummary | None],
                  loop: LoopReport | None, realtime: RealtimeOutcome,
                  thermal: ThermalSummary, rt_budget: RtBudget | None = None
                  ) -> list[BenchWarning]:
    """Every warning the figures call for, most actionable first.

    ``rt_budget`` is given when requests ran back to back under SCHED_FIFO with RT throttling
    on (see :func:`read_rt_budget`).
    """
    out: list[BenchWarning] = []
    if rt_budget is not None:
        out.append(_rt_throttling(rt_budget, latency))
    compute = _p50(latency, "compute")
    enqueue = _p50(latency, "enqueue")
    # On the host, "enqueue" includes the synchronous run itself: the ratio means nothing there.
    if backend.on_gpu and compute and enqueue is not None and \
            enqueue > ENQUEUE_BOUND_RATIO * compute:
        graphs_off = backend.graph_captures == 0
        out.append(BenchWarning(
            code="enqueue_bound",
            message=f"bound by enqueue time: the host takes {_us(enqueue)} (median) to enqueue "
                    f"a request that computes in {_us(compute)}; the GPU waits for the host",
            hint=("capture CUDA graphs (--graph), " if graphs_off else "")
            + "use larger batches, or keep several requests in flight (--slots)"))
    for stage, name in (("h2d", "host-to-device"), ("d2h", "device-to-host")):
        t = _p50(latency, stage)
        if compute and t is not None and t >= compute:
            out.append(BenchWarning(
                code="transfer_bound",
                message=f"bound by data transfers: {name} copies take {_us(t)} (median), as "
                        f"long as or longer than the compute ({_us(compute)})",
                hint="use zero-copy I/O on integrated GPUs (--io zero_copy), keep data on the "
                     "device, or overlap copies with compute (--slots 2+ with --rate 0)"))
    if loop is not None and loop.deadline_misses:
        worst = loop.step.max_ns
        refused = "scheduler" in realtime.refused or not realtime.requested
        out.append(BenchWarning(
            code="deadline_misses",
            message=f"{loop.deadline_misses:,} of {loop.iterations:,} periods missed their "
                    f"deadline and {_periods(loop.skipped_periods)} skipped; the longest "
                    f"step took {_us(worst)} against a period of {_us(loop.period_ns)}, the "
                    f"latest wake-up {_us(loop.wake.max_ns)}",
            hint=("run with a real-time priority (see `edgert doctor` for what to allow); "
                  if refused else "")
            + "lower --rate, pin the loop to an isolated CPU (--cpus), or use a PREEMPT_RT "
              "kernel"))
    if thermal.throttled:
        reasons = sorted({r for s in thermal.samples for r in s.throttle_reasons})
        out.append(BenchWarning(
            code="throttling",
            message="the hardware throttled during the run: " + "; ".join(reasons[:3]),
            hint="these figures are not the hardware's best: improve cooling, lower the rate "
                 "or the power mode, and let it cool down before comparing runs"))
    if realtime.refused:
        out.append(BenchWarning(code="realtime_refused", message=realtime.summary,
                                hint="`edgert doctor` says what to change (limits.conf, "
                                     "systemd LimitRTPRIO/LimitMEMLOCK, capabilities)"))
    if backend.slots > 1 and loop is not None:
        # At a fixed rate a result is collected by the next step, not when it is done: the
        # total latency is about one period (found by a new user's trial).
        out.append(BenchWarning(
            code="multiple_slots",
            message=f"{backend.slots} slots at a fixed rate: each result is collected at the "
                    "next period, so the total latency includes up to one period "
                    f"({_us(loop.period_ns)}) spent waiting to be collected",
            hint="read compute and device times for a request's own time; use --slots 1 to "
                 "measure the round trip of one request"))
    elif backend.slots > 1:
        out.append(BenchWarning(
            code="multiple_slots",
            message=f"{backend.slots} requests may be in flight at once: the total latency of "
                    "one includes time spent queued behind others",
            hint="compare compute and device times across runs; use --slots 1 to measure "
                 "the latency of one request"))
    wrapped = sorted(name for name, s in latency.items() if s is not None and s.wrapped)
    if wrapped:
        out.append(BenchWarning(
            code="window",
            message=f"percentiles of {', '.join(wrapped)} cover only the last "
                    f"{latency[wrapped[0]].retained} requests (min, max and mean "  # type: ignore[union-attr]
                    "cover all)",
            hint="shorten --duration for percentiles over every request"))
    return out
