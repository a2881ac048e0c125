"""edgert bench on a CUDA device (pytest -m gpu): the bundled model as kernels, CUDA events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgert import bench
from edgert.cli import main

pytestmark = pytest.mark.gpu

FAST = {"duration_s": 0.5, "warmup_s": 0.1, "environment": False, "sample_interval_s": 0.1}


def test_kernel_executable_copy_io_times_every_stage_with_cuda_events() -> None:
    from edgert.kernels import KernelExecutable

    with KernelExecutable() as exe:
        r = bench.run(exe, io="copy", cuda_graph="off", rate_hz=1000, rt=False, **FAST)
    assert r.backend.kind == "kernel"
    assert r.backend.device == "cuda:0"
    assert r.backend.io == "copy"
    assert r.backend.cuda_graph == "off"
    for stage in ("total", "enqueue", "h2d", "compute", "d2h", "device"):
        s = r.latency[stage]
        assert s is not None, stage
        assert s.count == r.requests, stage
    device, total = r.latency["device"], r.latency["total"]
    assert device is not None
    assert total is not None
    assert device.p50_ns < total.p50_ns  # events inside the host round trip  # type: ignore[operator]
    assert "GPU compute" in r.render()


def test_zero_copy_graphs_have_no_copies() -> None:
    r = bench.run(io="zero_copy", cuda_graph="on", sync="spin", rate_hz=1000, rt=False, **FAST)
    assert r.backend.kind == "kernel"  # the bundled model on a GPU
    assert r.latency["h2d"] is None
    assert r.latency["d2h"] is None
    assert r.latency["compute"] is not None
    assert r.backend.graph_captures >= 1


def test_nvml_is_sampled_when_present() -> None:
    pytest.importorskip("pynvml")
    r = bench.run(rate_hz=500, rt=False, **FAST)
    if r.thermal.nvml_unavailable:
        pytest.skip(f"NVML not usable: {r.thermal.nvml_unavailable}")
    assert any(s.startswith("NVML GPU") for s in r.thermal.sources)
    assert r.thermal.start.gpu is not None
    assert r.thermal.start.gpu.temperature_c is not None
    assert r.thermal.start.throttled is not None


def test_cli_bundled_on_the_gpu_back_to_back(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    rc = main(["bench", "--rate", "0", "--slots", "4", "--batch", "64", "--io", "copy",
               "--duration", "0.5", "--warmup", "0.1", "--no-environment", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["backend"]["kind"] == "kernel"
    assert data["backend"]["device"] == "cuda:0"
    assert data["latency"]["h2d"]["count"] == data["result"]["requests"] > 100
    assert "multiple_slots" in [w["code"] for w in data["warnings"]]
