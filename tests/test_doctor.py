"""edgert doctor against fake roots, this machine and an unprivileged child process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.cli import main
from edgert.doctor import DoctorReport, Section, Verdict, run_doctor
from edgert.doctor._report import Check
from edgert.testing.jetson import build_bare_tree, build_jetson_tree

SECTIONS = ["system", "jetson", "gpu", "tensorrt", "realtime", "thermal"]


def _doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["doctor", "--json", *args]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_jetpack6_orin_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with build_jetson_tree(tmp_path, "jp6-orin-nx"):
        data = _doctor_json(capsys, "--root", str(tmp_path))
    sections = data["sections"]
    assert isinstance(sections, dict)
    assert list(sections) == SECTIONS
    jetson = sections["jetson"]["checks"]
    assert jetson["is_jetson"] is True
    assert "Orin" in jetson["model"]
    assert jetson["l4t_release"] == "36.4.3"
    assert jetson["jetpack"] == "6.2"
    assert jetson["nvpmodel_mode"].startswith("2 (")
    thermal = sections["thermal"]["checks"]
    assert thermal["zones_found"] >= 9
    assert "tj-thermal" in thermal
    assert thermal["tj-thermal"].endswith("°C")
    # the cv zones fail with EAGAIN on purpose: they read as unreadable, never as an error
    assert any(k.startswith("cv") for k in thermal["unreadable"])
    assert sections["thermal"]["verdict"] != "error"
    assert data["root"] == str(tmp_path)


def test_jetson_tree_reports_unread_facts_as_info_not_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit",
                        lambda which: (0, 0) if which == resource.RLIMIT_RTPRIO else real(which))
    with build_jetson_tree(tmp_path, "jp6-orin-nx"):
        data = _doctor_json(capsys, "--root", str(tmp_path))
    sections = data["sections"]
    assert isinstance(sections, dict)
    realtime = sections["realtime"]
    assert realtime["verdict"] != "fail", realtime
    assert "not readable in this tree" in realtime["checks"]["rt_priority_limit"]
    assert "not readable in this tree" in realtime["checks"]["rt_kernel"]
    assert not any("limits.conf" in h or "rtprio" in h for h in realtime["hints"])
    assert sections["system"]["verdict"] != "warn", sections["system"]
    assert data["verdict"] != "fail"


def test_jetpack5_orin_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with build_jetson_tree(tmp_path, "jp5-agx-orin"):
        data = _doctor_json(capsys, "--root", str(tmp_path))
    sections = data["sections"]
    assert isinstance(sections, dict)
    assert sections["jetson"]["checks"]["l4t_release"].startswith("35.")
    assert sections["jetson"]["checks"]["jetpack"].startswith("5.")
    assert "tj-therm" in sections["thermal"]["checks"]
    for name in SECTIONS:
        assert sections[name]["verdict"] != "error", sections[name]


def test_bare_container_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with build_bare_tree(tmp_path):
        data = _doctor_json(capsys, "--root", str(tmp_path))
    sections = data["sections"]
    assert isinstance(sections, dict)
    assert sections["jetson"]["checks"]["is_jetson"] is False
    assert sections["thermal"]["checks"]["zones_found"] == 0
    for name in SECTIONS:
        assert sections[name]["verdict"] != "error", sections[name]


def test_garbage_tree_never_breaks_the_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for rel, data in {
        "proc/device-tree/model": b"\xff\xfe\xfd",
        "proc/sys/kernel/version": b"\x00\x01",
        "sys/class/thermal/thermal_zone0/type": b"\xff",
        "sys/class/thermal/thermal_zone0/temp": b"not a number",
        "var/lib/nvpmodel/status": b"pmode:",
        "etc/nvpmodel.conf": b"< POWER_MODEL ID=x NAME= >\n<<<",
    }.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (tmp_path / "etc/nv_tegra_release").mkdir()
    out = _doctor_json(capsys, "--root", str(tmp_path))
    assert list(out["sections"]) == SECTIONS  # type: ignore[call-overload]


def test_this_machine_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for title in ("System", "Jetson", "GPU (CUDA)", "TensorRT", "Real time", "Thermal"):
        assert title in text
    assert "sched_fifo" in text


def test_a_failing_probe_is_one_error_line() -> None:
    def broken(root: Path) -> Section:
        raise RuntimeError("sensor exploded")

    def fine(root: Path) -> Section:
        s = Section(name="fine", title="Fine")
        s.add("x", 1, Verdict.OK)
        return s

    report = run_doctor("/", {"broken": broken, "fine": fine})
    assert report.section("broken").verdict is Verdict.ERROR
    assert "RuntimeError: sensor exploded" in (report.section("broken").error or "")
    assert report.section("fine").verdict is Verdict.OK
    assert "probe failed: RuntimeError: sensor exploded" in report.render()
    assert json.loads(report.to_json())["verdicts"] == {"broken": "error", "fine": "ok"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unprivileged_child_gets_a_clear_report_and_exit_0(tmp_path: Path) -> None:
    # The interpreter may live under /root, which nobody cannot read: import everything the
    # doctor uses first, then drop privileges, as a service started as root and dropping would.
    code = (
        "import os, resource, sys, json, argparse, traceback, importlib.util\n"
        "import edgert.cli, edgert.doctor._sections; edgert.cli.build_parser()\n"
        "import edgert.doctor._realtime, edgert.doctor._thermal, edgert.realtime, edgert.power\n"
        "import edgert.platform, edgert.cuda; edgert.cuda.probe()\n"
        "import numpy, typing_extensions, cuda.bindings\n"
        "for m in ('tensorrt_lean', 'onnxruntime'):\n"
        "    try: __import__(m)\n"
        "    except ImportError: pass\n"
        "resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))\n"
        "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(edgert.cli.main(['doctor', '--json']))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    tmp_path.chmod(0o777)
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rt = data["sections"]["realtime"]
    assert rt["check_verdicts"]["sched_fifo"] == "fail"
    assert rt["check_verdicts"]["memory_lock"] in ("fail", "warn")
    assert any("RTPRIO" in h or "rtprio" in h for h in rt["hints"])
    for name in SECTIONS:
        assert data["sections"][name]["verdict"] != "error", data["sections"][name]


def test_the_text_report_has_a_legend_and_an_overall_line() -> None:
    sections = [Section(name="a", title="Alpha"), Section(name="b", title="Beta")]
    sections[0].add("x", 1, Verdict.OK)
    sections[1].add("y", 2, Verdict.WARN)
    report = DoctorReport(edgert_version="0", root="/", sections=sections)
    lines = report.render().splitlines()
    assert lines[1].startswith("verdicts: ok = ")
    for word in ("info = ", "warn = ", "fail = ", "error = "):
        assert word in lines[1]
    assert lines[-1] == ("overall: warn (works, not as well as it could in Beta; the hints "
                         "there say what to change)")
    assert report.verdict is Verdict.WARN
    assert json.loads(report.to_json())["verdict"] == "warn"
    sections[1].checks.clear()
    assert report.render().splitlines()[-1] == "overall: ok (nothing to change)"


def _status(**kw: object) -> object:
    from edgert.cuda import CudaStatus

    base: dict[str, object] = {"available": False, "device_count": 0, "driver_version": None,
                               "runtime_version": (13, 0), "bindings_version": "13.0",
                               "reason": "no NVIDIA driver is installed "
                                         "(cudaErrorInsufficientDriver)"}
    base.update(kw)
    return CudaStatus(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "verdict"), [
    # A CPU-only machine without an NVIDIA driver: nothing is broken, models run on the CPU.
    ({}, Verdict.INFO),
    ({"driver_version": (13, 0), "reason": "the driver sees no CUDA device "
                                           "(cudaErrorNoDevice)"}, Verdict.WARN),
    ({"driver_version": (11, 4), "reason": "the NVIDIA driver supports CUDA 11.4, older than "
                                           "this runtime needs"}, Verdict.FAIL),
])
def test_a_missing_gpu_is_failed_only_where_a_driver_is_broken(
        status: dict[str, object], verdict: Verdict, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from edgert import cuda
    from edgert.doctor._sections import gpu_section

    monkeypatch.setattr(cuda, "probe", lambda: _status(**status))
    section = gpu_section(tmp_path)
    assert section.verdict is verdict
    if verdict is Verdict.INFO:
        text = DoctorReport(edgert_version="0", root="/", sections=[section]).render()
        assert "no CUDA device: models run on the CPU through ONNX Runtime" in text
        assert "[INFO ] GPU (CUDA)" in text


# -- thermal: zones at or past their trips, PMIC zones (trial r6, r5) -------------------------

def _thermal_check(tmp_path: Path, tj: float) -> tuple[Section, Check]:
    from edgert.doctor._thermal import thermal_section

    with build_jetson_tree(tmp_path / str(tj), "jp6-orin-nx", temps={"tj": tj}) as tree:
        s = thermal_section(tree.root)
    return s, next(c for c in s.checks if c.name == "tj-thermal")


def test_thermal_zone_past_passive_trip_is_throttling_now(tmp_path: Path) -> None:
    s, c = _thermal_check(tmp_path, 100.0)
    assert c.verdict is Verdict.WARN
    assert c.detail == "throttling now: past its passive trip (99.0 °C) by 1.0 °C"
    assert "throttling now" in s.hints[-1]
    assert not any(re.search(r"-\d", h) for h in s.hints)  # no negative margin anywhere
    _s, c = _thermal_check(tmp_path, 99.0)
    assert c.detail == "throttling now: at its passive trip (99.0 °C)"


def test_thermal_zone_past_critical_trip_fails(tmp_path: Path) -> None:
    s, c = _thermal_check(tmp_path, 105.0)
    assert c.verdict is Verdict.FAIL
    assert "past its critical (shutdown) trip (104.5 °C)" in (c.detail or "")
    assert s.verdict is Verdict.FAIL
    assert "shutdown" in s.hints[-1]
    text = " ".join([*s.hints, *(str(x.detail) for x in s.checks)])
    assert not re.search(r"-\d", text)


def test_thermal_margin_below_the_trip_is_unchanged(tmp_path: Path) -> None:
    _s, c = _thermal_check(tmp_path, 92.0)
    assert c.verdict is Verdict.WARN
    assert c.detail == "7.0 °C below its passive trip (99.0 °C)"
    _s, c = _thermal_check(tmp_path, 46.5)
    assert c.verdict is Verdict.OK


def test_thermal_pmic_zone_is_not_judged(tmp_path: Path) -> None:
    from edgert.doctor._thermal import thermal_section

    d = tmp_path / "sys/devices/virtual/thermal/thermal_zone0"
    d.mkdir(parents=True)
    (d / "type").write_text("PMIC-Die\n")
    (d / "temp").write_text("100000\n")
    (d / "trip_point_0_type").write_text("passive\n")
    (d / "trip_point_0_temp").write_text("95000\n")
    (tmp_path / "sys/class/thermal").mkdir(parents=True)
    os.symlink(d, tmp_path / "sys/class/thermal/thermal_zone0")
    s = thermal_section(tmp_path)
    c = next(c for c in s.checks if c.name == "PMIC-Die")
    assert c.verdict is Verdict.INFO
    assert c.value is None
    assert "not a temperature" in (c.detail or "")
    assert s.verdict is Verdict.INFO
    assert not s.hints
