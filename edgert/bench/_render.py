"""The text form of a BenchReport, laid out like trtexec's performance summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgert.bench._sampler import SensorSample
from edgert.stats import LatencySummary

if TYPE_CHECKING:
    from edgert.bench._report import BenchReport

__all__ = ["render"]

_COLUMNS = ("min", "mean", "p50", "p90", "p99", "p99.9", "max")


def _fmt_us(ns: float | None) -> str:
    if ns is None:
        return "-"
    us = ns / 1000.0
    return f"{us:.1f}" if us < 10_000 else f"{us:.0f}"


def _row(label: str, s: LatencySummary | None, missing: str) -> str:
    if s is None:
        return f"{label:<18} {missing}"
    cells = (s.min_ns, s.mean_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns, s.max_ns)
    return f"{label:<18}" + "".join(f"{_fmt_us(v):>10}" for v in cells)


def _sample_line(s: SensorSample) -> str:
    parts = []
    if s.max_temp_c is not None:
        parts.append(f"hottest {s.hottest} {s.max_temp_c:.1f} °C")
    if s.power_mw is not None:
        parts.append(f"board {s.power_mw / 1000:.2f} W")
    elif s.power_missing:  # a rail failed to read: no total is better than a low one
        parts.append(f"board power unknown ({', '.join(s.power_missing)} unreadable)")
    g = s.gpu
    if g is not None:
        gpu = [f"{g.power_mw / 1000:.0f} W" if g.power_mw is not None else None,
               f"SM {g.sm_clock_mhz} MHz" if g.sm_clock_mhz is not None else None]
        parts.append("GPU " + ", ".join(p for p in gpu if p))
    if s.throttled is None:
        parts.append("throttling unknown")
    elif s.throttled:
        parts.append("THROTTLING (" + "; ".join(s.throttle_reasons) + ")")
    else:
        parts.append("not throttling")
    return ", ".join(parts)


def _header(r: BenchReport) -> list[str]:
    b, o = r.backend, r.options
    where = f"{b.device} ({b.device_name})" if b.on_gpu else "the host CPU"
    shapes = ", ".join(f"{n} {list(s)}" for n, s in b.inputs)
    model = ("bundled control policy (48 -> 256 -> 256 -> 12 MLP)" if b.model == "bundled"
             else b.model)
    graphs = f"CUDA graphs {b.cuda_graph}" + (f" ({b.graph_captures} captured)" if b.on_gpu
                                              else "")
    modes = (f"io {b.io}, {graphs}, {b.slots} slot"
             f"{'s' if b.slots != 1 else ''}, batch {b.batch}, sync {b.sync}")
    if o.periodic:
        loop = (f"periodic at {o.rate_hz:g} Hz for {o.duration_s:g} s after a "
                f"{o.warmup_s:g} s warm-up")
    else:
        loop = (f"back to back for {o.duration_s:g} s after a {o.warmup_s:g} s warm-up "
                f"(--rate 0)")
    return [
        f"=== edgert bench {r.edgert_version} ({r.started_at}) ===",
        f"Model:      {model}  [{shapes}]",
        f"Backend:    {b.runtime} on {where}; {b.reason}",
        f"Session:    {modes}",
        f"Loop:       {loop}",
        f"Real time:  {r.realtime.summary}",
    ]


def render(r: BenchReport) -> str:
    """The report as text for a terminal."""
    lines = _header(r)
    lines += ["", "=== Performance summary ==="]
    stop = "" if r.stopped_by == "duration" else f" (stopped early: {r.stopped_by})"
    lines.append(f"Throughput: {r.throughput_qps:,.1f} qps ({r.requests:,} requests in "
                 f"{r.elapsed_s:.3f} s; {r.samples_per_s:,.1f} samples/s){stop}")
    cpu = r.cpu_us_per_request
    if cpu is not None and r.cpu_s is not None and r.elapsed_s > 0:
        lines.append(f"Host CPU:   {cpu:,.1f} us per request ({100 * r.cpu_s / r.elapsed_s:.0f} % "
                     f"of one core; sync {r.backend.sync})")
    lines.append(f"{'(microseconds)':<18}" + "".join(f"{c:>10}" for c in _COLUMNS))
    gpu = r.backend.on_gpu
    no_copy = "- (no copies: zero-copy I/O)" if r.backend.io == "zero_copy" else "- (no copies)"
    rows = [
        ("Latency (total)", "total", "-"),
        ("Host enqueue", "enqueue", "-"),
        ("H2D", "h2d", no_copy),
        ("GPU compute" if gpu else "Compute (host)", "compute", "-"),
        ("D2H", "d2h", no_copy),
    ]
    if gpu:
        rows.append(("Device (H2D..D2H)", "device", "-"))
    for label, key, missing in rows:
        lines.append(_row(label, r.latency.get(key), missing))
    loop = r.loop
    if loop is not None:
        lines.append(_row("Wake-up latency", loop.wake, "-"))
        lines.append(_row("Step time", loop.step, "-"))
        lines.append(f"Deadline misses: {loop.deadline_misses:,} of {loop.iterations:,} periods "
                     f"of {loop.period_ns / 1000:,.0f} us; skipped periods: "
                     f"{loop.skipped_periods:,}")
        lines.append(f"Loop thread: {loop.gc_collections} GC collections, "
                     f"{loop.minor_faults} minor / {loop.major_faults} major page faults, "
                     f"{loop.involuntary_switches} involuntary context switches")
    else:
        lines.append("Wake-up latency: - (requests ran back to back; use --rate HZ)")
    if gpu:
        lines.append("Latency = host round trip (inputs in, outputs out, synchronized); "
                     "H2D, compute and D2H are CUDA-event times.")
    else:
        lines.append("Latency = host round trip; compute = host time of the synchronous run "
                     "(it is part of the enqueue on the host).")
    t = r.thermal
    lines += ["", "=== Thermal and power ==="]
    if t.sources:
        lines.append(f"Start:  {_sample_line(t.start)}")
        lines.append(f"End:    {_sample_line(t.end)}")
        lines.append(f"Sensors: {', '.join(t.sources)}; {len(t.samples)} samples"
                     + (f"; {t.sensor_errors} failed reads" if t.sensor_errors else ""))
    else:
        lines.append("No thermal zones, power rails or NVML sensors are readable here.")
    lines += ["", "=== Warnings ==="]
    if not r.warnings:
        lines.append("(none)")
    for w in r.warnings:
        lines.append(f"[W] {w.message}")
        if w.hint:
            lines.append(f"    hint: {w.hint}")
    if r.notes:
        lines += ["", "=== Notes ==="]
        lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines)
