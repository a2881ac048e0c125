"""Several models on one GPU, without a GPU: reports, options, CLI and doctor lines.

The GPU side (partitions, loads, run_under_load) is in tests/test_green_gpu.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert.bench import GpuLoad, LoadReport, LoadThroughput, ModelPlacement, control_latency
from edgert.cli import main
from edgert.cuda import green_context_support
from edgert.doctor import Section, Verdict
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.stats import LatencyStats
from edgert.testing import FakeGreenDriver

NO_GPU = pytest.mark.skipif("__import__('edgert').cuda.is_available()",
                            reason="checks what happens without a GPU")


def _summary(values_us: list[float]) -> Any:
    stats = LatencyStats(len(values_us))
    for v in values_us:
        stats.record(int(v * 1000))
    return stats.summary()


def _report(loaded_us: list[float], shared_rate: float) -> LoadReport:
    control = ModelPlacement(role="control", what="bundled", partition="partition 0",
                             sm_count=16, priority=-5)
    load = ModelPlacement(role="load", what="persistent fp32 GEMM", partition="rest",
                          sm_count=116, priority=0)
    solo = LoadThroughput(description="gemm", iterations=100, elapsed_s=1.0, rate_per_s=100.0,
                          gflops=1700.0)
    shared = LoadThroughput(description="gemm", iterations=int(shared_rate), elapsed_s=1.0,
                            rate_per_s=shared_rate, gflops=shared_rate * 17.0)
    return LoadReport(control=control, load=load, rate_hz=2000.0,
                      idle=_summary([20.0] * 98 + [30.0, 40.0]),
                      loaded=_summary(loaded_us), load_solo=solo, load_shared=shared)


def test_report_ratios_and_rendering() -> None:
    report = _report([30.0] * 99 + [80.0], 93.0)
    assert report.p50_ratio == pytest.approx(1.5)
    assert report.idle.p99_ns is not None
    assert report.p99_ratio == pytest.approx(report.loaded.p99_ns / report.idle.p99_ns)
    assert report.load_kept == pytest.approx(0.93)
    text = report.render()
    assert "control: bundled on partition 0 (16 SMs), stream priority -5" in text
    assert "load: persistent fp32 GEMM on rest (116 SMs), stream priority 0" in text
    assert "alone 1,700, beside control 1,581 (0.93x)" in text
    data = report.to_dict()
    assert data["control"]["sm_count"] == 16
    assert data["load_kept"] == pytest.approx(0.93)
    assert data["loaded"]["count"] == 100


def test_control_latency_times_every_request() -> None:
    calls: list[Any] = []

    class Session:
        def infer(self, inputs: Any) -> None:
            calls.append(inputs)

    x = np.zeros(3)
    summary = control_latency(Session(), x, rate_hz=100_000.0, count=50, warmup=5)
    assert summary.count == 50
    assert len(calls) == 55
    assert all(c is x for c in calls)
    with pytest.raises(InvalidArgumentError):
        control_latency(Session(), x, rate_hz=0.0, count=5)


def test_unknown_load_kind_is_refused_before_touching_cuda() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown load 'matmul'"):
        GpuLoad("matmul")


@NO_GPU
def test_run_under_load_without_gpu_says_why() -> None:
    from edgert.bench import run_under_load

    with pytest.raises(NotSupportedError, match="CUDA is not available"):
        run_under_load(load="gemm", duration_s=0.1)


@NO_GPU
def test_model_group_without_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.session import ModelGroup

    with pytest.raises(InvalidArgumentError, match="'require', 'auto' or 'off'"):
        ModelGroup(partitions="sometimes")
    with pytest.raises(NotSupportedError, match="CUDA is not available"):
        ModelGroup()


@NO_GPU
def test_cli_bench_load_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    # Every message ends with a Hint line that names flags, not Python parameters (it said
    # "use device='host'"), and the GPU-only flags are refused without --load.
    assert main(["bench", "--load", "gemm", "--duration", "0.1"]) == 2  # usage: no GPU here
    err = capsys.readouterr().err
    assert "--load runs a background load on a GPU beside the model, and there is no CUDA " \
        "device here" in err
    assert err.rstrip().splitlines()[-1].startswith("Hint: leave out --load to benchmark")
    assert main(["bench", "--load", "gemm", "--device", "host"]) == 2
    err = capsys.readouterr().err
    assert "--load needs a CUDA device" in err
    assert err.rstrip().splitlines()[-1].startswith("Hint: ")
    assert main(["bench", "--load", "conv", "--rate", "0"]) == 2
    err = capsys.readouterr().err
    assert "periodic --rate" in err
    assert err.rstrip().splitlines()[-1].startswith("Hint: ")
    assert main(["bench", "--reserve-sms", "8", "--stream-priority", "lowest"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "edgert bench: --reserve-sms and --stream-priority only apply with --load",
        "Hint: add --load gemm|conv|MODEL, or leave them out"]


def test_cli_bench_load_options_parse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--load", "gemm", "--stream-priority", "urgent"])
    assert info.value.code == 2
    assert "'urgent' is not 'highest', 'lowest' or an int" in capsys.readouterr().err


def test_doctor_reports_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgert.cuda
    from edgert.doctor._green import add_green_context_checks

    drivers = {0: FakeGreenDriver(sm_count=132), 1: FakeGreenDriver(supported=False)}
    monkeypatch.setattr(edgert.cuda, "green_context_support",
                        lambda i: green_context_support(i, driver=drivers[i]))
    s = Section(name="gpu", title="GPU")
    add_green_context_checks(s, 2)
    data = s.to_dict()["checks"]
    assert data["device0_sm_partitions"] == {"supported": True, "sm_count": 132,
                                             "min_partition_sms": 8, "alignment_sms": 8}
    assert data["device1_sm_partitions"] == {"supported": False}
    verdicts = {c.name: c.verdict for c in s.checks}
    assert verdicts["device0_sm_partitions"] is Verdict.OK
    assert verdicts["device1_sm_partitions"] is Verdict.INFO
    assert any("docs/multimodel.md" in h for h in s.hints)


def test_docs_guide_exists_and_names_the_api() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "multimodel.md").read_text()
    for name in ("partition_sms", "ModelGroup", "--load", "green context", "Orin"):
        assert name in text


def test_a_host_model_is_refused_as_a_gpu_load() -> None:
    import contextlib

    from edgert.bench._multimodel import _open_load
    from edgert.models import bundled_model_path

    with contextlib.ExitStack() as stack, \
            pytest.raises(InvalidArgumentError, match="runs on the host"):
        _open_load(str(bundled_model_path()), 0, None, "auto", stack)
    with contextlib.ExitStack() as stack, pytest.raises(InvalidArgumentError, match="no load"):
        _open_load("/nonexistent/model.plan", 0, None, "auto", stack)


def _group_on(monkeypatch: pytest.MonkeyPatch, fake: FakeGreenDriver) -> None:
    """Make ModelGroup see ``fake`` as device 0, without a GPU."""
    from types import SimpleNamespace

    import edgert.cuda as ecuda

    partition, support = ecuda.partition_sms, ecuda.green_context_support
    monkeypatch.setattr(ecuda, "device_properties",
                        lambda device=0: SimpleNamespace(multiprocessor_count=fake.sm_count))
    monkeypatch.setattr(ecuda, "green_context_support",
                        lambda device=0: support(device, driver=fake))
    monkeypatch.setattr(ecuda, "partition_sms",
                        lambda sizes, device=0, **kw: partition(sizes, device=device,
                                                                driver=fake, **kw))


def test_a_forgotten_model_group_releases_its_partitions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from edgert.session import ModelGroup

    fake = FakeGreenDriver()
    _group_on(monkeypatch, fake)
    group = ModelGroup(control_sms=16)
    assert group.partitioned
    assert fake.live_contexts == 2
    # Its finalizer held a bound method (the group itself), so it was never collected.
    with pytest.warns(ResourceWarning, match="unclosed ModelGroup"):
        del group  # no cycle: the finalizer runs right here
    gc.collect()
    assert fake.live_contexts == 0
    closed = ModelGroup(control_sms=8)
    closed.close()
    closed.close()
    assert fake.live_contexts == 0


@pytest.mark.parametrize("wish", [0, -16, True, 8.0])
def test_model_group_refuses_a_control_sms_that_is_not_a_positive_int(
        monkeypatch: pytest.MonkeyPatch, wish: Any) -> None:
    from edgert.session import ModelGroup

    fake = FakeGreenDriver()
    _group_on(monkeypatch, fake)
    # 0 and negative sizes used to reserve the minimum partition (8 SMs) silently.
    with pytest.raises(InvalidArgumentError, match="control_sms must be a positive int"):
        ModelGroup(control_sms=wish)
    with pytest.raises(InvalidArgumentError, match="control_sms must be a positive int"):
        ModelGroup(control_sms=wish, partitions="off")
    assert fake.live_contexts == 0


@pytest.mark.parametrize("wish", [0, -8, False])
def test_run_under_load_refuses_a_reserve_sms_that_is_not_a_positive_int(wish: Any) -> None:
    from edgert.bench import run_under_load

    with pytest.raises(InvalidArgumentError, match="reserve_sms must be a positive int"):
        run_under_load(load="gemm", reserve_sms=wish, duration_s=0.1)
