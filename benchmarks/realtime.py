"""PeriodicLoop wake-up latency against cyclictest, interleaved on one machine.

Both sides run the same experiment: one thread, SCHED_FIFO 80, pinned to one CPU, mlockall,
/dev/cpu_dma_latency held at 0 (cyclictest's default; edgert's policy holds it too), a 1 kHz
absolute-deadline sleep on CLOCK_MONOTONIC, and the same skip-on-overrun semantics. Runs are
interleaved A/B/A/B (cyclictest, PeriodicLoop, ...) because absolute numbers on a shared or
virtual machine drift from minute to minute; only ratios taken in one run mean anything.

Both sides are reduced the same way: latencies truncated to whole microseconds (cyclictest's
resolution), binned in 1 us buckets up to --hist-us, percentiles by nearest rank. The ratio per
percentile is PeriodicLoop / cyclictest per pair, median over the pairs; the target is
ratio_p99 <= 1.5.

A second part shows what the policy buys: the same loop with no real-time setting, with only
timer_slack_ns=1 (needs no privilege), and with the full policy, all while stress-ng keeps every
CPU busy.

    python benchmarks/realtime.py --quick            # about 36 s
    python benchmarks/realtime.py --json out.json    # about 2 min

Needs root (or RLIMIT_RTPRIO >= 80 and RLIMIT_MEMLOCK unlimited), cyclictest from rt-tests and
stress-ng (Debian/Ubuntu: apt-get install rt-tests stress-ng).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgert.realtime import PeriodicLoop, RealtimePolicy, realtime_capabilities

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
INSTALL = {
    "cyclictest": "cyclictest (rt-tests) is not installed. Install it with\n"
                  "  Debian/Ubuntu/Jetson: sudo apt-get install -y rt-tests\n"
                  "  Fedora/RHEL:          sudo dnf install -y realtime-tests\n"
                  "  from source:          git clone https://git.kernel.org/pub/scm/utils/rt-tests/"
                  "rt-tests.git && make -C rt-tests cyclictest",
    "stress-ng": "stress-ng is not installed. Install it with\n"
                 "  Debian/Ubuntu/Jetson: sudo apt-get install -y stress-ng\n"
                 "  Fedora/RHEL:          sudo dnf install -y stress-ng",
}


def histogram_stats(hist: np.ndarray, overflow: int, *, min_us: int, max_us: int,
                    interval_us: int) -> dict[str, Any]:
    """Figures from a 1 us histogram (index = latency in us) plus an overflow count."""
    total = int(hist.sum()) + overflow
    cum = np.cumsum(hist)
    out: dict[str, Any] = {"samples": total, "min_us": min_us, "max_us": max_us,
                           "overflow": overflow}
    for name, q in PERCENTILES:
        rank = max(1, int(np.ceil(q / 100.0 * total)))  # nearest rank
        idx = int(np.searchsorted(cum, rank))
        out[f"{name}_us"] = idx if idx < hist.size else None  # None: in the overflow
    out["over_interval"] = int(hist[interval_us:].sum()) + overflow
    return out


def steal_ms(cpu: int) -> float | None:
    """Time the hypervisor ran something else while this vCPU wanted to run (/proc/stat)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields[0] == f"cpu{cpu}" and len(fields) > 8:
                return int(fields[8]) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return None


def with_steal(args: argparse.Namespace, fn: Any, *a: Any, **kw: Any) -> dict[str, Any]:
    before = steal_ms(args.cpu)
    out: dict[str, Any] = fn(args, *a, **kw)
    after = steal_ms(args.cpu)
    out["steal_ms"] = None if before is None or after is None else after - before
    return out


def run_cyclictest(args: argparse.Namespace, loops: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "ct.json"
        cmd = ["cyclictest", "-m", "-q", "-t", "1", "-a", str(args.cpu), "--policy=fifo",
               "-p", str(args.priority), "-i", str(args.interval_us), "-l", str(loops),
               "-h", str(args.hist_us), f"--histfile={Path(tmp) / 'ct.hist'}", f"--json={js}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not js.exists():
            raise SystemExit(f"cyclictest failed ({proc.returncode}): {proc.stderr.strip()}")
        data = json.loads(js.read_text())
    thread = data["thread"]["0"]
    hist = np.zeros(args.hist_us, dtype=np.int64)
    for us, n in thread["histogram"].items():
        if int(us) < args.hist_us:
            hist[int(us)] += n
    overflow = int(thread["cycles"]) - int(hist.sum())
    out = histogram_stats(hist, overflow, min_us=int(thread["min"]), max_us=int(thread["max"]),
                          interval_us=args.interval_us)
    out["avg_us"] = float(thread["avg"])
    out["version"] = data.get("rt_test_version:")
    return out


def run_loop(args: argparse.Namespace, loops: int, *, realtime: bool,
             slack_only: bool = False) -> dict[str, Any]:
    policy = None
    if realtime:
        policy = RealtimePolicy(priority=args.priority, cpus={args.cpu}, lock_memory=True,
                                freeze_gc=True, cpu_dma_latency_us=0)
    elif slack_only:
        policy = RealtimePolicy(timer_slack_ns=1)  # needs no privilege
    loop = PeriodicLoop(period_ns=args.interval_us * 1000, policy=policy, overrun="skip",
                        capacity=loops)
    report = loop.run(iterations=loops)
    samples_us = loop.wake_stats.samples() // 1000  # truncate to whole us, as cyclictest does
    inside = samples_us[samples_us < args.hist_us]
    hist = np.bincount(inside, minlength=args.hist_us)[: args.hist_us]
    out = histogram_stats(hist, int(samples_us.size - inside.size),
                          min_us=int(samples_us.min()), max_us=int(samples_us.max()),
                          interval_us=args.interval_us)
    w = report.wake
    out.update(
        avg_us=w.mean_us,
        exact_ns={"p50": w.p50_ns, "p99": w.p99_ns, "p999": w.p999_ns, "max": w.max_ns},
        deadline_misses=report.deadline_misses, skipped_periods=report.skipped_periods,
        gc_collections=report.gc_collections, minor_faults=report.minor_faults,
        involuntary_switches=report.involuntary_switches,
        refused=[o.setting for o in report.policy.refused] if report.policy else [],
    )
    return out


def environment() -> dict[str, Any]:
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    uname = platform.uname()
    return {
        "uname": f"{uname.system} {uname.release} {uname.version} {uname.machine}",
        "sys_kernel_realtime": read("/sys/kernel/realtime"),
        "cmdline": read("/proc/cmdline"),
        "sched_rt_runtime_us": read("/proc/sys/kernel/sched_rt_runtime_us"),
        "cpus": sorted(os.sched_getaffinity(0)),
        "rlimit_rtprio": resource.getrlimit(resource.RLIMIT_RTPRIO),
        "rlimit_memlock": resource.getrlimit(resource.RLIMIT_MEMLOCK),
        "euid": os.geteuid(),
        "python": sys.version.split()[0],
        "capabilities": realtime_capabilities(priority=80).to_dict()["checks"],
    }


def fmt(value: Any) -> str:
    if value is None:
        return "ovf"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_rows(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    cols = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "over_interval",
            "steal_ms"]
    heads = ["min", "p50", "p90", "p99", "p99.9", "max", ">period", "steal ms"]
    print(f"\n{title}")
    print(f"{'':28}" + "".join(f"{h:>9}" for h in heads))
    for label, r in rows:
        print(f"{label:28}" + "".join(f"{fmt(r.get(c)):>9}" for c in cols))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 pairs of 3.5 s + 3 load runs of 3.5 s (~36 s)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--seconds", type=float,
                    help="length of each run (default 7, quick 3.5)")
    ap.add_argument("--pairs", type=int, help="cyclictest/PeriodicLoop pairs (default 6, quick 3)")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                    help="CPU both run on (default: the highest allowed)")
    ap.add_argument("--priority", type=int, default=80)
    ap.add_argument("--interval-us", type=int, default=1000)
    ap.add_argument("--hist-us", type=int, default=20000, help="histogram bound (us)")
    args = ap.parse_args()
    seconds = args.seconds or (3.5 if args.quick else 7.0)
    args.pairs = args.pairs or (3 if args.quick else 6)
    loops = max(100, int(seconds * 1e6 / args.interval_us))
    t_start = time.monotonic()

    have_ct = shutil.which("cyclictest") is not None
    have_stress = shutil.which("stress-ng") is not None
    for tool, present in (("cyclictest", have_ct), ("stress-ng", have_stress)):
        if not present:
            print(INSTALL[tool], file=sys.stderr)

    print(f"wake-up latency at {1e6 / args.interval_us:g} Hz, SCHED_FIFO {args.priority}, "
          f"CPU {args.cpu}, mlockall, /dev/cpu_dma_latency 0; {loops} loops per run "
          f"({seconds:g} s), {args.pairs} interleaved pairs")
    run_loop(args, min(loops, 500), realtime=True)  # warm-up: imports, first mlockall

    pairs: list[dict[str, Any]] = []
    rows: list[tuple[str, dict[str, Any]]] = []
    for i in range(args.pairs):
        pair: dict[str, Any] = {}
        if have_ct:
            pair["cyclictest"] = with_steal(args, run_cyclictest, loops)
            rows.append((f"pair {i + 1} cyclictest", pair["cyclictest"]))
        pair["loop"] = with_steal(args, run_loop, loops, realtime=True)
        rows.append((f"pair {i + 1} PeriodicLoop", pair["loop"]))
        pairs.append(pair)
    print_rows("us (1 us bins, nearest rank; ovf = beyond the histogram; steal = time the "
               "hypervisor took the CPU)", rows)

    ratios: dict[str, float | None] = {}
    if have_ct:
        for name in [n for n, _ in PERCENTILES] + ["max"]:
            per_pair = [p["loop"][f"{name}_us"] / p["cyclictest"][f"{name}_us"]
                        for p in pairs
                        if p["loop"].get(f"{name}_us") is not None
                        and p["cyclictest"].get(f"{name}_us")]
            ratios[name] = statistics.median(per_pair) if per_pair else None
        print("\nratio PeriodicLoop / cyclictest, median over pairs: "
              + "  ".join(f"{k} {fmt(v)}" for k, v in ratios.items()))
        print(f"ratio_p99 = {fmt(ratios['p99'])} (target <= 1.5)")
    misses = [(p["loop"]["deadline_misses"], p["loop"]["skipped_periods"]) for p in pairs]
    print(f"PeriodicLoop deadline misses / skipped periods per run: {misses}; "
          f"GC collections: {[p['loop']['gc_collections'] for p in pairs]}")

    load: dict[str, Any] = {}
    if have_stress:
        ncpu = len(os.sched_getaffinity(0))
        stress = subprocess.Popen(
            ["stress-ng", "--cpu", str(ncpu), "--timeout", f"{int(2 * seconds + 10)}s", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            load["no_rt"] = with_steal(args, run_loop, loops, realtime=False)
            load["slack_only"] = with_steal(args, run_loop, loops, realtime=False,
                                            slack_only=True)
            load["rt"] = with_steal(args, run_loop, loops, realtime=True)
        finally:
            stress.terminate()
            stress.wait()
        print_rows(f"under load (stress-ng --cpu {ncpu}), us",
                   [("PeriodicLoop, no RT setting", load["no_rt"]),
                    ("  timer_slack_ns=1 only", load["slack_only"]),
                    ("  full RT policy", load["rt"])])
        print("deadline misses/skipped periods: " + ", ".join(
            f"{k} {v['deadline_misses']}/{v['skipped_periods']}" for k, v in load.items()))

    elapsed = time.monotonic() - t_start
    print(f"\nrun length {elapsed:.1f} s")
    result = {
        "benchmark": "realtime",
        "params": {"interval_us": args.interval_us, "priority": args.priority, "cpu": args.cpu,
                   "loops_per_run": loops, "seconds_per_run": seconds, "pairs": args.pairs,
                   "hist_us": args.hist_us, "quick": args.quick},
        "environment": environment(),
        "pairs": pairs,
        "ratios": ratios,
        "ratio_p99": ratios.get("p99"),
        "target_ratio_p99": 1.5,
        "load": load,
        "run_seconds": round(elapsed, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0 if have_ct and have_stress else 2


if __name__ == "__main__":
    raise SystemExit(main())
