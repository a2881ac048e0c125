#!/usr/bin/env python3
"""Zero-copy inference on Jetson: the sensor writes into memory the GPU reads in place.

    python examples/jetson_zero_copy.py --requests 2000
    python examples/jetson_zero_copy.py model.plan

On Jetson the CPU and GPU share one DRAM, so a copy to "the device" only moves bytes from one
place in the same memory to another. Mapped pinned memory (``HostBuffer(mapped=True)``) is
visible to both: the application (a camera callback, a state estimator) writes observations
into it, and the session binds it to the model as it is (``io="zero_copy"``): no staging copy,
no H2D or D2H. With a CUDA graph (one launch per request) and spin-waiting, that is edgert's
lowest-latency path (docs/sessions.md, "Latency recipe"). On a discrete GPU the same code runs,
with the kernels reading the inputs across PCIe, which suits small tensors like these.

Without a TensorRT plan the bundled policy runs as CUDA kernels (KernelExecutable). Needs a
CUDA device; without one it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from edgert import cuda
from edgert.models import OBS_DIM, policy_reference


def main() -> int:
    ap = argparse.ArgumentParser(description="zero-copy inference with mapped memory")
    ap.add_argument("model", nargs="?", help="a TensorRT plan (default: the bundled policy "
                                             "as CUDA kernels)")
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()

    if not cuda.is_available():
        print(f"this example needs a CUDA device: {cuda.unavailable_reason()}", file=sys.stderr)
        return 2
    from edgert.engine import Engine
    from edgert.kernels import KernelExecutable
    from edgert.memory import HostBuffer
    from edgert.session import InferenceSession

    props = cuda.device_properties(0)
    kind = "integrated (shared DRAM)" if props.integrated else "discrete (inputs cross PCIe)"
    print(f"{props.name}: {kind}, can map host memory: {props.can_map_host_memory}")

    model: Any = Engine.load(args.model) if args.model else KernelExecutable()
    sensor = HostBuffer(OBS_DIM * 4, mapped=True)          # written by the "sensor"
    obs = sensor.view(np.float32, (1, OBS_DIM))
    rng = np.random.default_rng(0)
    try:
        with InferenceSession(model, io="zero_copy", cuda_graph="on", sync="spin", slots=1,
                              timing="stages", priority="highest") as session:
            # Warm up with the buffer the loop uses: graphs are keyed by the addresses bound,
            # so the first run is the warm-up the capture needs and the second is captured.
            session.infer({"obs": obs})
            session.infer({"obs": obs})
            session.stats.reset()
            for i in range(args.requests):
                rng.standard_normal(dtype=np.float32, out=obs[0])   # the sensor writes in place
                actions = session.infer({"obs": obs})["actions"]        # read in place
                if i == 0 and not args.model:
                    np.testing.assert_allclose(actions, policy_reference(obs), rtol=1e-4,
                                               atol=1e-4)
            total = session.stats.latency.summary()
            compute = session.stats.compute.summary()
            print(f"{total.count} requests: round trip p50 {total.p50_us:.1f} us, p99 "
                  f"{total.p99_us:.1f} us; GPU compute p50 {compute.p50_us:.1f} us; "
                  f"H2D copies recorded: {session.stats.h2d.count} (zero-copy: none)")
            print(f"CUDA graphs captured: {session.graph_captures}")
    finally:
        sensor.close()
        model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
