"""Memory benchmarks: pool hot-path cost on the host, and transfer bandwidth on the GPU.

Usage::

    python benchmarks/memory.py [--quick] [--json PATH]

Host (everywhere): ``BufferPool`` acquire + release latency (p50/p99 of single cycles timed with
``perf_counter_ns``, the timer's own cost reported beside it) and the memory blocks the hot
path leaves allocated after ``prewarm`` (tracemalloc snapshots around many cycles).

GPU (when CUDA is available): H2D and D2H bandwidth, 4 KiB to 64 MiB, from pool leases (through
``DeviceBuffer.copy_from``/``copy_to``), raw ``cudaHostAlloc`` memory (``cudaMemcpyAsync``
directly) and pageable numpy memory, interleaved in one run and timed with CUDA events; the
ratios are the targets (pool >= 0.95x raw pinned and >= 3x pageable from 1 MiB up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgert.cuda
from edgert.memory import BufferPool, DeviceBuffer

KIB = 1024
MIB = 1 << 20
SIZES = [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB]


# -- host --------------------------------------------------------------------------------------

def _percentiles(samples: list[int]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=np.int64)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "min": float(arr.min())}


def host_hot_path(iterations: int) -> dict[str, Any]:
    # One CPU for the whole measurement: a migration in the middle is noise, not pool cost.
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(allowed)})
    try:
        return _host_hot_path(iterations)
    finally:
        os.sched_setaffinity(0, allowed)


def _host_hot_path(iterations: int) -> dict[str, Any]:
    pool = BufferPool.for_host(max_bytes=64 * MIB, device="host")
    pool.prewarm({4096: 4, MIB: 2})
    acquire = pool.acquire
    clock = time.perf_counter_ns
    for _ in range(2000):
        acquire(4096).release()
    # Plain lists: storing into one costs less than a numpy item assignment, so less of the
    # timer's own overhead lands in the samples.
    samples = [0] * iterations
    for i in range(iterations):
        t0 = clock()
        lease = acquire(4096)
        lease.release()
        samples[i] = clock() - t0
    with_block = [0] * iterations
    for i in range(iterations):
        t0 = clock()
        with acquire(4096):
            pass
        with_block[i] = clock() - t0
    timer = [0] * iterations
    for i in range(iterations):
        t0 = clock()
        timer[i] = clock() - t0
    t0 = clock()
    for _ in range(iterations):
        lease = acquire(4096)
        lease.release()
    batched = (clock() - t0) / iterations

    # allocations: snapshots around many cycles, after tracing has replaced warm-up objects
    cycles = max(iterations // 4, 1000)
    tracemalloc.start()
    try:
        for _ in range(300):
            acquire(4096).release()
            with acquire(MIB):
                pass
        first = tracemalloc.take_snapshot()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(cycles):
            lease = acquire(4096)
            lease.release()
            with acquire(MIB):
                pass
        _, peak = tracemalloc.get_traced_memory()
        second = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Count what the pool leaves behind, not this script's own loop counters and tuples.
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    diffs = second.filter_traces(keep).compare_to(first.filter_traces(keep), "lineno")
    grown = [d for d in diffs if d.count_diff > 0]
    stats = pool.stats()
    pool.close()
    timer_p50 = _percentiles(timer)["p50"]
    cycle = _percentiles(samples)
    return {
        # p50/p99 include one timer read (timer_overhead_ns); p50_net subtracts its median.
        "host_acquire_release_ns": {**cycle, "p50_net": cycle["p50"] - timer_p50,
                                    "mean_batched": batched, "iterations": iterations},
        "host_with_block_ns": _percentiles(with_block),
        "timer_overhead_ns": _percentiles(timer),
        "allocations_after_prewarm": sum(d.count_diff for d in grown),
        "allocation_sites": [str(d) for d in grown[:5]],
        "alloc_check_cycles": cycles,
        "transient_peak_bytes": peak - base,
        "pool_misses_after_prewarm": stats.misses,
    }


# -- GPU ---------------------------------------------------------------------------------------

def _gbps(nbytes: int, copies: int, ms: float) -> float:
    return nbytes * copies / (ms * 1e-3) / 1e9


def gpu_transfers(quick: bool) -> list[dict[str, Any]]:
    from edgert.cuda import Event, Stream
    from edgert.cuda import _memapi as api

    top = max(SIZES)
    reps = 3 if quick else 7
    budget = 2 * sum(SIZES)
    stream = Stream()
    start, end = Event(timing=True), Event(timing=True)
    dev = DeviceBuffer(top)
    pool = BufferPool.for_host(max_bytes=budget)
    pool.prewarm(SIZES)
    leases = {n: pool.acquire(n) for n in SIZES}
    raw = api.host_alloc(top, 0, 0)
    pageable = np.ones(top, dtype=np.uint8)  # touched, so no first-fault cost is timed
    pageable_ptr = int(pageable.ctypes.data)
    results: dict[tuple[int, str, str], list[float]] = {}

    def run(kind: str, direction: str, n: int, copies: int) -> float:
        s_raw = stream.raw
        start.record(stream)
        if kind == "pool":
            lease = leases[n]
            op = dev.copy_from if direction == "H2D" else dev.copy_to
            for _ in range(copies):
                op(lease, stream=stream, nbytes=n)
        else:
            host = raw if kind == "raw_pinned" else pageable_ptr
            dst, src = (dev.ptr, host) if direction == "H2D" else (host, dev.ptr)
            for _ in range(copies):
                api.memcpy_async(dst, src, n, s_raw)
        end.record(stream)
        end.synchronize()
        return _gbps(n, copies, Event.elapsed_ms(start, end))

    kinds = ["pool", "raw_pinned", "pageable"]
    try:
        for n in SIZES:  # warm every path once
            for direction in ("H2D", "D2H"):
                for kind in kinds:
                    run(kind, direction, n, 2)
        for rep in range(reps):
            for n in SIZES:
                copies = max(4, min(64 if quick else 200, (128 if quick else 256) * MIB // n))
                for direction in ("H2D", "D2H"):
                    order = kinds[rep % 3:] + kinds[:rep % 3]  # rotate who goes first
                    for kind in order:
                        results.setdefault((n, direction, kind), []).append(
                            run(kind, direction, n, copies))
    finally:
        for lease in leases.values():
            lease.release()
        pool.close()
        dev.close()
        api.free_host(raw)
        start.close()
        end.close()
        stream.close()
    rows = []
    for n in SIZES:
        for direction in ("H2D", "D2H"):
            med = {k: statistics.median(results[(n, direction, k)]) for k in kinds}
            rows.append({
                "size_bytes": n, "direction": direction,
                "pool_gbps": med["pool"], "raw_pinned_gbps": med["raw_pinned"],
                "pageable_gbps": med["pageable"],
                "pool_vs_raw": med["pool"] / med["raw_pinned"],
                "pool_vs_pageable": med["pool"] / med["pageable"],
            })
    return rows


# -- report ------------------------------------------------------------------------------------

def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    report: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu": platform.processor() or None,
        "cuda_device": None, "quick": args.quick,
    }
    host = host_hot_path(20_000 if args.quick else 200_000)
    report.update(host)
    ar = host["host_acquire_release_ns"]
    print("Pool hot path (host, BufferPool.for_host, 4 KiB, after prewarm)")
    print(f"  acquire+release    p50 {ar['p50']:8.0f} ns   p99 {ar['p99']:8.0f} ns   "
          f"batched mean {ar['mean_batched']:8.0f} ns   p50 less timer {ar['p50_net']:6.0f} ns")
    wb = host["host_with_block_ns"]
    print(f"  with-block         p50 {wb['p50']:8.0f} ns   p99 {wb['p99']:8.0f} ns")
    print(f"  timer overhead     p50 {host['timer_overhead_ns']['p50']:8.0f} ns (included above)")
    print(f"  allocations after prewarm: {host['allocations_after_prewarm']} live blocks over "
          f"{host['alloc_check_cycles']:,} cycles (transient peak {host['transient_peak_bytes']} "
          f"bytes)")

    targets: dict[str, bool] = {
        "host_p50_le_1000ns": ar["p50"] <= 1000,
        "allocations_after_prewarm_zero": host["allocations_after_prewarm"] == 0,
    }
    if edgert.cuda.is_available():
        report["cuda_device"] = edgert.cuda.device_properties(0).name
        rows = gpu_transfers(args.quick)
        report["transfers"] = rows
        print(f"\nTransfers on {report['cuda_device']} (GB/s, median of interleaved runs, "
              f"CUDA events)")
        print(f"  {'size':>7} {'dir':>4} {'pool':>8} {'raw pin':>8} {'pageable':>8} "
              f"{'pool/raw':>9} {'pool/pageable':>14}")
        for r in rows:
            print(f"  {_size(r['size_bytes']):>7} {r['direction']:>4} {r['pool_gbps']:8.2f} "
                  f"{r['raw_pinned_gbps']:8.2f} {r['pageable_gbps']:8.2f} "
                  f"{r['pool_vs_raw']:9.3f} {r['pool_vs_pageable']:14.2f}")
        big = [r for r in rows if r["size_bytes"] >= MIB]
        targets["pool_vs_raw_ge_0.95_from_1MiB"] = all(r["pool_vs_raw"] >= 0.95 for r in big)
        targets["pool_vs_pageable_ge_3_from_1MiB"] = all(r["pool_vs_pageable"] >= 3 for r in big)
    else:
        report["transfers"] = None
        print(f"\nNo GPU transfers: {edgert.cuda.unavailable_reason()}")
    report["targets"] = targets
    print("\nTargets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in targets.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
