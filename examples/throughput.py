#!/usr/bin/env python3
"""Throughput with several requests in flight: the same model with 1, 2 and 4 slots.

    python examples/throughput.py --batch 32 --slots 1 2 4 --duration 2
    python examples/throughput.py model.plan --batch 8

Each slot has its own buffers and events, so with N slots up to N requests are in flight: the
host prepares request n+1 while the device runs request n, and in copy I/O the copies of one
request overlap the compute of another (docs/sessions.md, "Slots"). On the host (no GPU) a
request runs synchronously, so more slots change little there; on a GPU they are what turns
latency into throughput. ``edgert bench --rate 0 --slots 4 --batch 32`` measures the same from
the command line, with the full report.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Any

import numpy as np

from edgert import cuda
from edgert.engine import Engine
from edgert.errors import EdgeRTError
from edgert.models import bundled_model_path
from edgert.session import InferenceSession


def open_model(path: str | None) -> Any:
    """A model file, else the bundled policy: as CUDA kernels on a GPU, ONNX Runtime without."""
    if path is not None:
        return Engine.load(path)
    if cuda.is_available():
        from edgert.kernels import KernelExecutable

        return KernelExecutable()
    return Engine.load(bundled_model_path())


def measure(model: Any, *, slots: int, batch: int,
            duration_s: float) -> tuple[float, float, int | str]:
    """Requests per second, the median host round trip (us) and the device, with ``slots``."""
    with InferenceSession(model, slots=slots, timing="host") as session:
        spec = next(t for t in session.executable.tensors if t.is_input)
        shape = (batch, *[d if d > 0 else 1 for d in spec.shape[1:]])
        inputs = {spec.name: np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)}
        session.warmup([{spec.name: shape}])
        session.stats.reset()
        in_flight: collections.deque[Any] = collections.deque()
        done = 0
        start = time.perf_counter()
        end = start + duration_s
        while time.perf_counter() < end:
            if len(in_flight) == slots:
                in_flight.popleft().result()  # wait only when every slot is busy
                done += 1
            in_flight.append(session.submit(inputs))
        while in_flight:
            in_flight.popleft().result()
            done += 1
        elapsed = time.perf_counter() - start
        return done / elapsed, session.stats.latency.summary().p50_us or 0.0, session.device


def main() -> int:
    ap = argparse.ArgumentParser(description="requests/s with several requests in flight")
    ap.add_argument("model", nargs="?", help="a .plan/.engine/.onnx file (default: bundled)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per slot count")
    args = ap.parse_args()
    if args.duration <= 0 or args.batch < 1 or any(n < 1 for n in args.slots):
        ap.error("--duration must be above 0 s, --batch and --slots 1 or more")

    try:
        model = open_model(args.model)
    except EdgeRTError as err:
        print(f"throughput: {err}", file=sys.stderr)
        return 1
    print(f"{type(model).__name__}, batch {args.batch}")
    try:
        for slots in args.slots:
            try:
                qps, p50_us, device = measure(model, slots=slots, batch=args.batch,
                                              duration_s=args.duration)
            except EdgeRTError as err:  # the library's message and hint, not a traceback
                print(f"throughput: {err}", file=sys.stderr)
                return 1
            print(f"slots {slots} on {device}: {qps:10,.0f} requests/s  "
                  f"{qps * args.batch:12,.0f} samples/s  round trip p50 {p50_us:8.1f} us")
    finally:
        model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
