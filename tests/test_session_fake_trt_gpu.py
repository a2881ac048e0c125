"""GPU tier: a data-dependent TensorRT output on the CUDA runner, through the fake TensorRT.

The fake TensorRT computes on the host, so on a GPU it can run only where the addresses the
session binds are host-readable too: zero-copy I/O in mapped page-locked memory, whose device
address equals its host address under unified virtual addressing (every 64-bit CUDA platform;
https://docs.nvidia.com/cuda/cuda-c-programming-guide/#unified-virtual-address-space). The
session is told nothing special: it sees a device-placed TensorRT executable, registers its
output allocator, takes the output's memory from its mapped pool and never captures a graph.

A wrong address would make the fake's host copy crash the interpreter, so the work runs in a
child process and the test reports how it ended.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import numpy as np
from edgert.engine import Engine
from edgert.session import InferenceSession
from edgert.testing import fake_tensorrt as ft

module = ft.make_module()
module.EDGERT_REQUIRES_CUDA = True  # a device-placed engine, as real TensorRT's are
plan = ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (-1,), profiles=[((1,), (8,), (64,))])],
                    outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(64,))],
                    function="nonzero")
rng = np.random.default_rng(5)
with Engine.load(plan, trt_module=module) as engine:
    assert engine.placement.value == "device", engine.placement
    for slots in (1, 2):
        with InferenceSession(engine, device=0, io="zero_copy", slots=slots) as s:
            assert s.device == 0, s.device
            assert not s.executable.graph_capturable
            for n in (8, 64, 1, 33, 64, 5):
                x = ((rng.random(n) < 0.5) * rng.standard_normal(n)).astype(np.float32)
                out = s.infer({"x": x})["idx"]
                np.testing.assert_array_equal(out, np.flatnonzero(x))
            xs = [np.ones(7, np.float32), np.zeros(9, np.float32)][:slots]
            pending = [s.submit({"x": x}) for x in xs]
            for p, x in zip(pending, xs):
                np.testing.assert_array_equal(p.result()["idx"], np.flatnonzero(x))
            assert s.graph_captures == 0
            assert s.graph_blocker is not None and "(idx)" in s.graph_blocker, s.graph_blocker
with Engine.load(ft.bundled_policy_plan(), trt_module=module) as engine:
    # No request is run here: the fake computes on the host, which a graph would not replay.
    with InferenceSession(engine, device=0, io="zero_copy") as s:
        assert s.executable.graph_capturable and s.graph_blocker is None, s.graph_blocker
    with InferenceSession(engine, device=0, io="zero_copy", cuda_graph="off") as s:
        assert s.graph_blocker == "cuda_graph='off' was asked for", s.graph_blocker
print("ok")
"""


def test_nonzero_on_the_cuda_runner_in_mapped_memory() -> None:
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, (
        f"child exited {done.returncode} (negative: killed by that signal, e.g. -11 when a "
        f"bound address was not host-readable)\n{done.stdout}\n{done.stderr}")
    assert done.stdout.strip().endswith("ok")
