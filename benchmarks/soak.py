"""Soak: does anything grow while edgert runs for a long time?

Usage: ``python benchmarks/soak.py [--quick] [--requests N] [--json PATH]`` (no GPU needed: the
bundled model on ONNX Runtime, host device).

Phases, each measured on its own:

* ``requests``: N requests through one ``InferenceSession`` (batch 1, default options). Resident
  memory (``/proc/self/statm``) and open file descriptors are sampled 50 times; the RSS slope is
  a least-squares fit over the samples after the first 10% of requests (warm-up), in bytes per
  1000 requests, and every jump of 64 KiB or more between samples is listed (the allocator
  grows in steps: one step is not a rate). No tracemalloc here: it would slow every request
  down several times.
* ``requests+tracemalloc``: a shorter run with tracemalloc on; Python memory still allocated
  after the run minus before it (after warm-up), and the source lines that grew most.
* ``load/close``: Engine.load + InferenceSession + one request + close, repeated; fds and RSS
  before and after.
* ``refusals``: Engine.load on a FIFO, ``/dev/zero``, a missing file, a directory, garbage bytes
  and a wrong digest, repeated: every refusal path must close what it opened.

Prints a table and writes JSON (``--json``, default ``soak.json``). A leak shows as a slope or a
delta far from zero; the figures are what was measured, not pass/fail verdicts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgert import models
from edgert.engine import Engine
from edgert.errors import EdgeRTError
from edgert.session import InferenceSession

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _slope_per_1000(xs: list[int], ys: list[int]) -> float:
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * 1000.0)


def soak_requests(n: int) -> dict[str, Any]:
    obs = np.random.default_rng(0).standard_normal((1, models.OBS_DIM)).astype(np.float32)
    feed = {"obs": obs}
    want = models.policy_reference(obs)
    every = max(1, n // 50)
    xs: list[int] = []
    rss: list[int] = []
    fds: list[int] = []
    with Engine.load(models.bundled_model_path()) as engine, InferenceSession(engine) as s:
        np.testing.assert_allclose(s.infer(feed)["actions"], want, rtol=1e-5, atol=1e-6)
        start = time.perf_counter()
        for i in range(1, n + 1):
            out = s.infer(feed)
            if i % every == 0:
                xs.append(i)
                rss.append(rss_bytes())
                fds.append(fd_count())
        elapsed = time.perf_counter() - start
        np.testing.assert_allclose(out["actions"], want, rtol=1e-5, atol=1e-6)
    skip = len(xs) // 10
    # RSS moves in steps (the allocator takes memory in chunks): list them, since a least-squares
    # slope turns one step into a "rate".
    steps = [(xs[i], (rss[i] - rss[i - 1]) // 1024) for i in range(1, len(rss))
             if abs(rss[i] - rss[i - 1]) >= 64 * 1024]
    return {
        "requests": n, "seconds": round(elapsed, 3),
        "us_per_request": round(elapsed / n * 1e6, 2),
        "rss_start_mib": round(rss[0] / 2**20, 2), "rss_end_mib": round(rss[-1] / 2**20, 2),
        "rss_max_mib": round(max(rss) / 2**20, 2),
        "rss_slope_bytes_per_1000_requests": round(_slope_per_1000(xs[skip:], rss[skip:]), 2),
        "fds_start": fds[0], "fds_end": fds[-1], "fds_max": max(fds),
        "rss_steps_kib": steps,
        "samples": {"at_request": xs, "rss_kib": [v // 1024 for v in rss], "fds": fds},
    }


def soak_tracemalloc(n: int) -> dict[str, Any]:
    obs = np.zeros((1, models.OBS_DIM), np.float32)
    with Engine.load(models.bundled_model_path()) as engine, InferenceSession(engine) as s:
        for _ in range(max(100, n // 10)):
            s.infer({"obs": obs})
        gc.collect()
        tracemalloc.start(5)
        try:
            before = tracemalloc.take_snapshot()
            current0 = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                s.infer({"obs": obs})
            gc.collect()
            current1, peak = tracemalloc.get_traced_memory()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    grown = [d for d in after.filter_traces(ignore).compare_to(before.filter_traces(ignore),
                                                              "lineno") if d.size_diff > 0]
    grown.sort(key=lambda d: d.size_diff, reverse=True)
    return {
        "requests": n, "traced_growth_bytes": current1 - current0, "traced_peak_bytes": peak,
        "top_growth": [f"{d.traceback[0].filename}:{d.traceback[0].lineno} "
                       f"+{d.size_diff} B in {d.count_diff:+d} blocks" for d in grown[:5]],
    }


def _cycle(fn: Callable[[], None], n: int) -> dict[str, Any]:
    fn()  # first use: imports and caches are not a leak
    gc.collect()
    fds0, rss0 = fd_count(), rss_bytes()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    gc.collect()
    return {"cycles": n, "seconds": round(time.perf_counter() - start, 3),
            "fds_before": fds0, "fds_after": fd_count(),
            "rss_delta_mib": round((rss_bytes() - rss0) / 2**20, 2)}


def soak_load_close(n: int) -> dict[str, Any]:
    path = models.bundled_model_path()
    obs = np.zeros((1, models.OBS_DIM), np.float32)

    def once() -> None:
        with Engine.load(path) as engine, InferenceSession(engine) as s:
            s.infer({"obs": obs})

    return _cycle(once, n)


def soak_refusals(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        fifo = where / "fifo.plan"
        os.mkfifo(fifo)
        zero = where / "zero.onnx"
        zero.symlink_to("/dev/zero")
        garbage = where / "garbage.onnx"
        garbage.write_bytes(os.urandom(4096))
        model = models.bundled_model_path()
        cases: list[tuple[Any, dict[str, Any]]] = [
            (fifo, {}), (zero, {}), (where / "missing.plan", {}), (where, {}), (garbage, {}),
            (model, {"sha256": "0" * 64}), (model, {"max_bytes": 1000}),
        ]
        refused = 0

        def once() -> None:
            nonlocal refused
            for source, kw in cases:
                try:
                    Engine.load(source, **kw).close()
                except EdgeRTError:
                    refused += 1
                else:
                    raise AssertionError(f"{source} {kw} was loaded")

        result = _cycle(once, n)
    result["refusals"] = refused - len(cases)  # not the uncounted first cycle's (a trial)
    return result


def _table(results: dict[str, Any]) -> str:
    r, t, lc, rf = (results[k] for k in ("requests", "tracemalloc", "load_close", "refusals"))
    rows = [
        ("requests", f"{r['requests']:,}", f"{r['us_per_request']} us/request",
         f"RSS {r['rss_start_mib']} -> {r['rss_end_mib']} MiB (max {r['rss_max_mib']}), "
         f"slope {r['rss_slope_bytes_per_1000_requests']} B/1000 req, "
         f"{len(r['rss_steps_kib'])} step(s) >= 64 KiB "
         f"{[f'{k:+} KiB at {at:,}' for at, k in r['rss_steps_kib']]}; "
         f"fds {r['fds_start']} -> {r['fds_end']} (max {r['fds_max']})"),
        ("requests+tracemalloc", f"{t['requests']:,}", "",
         f"Python heap {t['traced_growth_bytes']:+,} B after the run "
         f"(peak {t['traced_peak_bytes']:,} B)"),
        ("load/close", f"{lc['cycles']:,}", f"{lc['seconds']} s",
         f"fds {lc['fds_before']} -> {lc['fds_after']}, RSS {lc['rss_delta_mib']:+} MiB"),
        ("refusals", f"{rf['cycles']:,} x 7", f"{rf['seconds']} s",
         f"fds {rf['fds_before']} -> {rf['fds_after']}, RSS {rf['rss_delta_mib']:+} MiB"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{'phase':<{widths[0]}}  {'count':>{widths[1]}}  {'time':<{widths[2]}}  result"]
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    if t["top_growth"]:
        lines.append("tracemalloc growth by line: " + "; ".join(t["top_growth"][:3]))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="about a tenth of the work")
    ap.add_argument("--requests", type=int, help="requests in the main phase (default 200000)")
    ap.add_argument("--json", type=Path, default=Path("soak.json"), help="write results here")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    n = args.requests or 200_000 // scale
    results = {
        "machine": platform.machine(), "python": platform.python_version(),
        "requests": soak_requests(n),
        "tracemalloc": soak_tracemalloc(max(1000, n // 20)),
        "load_close": soak_load_close(500 // scale),
        "refusals": soak_refusals(2000 // scale),
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
