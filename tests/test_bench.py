"""edgert.bench as a library: runs on the host, options, warnings, sensors, report forms."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import bench
from edgert.bench._backend import BackendInfo
from edgert.bench._report import RealtimeOutcome, ThermalSummary
from edgert.bench._run import input_arrays, realtime_outcome, unsized_dims
from edgert.bench._sampler import Sampler, SensorSample
from edgert.bench._warnings import find_warnings
from edgert.engine import Engine
from edgert.errors import InferenceError, InvalidArgumentError, NotSupportedError
from edgert.models import bundled_model_path
from edgert.realtime import PolicyReport, SettingOutcome
from edgert.stats import LatencyStats, LatencySummary
from edgert.testing.jetson import Fault, build_jetson_tree, raising_reads


def fake_plan() -> bytes:
    """The bundled policy as a fake TensorRT plan (computed on the host by the fake runtime)."""
    from edgert.testing import fake_tensorrt as ft

    return ft.make_plan(
        inputs=[ft.FakeTensor("obs", "FLOAT", (-1, 48), profiles=[((1, 48), (1, 48), (256, 48))])],
        outputs=[ft.FakeTensor("actions", "FLOAT", ("obs:0", 12))],
        function="edgert.control_policy")


FAST: dict[str, Any] = {"duration_s": 0.25, "warmup_s": 0.05, "environment": False,
                        "sample_interval_s": 0.05}


@pytest.fixture(scope="module")
def host_report() -> bench.BenchReport:
    """One periodic run of the bundled model on the host, shared by the read-only tests."""
    return bench.run(rate_hz=1000, rt=False, device="host", **FAST)


def test_periodic_run_on_the_host_measures_every_stage_it_has(
        host_report: bench.BenchReport) -> None:
    r = host_report
    assert r.backend.kind == "onnxruntime"
    assert r.backend.device == "host"
    assert r.backend.inputs == (("obs", (1, 48)),)
    assert r.stopped_by == "duration"
    assert r.loop is not None
    # One step per period, 250 of them; a loaded machine may skip periods (never hidden:
    # counted apart), and a loop that fell behind stops at the duration with fewer steps.
    assert 125 <= r.loop.iterations <= 250
    assert r.loop.iterations + r.loop.skipped_periods >= 249
    # Every request is counted once in each host figure, and the loop ran one per period.
    assert r.requests == r.loop.iterations == r.latency["total"].count  # type: ignore[union-attr]
    for stage in ("total", "enqueue", "compute"):
        s = r.latency[stage]
        assert s is not None
        assert s.count == r.requests
        assert s.min_ns is not None
        assert s.max_ns is not None
        assert 0 < s.min_ns <= s.p50_ns <= s.max_ns  # type: ignore[operator]
    for stage in ("h2d", "d2h", "device"):  # no copies and no CUDA events on the host
        assert r.latency[stage] is None
    assert r.samples["t"].size == r.samples["total"].size == r.requests
    assert np.all(np.diff(r.samples["t"]) > 0)
    assert r.realtime.requested is False
    assert 0 < r.throughput_qps <= 1000 * 1.05


def test_report_forms_agree(host_report: bench.BenchReport) -> None:
    d = json.loads(host_report.to_json())
    assert d["schema"] == bench.SCHEMA
    assert d["result"]["requests"] == host_report.requests
    assert d["latency"]["compute"]["count"] == host_report.requests
    assert d["latency"]["h2d"] is None
    assert d["loop"]["iterations"] == host_report.loop.iterations  # type: ignore[union-attr]
    assert "samples" not in d
    with_samples = host_report.to_dict(samples=True)
    assert len(with_samples["samples"]["total"]) == host_report.requests
    text = host_report.render()
    for part in ("=== Performance summary ===", "Throughput:", "Latency (total)",
                 "Compute (host)", "Wake-up latency", "Deadline misses: ", "=== Warnings ==="):
        assert part in text, part
    assert str(host_report) == text


def test_back_to_back_with_slots_has_no_loop_and_says_latency_includes_queueing() -> None:
    r = bench.run(rate_hz=0, slots=3, batch=4, rt=False, **FAST)
    assert r.loop is None
    assert r.backend.slots == 3
    assert r.backend.batch == 4
    assert r.requests > 50
    assert r.samples_per_s == pytest.approx(4 * r.throughput_qps)
    assert "multiple_slots" in {w.code for w in r.warnings}
    assert "back to back" in r.render()


def test_engine_and_fake_tensorrt_plan_backends(tmp_path: Path) -> None:
    with Engine.load(bundled_model_path()) as engine:
        r = bench.run(engine, rate_hz=2000, rt=False, **FAST)
        assert not engine.closed  # borrowed, not closed
    assert r.backend.kind == "onnxruntime"
    assert r.backend.reason == "the Engine passed in"
    plan = tmp_path / "policy.plan"
    plan.write_bytes(fake_plan())
    r = bench.run(plan, runtime="fake", rate_hz=2000, batch=4, rt=False, **FAST)
    assert r.backend.kind == "tensorrt"
    assert r.backend.runtime.startswith("edgert.testing.fake_tensorrt")
    assert r.backend.inputs == (("obs", (4, 48)),)
    assert r.latency["compute"] is not None


def test_options_are_validated() -> None:
    for bad in ({"rate_hz": -1}, {"rate_hz": float("nan")}, {"duration_s": 0},
                {"priority": 0}, {"slots": 0}, {"batch": True}, {"io": "fast"},
                {"cuda_graph": "maybe"}, {"cpus": []}, {"cpus": [-1]}, {"device": "gpu"},
                {"sample_interval_s": 0}):
        with pytest.raises(InvalidArgumentError):
            bench.BenchOptions(**bad)
    o = bench.BenchOptions(cuda_graph=False, cpus=[1, 0], root="/tmp")
    assert str(o.cuda_graph) == "off"
    assert o.cpus == frozenset({0, 1})
    assert o.root == Path("/tmp")
    assert o.period_ns == 1_000_000
    assert bench.BenchOptions(rate_hz=0).period_ns is None
    assert 4096 <= bench.BenchOptions(rate_hz=1000, duration_s=3).capacity() <= 8192
    with pytest.raises(InvalidArgumentError, match="cannot benchmark"):
        bench.run(object(), environment=False)


@pytest.mark.parametrize(("rate_hz", "duration_s"), [
    (1e-9, 1), (1e-6, 3), (1e-6, 7), (0.3333, 3), (0.5, 1), (3e-5, 40_000), (1 / 3, 3.5)])
def test_a_duration_of_partial_periods_is_told_values_it_accepts(rate_hz: float,
                                                                  duration_s: float) -> None:
    # a trial was told --duration 1e+09 (over the one-day limit); a review, rate_hz=0.3333 for
    # 3 s (0.9999 periods) and duration_s=3 at 0.3333 Hz (3.0003 s a period): all refused
    with pytest.raises(InvalidArgumentError) as info:
        bench.BenchOptions(rate_hz=rate_hz, duration_s=duration_s)
    hint = str(info.value.hint)
    told = re.findall(r"(?:give |or |, )(duration_s|rate_hz)=([0-9.e+-]+)", hint)
    assert told, hint
    for name, value in told:
        given = {"rate_hz": rate_hz, "duration_s": duration_s, name: float(value)}
        bench.BenchOptions(**given)  # accepted


def test_inputs_follow_the_profile_and_refuse_batches_it_cannot_take() -> None:
    with Engine.load(bundled_model_path()) as engine:
        arrays = input_arrays(engine.tensors, 16)
        assert arrays["obs"].shape == (16, 48)
        assert arrays["obs"].dtype == np.float32
        with pytest.raises(InvalidArgumentError, match="outside"):
            input_arrays(engine.tensors, 257)


def _summary(**figures: float) -> LatencySummary:
    stats = LatencyStats(16)
    stats.record_many(np.array([int(figures.get("p50", 1000))] * 3))
    return stats.summary()


def _outcome(refused: tuple[str, ...] = ()) -> RealtimeOutcome:
    report = PolicyReport(thread_id=1, thread_name="t", refused=tuple(
        SettingOutcome(setting=s, applied=False, detail="no", errno_value=1) for s in refused))
    return realtime_outcome(bench.BenchOptions(), report)


def _thermal(*samples: SensorSample) -> ThermalSummary:
    first = samples[0] if samples else SensorSample(t_s=0.0)
    return ThermalSummary(start=first, end=samples[-1] if samples else first,
                          samples=samples, sources=())


def test_warnings_follow_trtexec_rules() -> None:
    gpu = BackendInfo(kind="kernel", model="m", runtime="r", reason="x", device="cuda:0",
                      cuda_graph="off", graph_captures=0)
    enqueue_bound = {"compute": _summary(p50=10_000), "enqueue": _summary(p50=9_000),
                     "h2d": _summary(p50=10_000), "d2h": _summary(p50=1_000)}
    codes = [w.code for w in find_warnings(backend=gpu, latency=enqueue_bound, loop=None,
                                           realtime=_outcome(), thermal=_thermal())]
    assert codes == ["enqueue_bound", "transfer_bound"]
    calm = {"compute": _summary(p50=10_000), "enqueue": _summary(p50=7_000),
            "h2d": _summary(p50=9_000), "d2h": None}
    assert find_warnings(backend=gpu, latency=calm, loop=None, realtime=_outcome(),
                         thermal=_thermal()) == []
    # On the host the enqueue contains the run itself: never "enqueue bound" there.
    host = BackendInfo(kind="onnxruntime", model="m", runtime="r", reason="x")
    assert find_warnings(backend=host, latency=enqueue_bound | {"h2d": None}, loop=None,
                         realtime=_outcome(), thermal=_thermal()) == []
    hot = SensorSample(t_s=1.0, throttled=True, throttle_reasons=("tj 99 °C >= trip",))
    found = find_warnings(backend=host, latency={}, loop=None,
                          realtime=_outcome(("scheduler", "memory_lock")),
                          thermal=_thermal(SensorSample(t_s=0.0, throttled=False), hot))
    assert [w.code for w in found] == ["throttling", "realtime_refused"]
    assert "tj 99" in found[0].message


def test_deadline_misses_are_warned_with_the_numbers() -> None:
    from edgert.realtime import PeriodicLoop
    from edgert.testing.realtime import FakeClock

    clock = FakeClock()
    loop = PeriodicLoop(period_ns=1000, clock=clock, sleep_until=clock.sleep_until)
    report = loop.run(lambda t: clock.advance(2500 if t.iteration == 2 else 100), iterations=5)
    host = BackendInfo(kind="onnxruntime", model="m", runtime="r", reason="x")
    [w] = find_warnings(backend=host, latency={}, loop=report, realtime=_outcome(),
                        thermal=_thermal())
    assert w.code == "deadline_misses"
    assert "1 of 5 periods missed their deadline and 2 periods were skipped" in w.message
    assert w.hint
    assert "--rate" in w.hint
    # Counts are written as in the report's "Deadline misses: 1 of 3,000 periods" line.
    clock = FakeClock()
    loop = PeriodicLoop(period_ns=1000, clock=clock, sleep_until=clock.sleep_until)
    report = loop.run(lambda t: clock.advance(1_200_000 if t.iteration == 0 else 100),
                      iterations=1500)
    [w] = find_warnings(backend=host, latency={}, loop=report, realtime=_outcome(),
                        thermal=_thermal())
    assert w.message.startswith(
        f"1 of 1,500 periods missed their deadline and {report.skipped_periods:,} periods were")


def test_realtime_outcome_lines() -> None:
    applied = realtime_outcome(bench.BenchOptions(cpus=[0]), PolicyReport(
        thread_id=1, thread_name="t", applied=tuple(
            SettingOutcome(setting=s, applied=True, detail="ok")
            for s in ("affinity", "memory_lock", "gc", "scheduler"))))
    assert applied.summary == ("CPU pinning to 0, locked memory, a frozen garbage collector, "
                               "SCHED_FIFO priority 80")
    line = _outcome(("scheduler", "memory_lock")).summary
    assert line == ("running without SCHED_FIFO priority 80 (EPERM) and locked memory (EPERM): "
                    "the OS refused them")
    off = realtime_outcome(bench.BenchOptions(rt=False), None)
    assert not off.requested
    assert off.refused == ()
    assert off.summary.startswith("off")


def test_sampler_reads_a_fake_jetson_and_sees_throttling(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "j", temps={"tj": 60.0}) as tree, \
            Sampler(tree.root, interval_s=0.05) as sampler:
        cool = sampler.record()
        assert cool.throttled is False
        assert cool.hottest == "tj-thermal"
        assert cool.max_temp_c == 60.0
        assert cool.temps_c["cv0-thermal"] is None
        assert cool.power_mw is not None
        assert cool.power_mw > 0
        tree.set_temp("tj", 100.0)  # above the 99 °C passive trip
        hot = sampler.record()
        assert hot.throttled is True
        assert hot.throttle_reasons == ("tj-thermal 100.0 °C >= passive trip 99.0 °C",)
        assert "thermal zones" in sampler.sources[0]
        # A sensor that raises (and one that vanishes) is counted; sampling goes on.
        tree.set_temp("cpu", Fault.GARBAGE)
        with raising_reads([tree.zone_dir("tj") / "temp"], lambda: OSError(5, "EIO")):
            s = sampler.record()
        assert s.temps_c["cpu-thermal"] is None
        assert len(sampler.samples) == 3
        assert json.loads(json.dumps(s.to_dict()))["t_s"] >= 0


def test_sampler_power_is_unknown_when_a_summed_rail_fails(tmp_path: Path) -> None:
    # AGX Orin has no input rail: a rail that fails to read must not count as 0 W.
    with build_jetson_tree(tmp_path / "j", "jp6-agx-orin") as tree, \
            Sampler(tree.root, interval_s=1.0) as sampler:
        full = sampler.sample()
        assert full.power_mw is not None
        assert full.power_missing == ()
        node, n = tree.rails["VDD_GPU_SOC"]
        tree.fail(node / f"curr{n}_input", Fault.EAGAIN)
        s = sampler.sample()
        assert s.power_mw is None
        assert s.power_missing == ("VDD_GPU_SOC",)
        d = json.loads(json.dumps(s.to_dict()))
        assert (d["power_mw"], d["power_missing"]) == (None, ["VDD_GPU_SOC"])


def test_sampler_sees_over_current_throttling(tmp_path: Path) -> None:
    # Orin NX: the INA3221 critical alert on VDD_IN (curr1_crit 7784 mA) throttles the SoC.
    with build_jetson_tree(tmp_path / "j", "jp6-orin-nx") as tree, \
            Sampler(tree.root, interval_s=1.0) as sampler:
        assert sampler.sample().throttled is False
        tree.set_rail("VDD_IN", current_ma=8100, crit_alarm=True)
        s = sampler.sample()
        assert s.throttled is True
        assert s.throttle_reasons == (
            "VDD_IN over-current: critical alarm set (8100 mA, limit 7784 mA)",)


def test_sampler_over_current_without_alarm_files(tmp_path: Path) -> None:
    # The JetPack 4 iio node has limits but no alarms: a current at the critical limit counts.
    with build_jetson_tree(tmp_path / "j", "jp5-agx-orin", rail_layout="iio") as tree, \
            Sampler(tree.root, interval_s=1.0) as sampler:
        assert not any("over-current" in r for r in sampler.sample().throttle_reasons)
        tree.set_rail("VDD_GPU_SOC", current_ma=7900)
        s = sampler.sample()
        assert s.throttled is True
        assert "VDD_GPU_SOC over-current: 7900 mA >= critical limit 7784 mA" in \
            s.throttle_reasons


def test_sampler_skips_the_pmic_zone(tmp_path: Path) -> None:
    # Nano/TX2/Xavier PMIC-Die reads a constant 100 °C: no temperature, never the hottest.
    root = tmp_path / "nano"
    for i, (typ, milli) in enumerate([("CPU-therm", 42000), ("GPU-therm", 41500),
                                      ("PMIC-Die", 100000)]):
        d = root / f"sys/devices/virtual/thermal/thermal_zone{i}"
        d.mkdir(parents=True)
        (d / "type").write_text(typ + "\n")
        (d / "temp").write_text(f"{milli}\n")
        (d / "trip_point_0_type").write_text("passive\n")
        (d / "trip_point_0_temp").write_text("95000\n")
        (root / "sys/class/thermal").mkdir(parents=True, exist_ok=True)
        os.symlink(d, root / f"sys/class/thermal/thermal_zone{i}")
    with Sampler(root, interval_s=1.0) as sampler:
        s = sampler.sample()
    assert (s.hottest, s.max_temp_c) == ("CPU-therm", 42.0)
    assert "PMIC-Die" not in s.temps_c
    assert s.throttled is False


def test_sampler_thread_survives_a_failing_callback(tmp_path: Path) -> None:
    calls: list[SensorSample] = []

    def boom(sample: SensorSample) -> None:
        calls.append(sample)
        raise RuntimeError("printer broke")

    with build_jetson_tree(tmp_path / "j") as tree:
        sampler = Sampler(tree.root, interval_s=0.01, on_sample=boom).start()
        while len(calls) < 3:
            sampler._stop.wait(0.01)
        sampler.close()
        assert sampler.errors >= 3
        assert "printer broke" in (sampler.last_error or "")
        sampler.close()  # idempotent


def test_bare_machine_has_no_sensors_and_says_so(tmp_path: Path) -> None:
    from edgert.testing.jetson import build_bare_tree

    with build_bare_tree(tmp_path / "bare") as tree:
        r = bench.run(rate_hz=2000, rt=False, root=tree.root, **FAST)
    assert not [s for s in r.thermal.sources if not s.startswith("NVML")]  # NVML: a GPU here
    if not r.thermal.sources:
        assert r.thermal.throttled is None
        assert "No thermal zones" in r.render()


def test_report_carries_thermal_start_end_and_timeline(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "j", temps={"tj": 70.0}) as tree:
        r = bench.run(rate_hz=1000, rt=False, root=tree.root, **FAST)
    t = r.thermal
    assert t.start.max_temp_c == 70.0
    assert t.end.max_temp_c == 70.0
    assert t.throttled is False
    assert len(t.samples) >= 2
    assert t.samples[0] == t.start
    assert t.samples[-1] == t.end
    assert "not throttling" in r.render()


def test_progress_and_notices_are_called() -> None:
    seen: list[bench.BenchProgress] = []
    r = bench.run(rate_hz=1000, rt=False, progress=seen.append, notify=print, **FAST)
    assert seen
    assert {p.phase for p in seen} <= {"warmup", "measure"}
    assert all(p.requests >= 0 and p.duration_s > 0 for p in seen)
    assert r.requests > 0


def test_plot_needs_matplotlib(host_report: bench.BenchReport, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    with pytest.raises(NotSupportedError, match="matplotlib") as info:
        host_report.plot(tmp_path / "x.png")
    assert "edgert[plot]" in (info.value.hint or "")


def test_ctrl_c_during_the_measured_phase_returns_what_ran() -> None:
    import os
    import signal

    sent: list[int] = []

    def interrupt_once_measuring(p: bench.BenchProgress) -> None:
        if p.phase == "measure" and p.requests and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the calling thread

    # The signal is sent from the sampler's thread, so it may land on any thread but the main
    # one: as a terminal's Ctrl-C may.
    r = bench.run(duration_s=10, warmup_s=0.0, rt=False, environment=False,
                  sample_interval_s=0.05, progress=interrupt_once_measuring)
    assert r.stopped_by == "interrupted"
    assert 0 < r.requests < 10_000
    assert r.loop is not None
    assert r.loop.stopped_by == "stop"
    assert "stopped early: interrupted" in r.render()


def test_a_sample_taken_before_a_restart_never_enters_the_new_timeline(tmp_path: Path) -> None:
    # The race seen on the H100 (NVML makes each sample slow): the background thread samples,
    # the phase restarts the timeline, then the old sample is appended ahead of `start`.
    with build_jetson_tree(tmp_path / "j") as tree, \
            Sampler(tree.root, interval_s=3600.0) as sampler:
        entered, release = threading.Event(), threading.Event()
        real_sample = sampler.sample

        def slow_sample() -> SensorSample:
            s = real_sample()
            entered.set()
            release.wait(5)
            return s

        sampler.sample = slow_sample  # type: ignore[method-assign]
        stale = threading.Thread(target=sampler.record)
        stale.start()
        assert entered.wait(5)
        sampler.restart_timeline()
        release.set()
        stale.join()
        sampler.sample = real_sample  # type: ignore[method-assign]
        start = sampler.record()
        end = sampler.finish()
        assert sampler.samples == (start, end)


def _rt_files(root: Path, runtime: str, period: str = "1000000") -> Path:
    kernel = root / "proc/sys/kernel"
    kernel.mkdir(parents=True)
    (kernel / "sched_rt_runtime_us").write_text(runtime + "\n")
    (kernel / "sched_rt_period_us").write_text(period + "\n")
    return root


def test_rt_budget_is_read_under_root(tmp_path: Path) -> None:
    from edgert.bench._warnings import RtBudget, read_rt_budget

    assert read_rt_budget(_rt_files(tmp_path / "on", "900000")) == RtBudget(900_000, 1_000_000)
    assert read_rt_budget(_rt_files(tmp_path / "off", "-1")) is None  # throttling off
    # Unreadable: throttling is assumed on, at the kernel's defaults, and said to be assumed.
    assert read_rt_budget(tmp_path / "empty") == RtBudget(950_000, 1_000_000, read=False)


def test_rt_throttling_warning_says_how_it_shows() -> None:
    from edgert.bench._warnings import RtBudget

    host = BackendInfo(kind="onnxruntime", model="m", runtime="r", reason="x")
    total = LatencyStats(16)
    total.record_many(np.array([8_000, 9_000, 50_100_000]))
    [w] = find_warnings(backend=host, latency={"total": total.summary()}, loop=None,
                        realtime=_outcome(), thermal=_thermal(),
                        rt_budget=RtBudget(950_000, 1_000_000))
    assert w.code == "rt_throttling"
    assert "950 ms of every 1000 ms (/proc/sys/kernel/sched_rt_runtime_us)" in w.message
    assert "up to 50 ms once a period" in w.message
    assert "the longest request here took 50.1 ms" in w.message
    assert w.hint
    assert "--no-rt" in w.hint
    assert "https://docs.kernel.org/scheduler/sched-rt-group.html" in w.hint


def test_back_to_back_under_fifo_warns_about_rt_throttling(tmp_path: Path) -> None:
    from edgert.realtime import realtime_capabilities

    if not realtime_capabilities(priority=10).can_schedule_fifo:
        pytest.skip("SCHED_FIFO is not permitted here")
    root = _rt_files(tmp_path, "950000")
    notes: list[str] = []
    opts = {**FAST, "duration_s": 0.1, "root": root, "device": "host"}
    r = bench.run(rate_hz=0, rt=True, priority=10, notify=notes.append, **opts)
    assert "scheduler" in {o.setting for o in r.realtime.policy.applied}  # type: ignore[union-attr]
    assert r.warnings[0].code == "rt_throttling"
    assert any("RT throttling may stop the loop for up to 50 ms" in n for n in notes)
    # Neither a periodic loop (it sleeps every period) nor a run without FIFO is warned.
    for quiet in (bench.run(rate_hz=1000, rt=True, priority=10, **opts),
                  bench.run(rate_hz=0, rt=False, **opts)):
        assert "rt_throttling" not in [w.code for w in quiet.warnings]


def test_cpus_that_do_not_exist_are_an_argument_error_before_anything_runs() -> None:
    import os

    missing = max(os.sched_getaffinity(0)) + 4096
    started: list[object] = []
    with pytest.raises(InvalidArgumentError, match=f"cpus {missing}: cannot pin") as info:
        bench.run(cpus=[missing], progress=started.append, **FAST)
    assert info.value.hint  # the policy's own remedy
    assert started == []
    with pytest.raises(InvalidArgumentError, match="cpus needs rt=True"):
        bench.BenchOptions(cpus=[0], rt=False)


def test_dynamic_dimensions_no_profile_sizes_are_named_in_a_note(tmp_path: Path) -> None:
    # An image model [1, 3, H, W] used to run as a 1x1 image with nothing said about it.
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "H", None])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    said: list[str] = []
    report = bench.run(path, rate_hz=0, duration_s=0.05, warmup_s=0, rt=False,
                       environment=False, root=tmp_path, notify=said.append)
    assert dict(report.backend.inputs)["x"] == (1, 3, 1, 1)
    note = next(n for n in report.notes if "no size to these input dimensions" in n)
    assert "input x (H, dim 3)" in note
    assert "they ran as 1" in note
    # An input without a shape runs as a scalar: said too.
    from edgert._executable import TensorMode, TensorSpec

    bare = TensorSpec(name="z", mode=TensorMode.INPUT, dtype=np.float32, shape=(),
                      unknown_rank=True)
    assert unsized_dims([bare]) == ["input z (no shape)"]
    assert any(note in line for line in said)  # said on stderr at the start, too
    assert note in report.render()
    # The bundled model's only dynamic dimension is its batch, sized by its profile: no note.
    with Engine.load(bundled_model_path()) as engine:
        assert unsized_dims(engine.tensors) == []


def _reflect_pad_model(tmp_path: Path) -> Path:
    pytest.importorskip("onnx")
    from _models import reflect_pad_model

    return reflect_pad_model(tmp_path)


def test_shapes_size_the_inputs_a_model_leaves_unsized(tmp_path: Path) -> None:
    path = _reflect_pad_model(tmp_path)
    common: dict[str, Any] = {"rate_hz": 0, "duration_s": 0.05, "warmup_s": 0, "rt": False,
                              "environment": False, "root": tmp_path}
    with pytest.raises(InferenceError, match=r"does not run at the input shapes x:1x1") as info:
        bench.run(path, **common)
    assert "--shapes x:1x1" in (info.value.hint or "")
    for shapes in ("x:1x480", {"x": (1, 480)}):
        report = bench.run(path, shapes=shapes, **common)
        assert dict(report.backend.inputs)["x"] == (1, 480)
        assert not any("no size to these input dimensions" in n for n in report.notes)
        assert report.requests > 0


def test_a_model_that_needs_real_integer_values_is_told_apart(tmp_path: Path) -> None:
    # Silero VAD's sample rate (found by a new user's trial): the hint names the scalar input
    # that ran as zero and leaves it out of the --shapes it suggests (NAME: is not valid).
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 2, 0, 2])
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
         helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["p", "srf"], ["y"])], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "pad_sr.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InferenceError, match=r"input shapes x:1x1:") as info:
        bench.run(path, rate_hz=0, duration_s=0.05, warmup_s=0, rt=False, environment=False,
                  root=tmp_path)
    hint = info.value.hint or ""
    assert "--shapes x:1x1 " in hint
    assert "sr:" not in hint
    assert "(sr) are zeros" in hint


@pytest.mark.parametrize(("shapes", "message"), [
    ("x:1xa", "bad shape"),
    ("x", "cannot read input shape"),
    ("x:1x4,x:1x8", "appears twice"),
    ({"x": "1x4"}, "sequence of sizes"),
    ({"x": (1, -1)}, "sequence of sizes"),
])
def test_bad_shapes_are_refused_before_anything_runs(shapes: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        bench.BenchOptions(shapes=shapes)


def test_a_batch_given_in_shapes_is_the_batch_reported(tmp_path: Path) -> None:
    common: dict[str, Any] = {"rate_hz": 0, "duration_s": 0.05, "warmup_s": 0, "rt": False,
                              "environment": False, "root": tmp_path, "device": "host"}
    report = bench.run(bundled_model_path(), shapes="obs:8x48", **common)
    assert dict(report.backend.inputs)["obs"] == (8, 48)
    assert report.backend.batch == 8  # samples/s counts 8 per request
    with pytest.raises(InvalidArgumentError, match="disagree on its first dimension"):
        bench.run(bundled_model_path(), shapes="obs:8x48", batch=4, **common)
    report = bench.run(bundled_model_path(), shapes="obs:4x48", batch=4, **common)
    assert report.backend.batch == 4


def test_shape_options_are_immutable_and_hashable() -> None:
    opts = bench.BenchOptions(shapes={"obs": (np.int64(4), 48)})
    assert opts.shape_map == {"obs": (4, 48)}
    assert hash(opts) == hash(bench.BenchOptions(shapes="obs:4x48"))
    assert opts == bench.BenchOptions(shapes="obs:4x48")
    assert opts.to_dict()["shapes"] == {"obs": [4, 48]}
    assert bench.BenchOptions().to_dict()["shapes"] is None


def test_shapes_must_name_inputs_and_fit_their_declaration() -> None:
    with Engine.load(bundled_model_path()) as engine:
        with pytest.raises(InvalidArgumentError, match=r"'image'.*does not take") as info:
            input_arrays(engine.tensors, 1, {"image": (1, 3)})
        assert "obs" in (info.value.hint or "")
        with pytest.raises(InvalidArgumentError, match="does not fit input 'obs'"):
            input_arrays(engine.tensors, 1, {"obs": (4, 47)})
        assert input_arrays(engine.tensors, 1, {"obs": (4, 48)})["obs"].shape == (4, 48)
        with pytest.raises(InvalidArgumentError, match="outside the profile of input 'obs'"):
            input_arrays(engine.tensors, 1, {"obs": (300, 48)})  # its profile stops at 256


def test_a_loop_that_falls_behind_still_ends_at_the_phase_duration() -> None:
    # At a rate the model cannot keep, every step skips periods; the phase ran rate x duration
    # *steps*, so `--rate 100000 --duration 0.3` took 1.5 s. Each step here takes >= 3 ms
    # against 1 ms periods: 50 steps would take >= 150 ms, the phase asks for 50 ms.
    from edgert.bench._phase import PhaseRunner

    class SlowSession:
        def infer(self, inputs: object) -> None:
            end = time.perf_counter() + 0.003
            while time.perf_counter() < end:
                pass

    runner = PhaseRunner(SlowSession(), {}, slots=1, period_ns=1_000_000, capacity=1024)
    report = runner.run("measure", 0.05)
    assert report is not None
    assert report.deadline_misses == report.iterations
    assert runner.requests < 50  # stopped by the clock, not by the step count


def test_slots_at_a_fixed_rate_say_results_wait_for_the_next_period() -> None:
    """At a fixed rate a result is collected by the next step: the warning says the total
    latency includes that wait, not queueing (found by a new user's trial)."""
    r = bench.run(rate_hz=500, slots=2, rt=False, **FAST)
    (warning,) = [w for w in r.warnings if w.code == "multiple_slots"]
    assert "collected at the next period" in warning.message
    assert "2000" in warning.message.replace(",", "")  # the period, 2000 µs


def test_host_cpu_time_per_request_is_reported() -> None:
    """Issue 15: host CPU time per request beside latency, in the report, its text and JSON."""
    r = bench.run(rate_hz=0, rt=False, **FAST)
    assert r.cpu_s is not None
    assert 0 < r.cpu_s <= (os.cpu_count() or 1) * r.elapsed_s + 0.05  # every core at most
    assert r.cpu_us_per_request == pytest.approx(r.cpu_s * 1e6 / r.requests)
    assert "Host CPU:" in r.render()
    result = r.to_dict()["result"]
    assert result["cpu_us_per_request"] == pytest.approx(r.cpu_us_per_request)


def test_a_sample_with_an_unreadable_rail_says_power_is_unknown() -> None:
    from edgert.bench._render import _sample_line

    line = _sample_line(SensorSample(t_s=1.0, power_missing=("VDD_GPU_SOC",), throttled=False))
    assert "board power unknown (VDD_GPU_SOC unreadable)" in line
    assert " W" not in line.replace("unknown", "")
