"""`edgert bench` end to end: the bundled model, JSON schema, the plot, --no-rt, refusals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgert.bench import SCHEMA
from edgert.cli import main
from edgert.cli._bench import _Console, parse_cpus

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--duration", "0.3", "--warmup", "0.05"]


class Nullable:
    """A schema entry that may also be null."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner


NUM = (int, float)
SUMMARY = {"count": int, "retained": int, "capacity": int, "wrapped": bool, "sum_ns": int,
           "min_ns": int, "max_ns": int, "mean_ns": NUM, "p50_ns": NUM, "p90_ns": NUM,
           "p99_ns": NUM, "p999_ns": NUM, "counts_over": dict}
SAMPLE = {"t_s": NUM, "temps_c": dict, "max_temp_c": Nullable(NUM), "hottest": Nullable(str),
          "power_mw": Nullable(NUM), "gpu": Nullable(dict), "throttled": Nullable(bool),
          "throttle_reasons": list}
BENCH_SCHEMA: dict[str, Any] = {
    "schema": str, "edgert_version": str, "started_at": str,
    "options": {"rate_hz": NUM, "duration_s": NUM, "warmup_s": NUM, "rt": bool, "priority": int,
                "cpus": Nullable(list), "io": str, "cuda_graph": str, "slots": int,
                "batch": int, "sync": str, "runtime": str, "root": str},
    "backend": {"kind": str, "model": str, "runtime": str, "reason": str, "device": str,
                "device_name": Nullable(str), "io": str, "cuda_graph": str, "slots": int,
                "sync": str, "batch": int, "inputs": dict, "graph_captures": int},
    "result": {"elapsed_s": NUM, "requests": int, "throughput_qps": NUM, "samples_per_s": NUM,
               "stopped_by": str, "deadline_misses": int, "skipped_periods": int},
    "latency": {"total": SUMMARY, "enqueue": SUMMARY, "compute": SUMMARY,
                "h2d": Nullable(SUMMARY), "d2h": Nullable(SUMMARY), "device": Nullable(SUMMARY)},
    "loop": Nullable({"period_ns": int, "iterations": int, "deadline_misses": int,
                      "skipped_periods": int, "elapsed_ns": int, "wake": SUMMARY,
                      "step": SUMMARY, "gc_collections": int, "minor_faults": int,
                      "major_faults": int, "involuntary_switches": int, "stopped_by": str}),
    "realtime": {"requested": bool, "summary": str, "refused": list, "policy": Nullable(dict)},
    "thermal": {"start": SAMPLE, "end": SAMPLE, "throttled": Nullable(bool), "sources": list,
                "sensor_errors": int, "samples": list},
    "warnings": list, "notes": list, "environment": Nullable(dict),
}


def check_schema(data: Any, schema: Any, where: str = "$") -> None:
    """Required keys and their types, recursively (extra keys are allowed)."""
    if isinstance(schema, Nullable):
        if data is not None:
            check_schema(data, schema.inner, where)
        return
    if isinstance(schema, dict):
        assert isinstance(data, dict), f"{where}: expected an object, got {data!r}"
        for key, sub in schema.items():
            assert key in data, f"{where}: missing key {key!r}"
            check_schema(data[key], sub, f"{where}.{key}")
        return
    assert isinstance(data, schema), f"{where}: expected {schema}, got {data!r}"
    assert not (isinstance(data, bool) and schema in (int, NUM)), f"{where}: a bool, not {schema}"


def test_schema_check_catches_mistakes() -> None:
    check_schema({"a": 1, "b": None}, {"a": int, "b": Nullable(str)})
    for bad in ({"b": None}, {"a": "1", "b": None}, {"a": True, "b": None}, {"a": 1, "b": 2}):
        with pytest.raises(AssertionError):
            check_schema(bad, {"a": int, "b": Nullable(str)})


def test_cli_end_to_end_bundled_json_and_plot(tmp_path: Path) -> None:
    """What the README's `bin/edgert` runs: a fresh process, the bundled model, no GPU."""
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "edgert", "bench", *SHORT, "--json", str(out_json),
         "--plot", str(out_png)], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "=== Performance summary ===" in proc.stdout
    assert "Latency (total)" in proc.stdout
    assert "\r" not in proc.stderr  # no progress line when stderr is not a terminal
    data = json.loads(out_json.read_text())
    check_schema(data, BENCH_SCHEMA)
    assert data["schema"] == SCHEMA
    assert data["backend"]["model"] == "bundled"
    assert data["result"]["requests"] == data["loop"]["iterations"] == 300
    assert data["realtime"]["requested"] is True
    assert data["environment"]["sections"]["system"]["verdict"]  # the doctor's summary
    png = out_png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1000, 700)
    assert len(png) > 20_000  # two drawn panels, not an empty canvas


def test_shapes_flag_sets_the_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--no-rt", "--rate", "0", "--shapes", "obs:5x48", "--no-environment",
               "--json", "-", *SHORT])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)
    check_schema(data, BENCH_SCHEMA)
    assert data["backend"]["inputs"]["obs"] == [5, 48]


def test_no_rt_json_to_stdout_and_back_to_back(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--no-rt", "--rate", "0", "--slots", "2", "--batch", "8",
               "--no-environment", "--json", "-", *SHORT])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)  # only JSON on stdout with --json -
    check_schema(data, BENCH_SCHEMA)
    assert data["realtime"] == {"requested": False, "refused": [], "policy": None,
                                "summary": "off: the loop ran with the default scheduler"}
    assert data["loop"] is None
    assert data["environment"] is None
    assert data["backend"]["batch"] == 8
    assert data["backend"]["slots"] == 2
    assert "multiple_slots" in [w["code"] for w in data["warnings"]]
    assert captured.err == ""  # nothing refused, nothing to say


def test_rt_is_applied_as_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from edgert.realtime import realtime_capabilities

    if not realtime_capabilities(priority=70).can_schedule_fifo:
        pytest.skip("SCHED_FIFO is not permitted here")
    from edgert.realtime._sysinfo import proc_status_kib

    out = tmp_path / "b.json"
    locked_before = proc_status_kib("VmLck")
    rc = main(["bench", "--no-environment", "--cpus", "0", "--priority", "70", "--json",
               str(out), *SHORT])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    if locked_before == 0:  # bench locked memory for the run and unlocked it all afterwards
        assert proc_status_kib("VmLck") == 0
    rt = json.loads(out.read_text())["realtime"]
    assert rt["refused"] == []
    assert {o["setting"] for o in rt["policy"]["applied"]} == {
        "affinity", "memory_lock", "gc", "scheduler"}
    assert "SCHED_FIFO priority 70" in captured.out
    assert "running without" not in captured.err


#: Python parameter spellings a command-line error must not show (the flags are --rate etc.).
PYTHON_NAMES = ("rate_hz", "duration_s", "warmup_s", "cuda_graph", "rt=", "device=", "runtime=",
                "cpus=", "io=", "sync=", "slots=", "batch=")


def assert_cli_error(err: str, message: str) -> None:
    """``edgert bench: ...`` naming flags, not Python parameters, ending with a Hint line."""
    assert err.startswith("edgert bench: "), err
    assert message in err
    lines = err.rstrip("\n").splitlines()
    assert lines[-1].startswith("Hint: "), err
    assert lines[-1][len("Hint: "):].strip(), err
    assert not [name for name in PYTHON_NAMES if name in err], err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--duration", "0"], 2, "--duration must be > 0"),
    (["--rate", "-1"], 2, "--rate must be >= 0"),
    (["--priority", "100"], 2, "--priority must be an int from 1 to 99"),
    (["--slots", "65"], 2, "--slots must be an int from 1 to 64"),
    (["--batch", "300"], 2, "--batch 300 is outside the profile of input 'obs'"),
    (["--device", "3"], 2, "not on CUDA device 3"),
    (["--cpus", "0"], 2, "--cpus needs --rt"),
    (["/no/such/model.onnx"], 1, "no/such/model.onnx"),
    (["--graph", "--device", "host"], 2, "--graph needs a CUDA device"),
    (["--runtime", "lean"], 2, "runs on ONNX Runtime, not TensorRT"),
    (["--shapes", "obs:1xq"], 2, "bad shape '1xq'"),
    (["--shapes", "image:1x3"], 2, "--shapes names 'image', which the model does not take"),
    (["--shapes", "obs:300x48"], 2, "outside the profile of input 'obs'"),
    (["--shapes", "obs:8x48", "--batch", "4"], 2, "disagree on its first dimension"),
])
def test_errors_have_clear_messages_and_exit_codes(
        argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--no-environment", "--no-rt", *SHORT, *argv])
    err = capsys.readouterr().err
    assert rc == code
    assert_cli_error(err, message)


@pytest.mark.parametrize(("argv", "message"), [
    (["--rate", "abc"], "argument --rate: invalid float value: 'abc'"),
    (["--io", "fast"], "argument --io: invalid choice: 'fast'"),
    (["--cpus", "3-1"], "argument --cpus: '3-1' is not a CPU list"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_usage_errors_name_the_flag_and_end_with_a_hint(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert_cli_error(err, message)
    assert "usage:" not in err  # one line and a hint, not argparse's usage block


def test_cpus_that_do_not_exist_are_a_usage_error_in_the_policys_words(
        capsys: pytest.CaptureFixture[str]) -> None:
    missing = max(os.sched_getaffinity(0)) + 4096
    rc = main(["bench", "--no-environment", "--cpus", str(missing), *SHORT])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""  # nothing ran
    assert_cli_error(captured.err, f"--cpus {missing}: cannot pin thread")
    assert "is online and allowed for this thread" in captured.err  # RealtimePolicy's message
    assert "limits.conf" not in captured.err  # not an OS refusal to be allowed


def test_plot_without_matplotlib_is_refused_before_the_run(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    rc = main(["bench", "--no-environment", "--no-rt", "--plot", str(tmp_path / "p.png"),
               *SHORT])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""  # refused before the run, not after it
    assert_cli_error(captured.err, "--plot: writing a plot needs matplotlib")
    assert "pip install 'matplotlib" in captured.err


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_output_into_a_missing_directory_is_refused_before_the_run(
        flag: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["bench", "--no-environment", "--no-rt", flag, str(tmp_path / "no" / "x"),
               *SHORT])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert_cli_error(captured.err, f"{flag}: cannot write")
    # A directory as the file: found before the run too (it was 'Is a directory' after it).
    rc = main(["bench", "--no-environment", "--no-rt", flag, str(tmp_path), *SHORT])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert_cli_error(captured.err, f"{flag}: {tmp_path} is a directory")


def test_cpu_lists() -> None:
    assert parse_cpus("3") == {3}
    assert parse_cpus("0,2-4") == {0, 2, 3, 4}
    for bad in ("", "a", "3-1", "-1"):
        with pytest.raises(Exception, match="CPU list"):
            parse_cpus(bad)


def test_progress_line_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.bench import BenchProgress
    from edgert.bench._sampler import SensorSample

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    p = BenchProgress(phase="measure", elapsed_s=1.0, duration_s=3.0, requests=1000,
                      mean_us=20.0, max_us=80.0, late=2,
                      sample=SensorSample(t_s=1.0, max_temp_c=50.0, hottest="tj-thermal"))
    monkeypatch.setenv("COLUMNS", "120")
    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        console = _Console(stream)
        console.progress(p)
        console.notice("edgert bench: a notice")
        console.done()
    assert pipe.getvalue() == "edgert bench: a notice\n"
    text = tty.getvalue()
    assert text.startswith("\rbench: measure  1.0/3 s  1,000 requests  step 20.0 us (max 80)")
    assert "2 late" in text
    assert "tj-thermal 50.0 °C" in text
    assert "\r\x1b[Kedgert bench: a notice\n" in text  # the line is cleared before a notice


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unprivileged_run_says_what_was_refused_in_one_line_and_exits_0(tmp_path: Path) -> None:
    # The interpreter may live under /root, which nobody cannot read: run once as root so that
    # everything bench imports lazily is imported, then lower the limits and drop privileges.
    code = (
        "import contextlib, io, os, resource, sys\n"
        "import edgert.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert edgert.cli.main(['bench', '--duration', '0.05', '--warmup', '0']) == 0\n"
        "resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))\n"
        "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "print('DROPPED', file=sys.stderr, flush=True)\n"
        "sys.exit(edgert.cli.main(['bench', '--duration', '0.3', '--json', '-']))\n"
    )
    tmp_path.chmod(0o777)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    after = proc.stderr.split("DROPPED\n", 1)[1]
    lines = [line for line in after.splitlines() if line.strip()]
    assert len(lines) == 1, after
    assert lines[0].startswith("edgert bench: running without locked memory (E")
    assert "and SCHED_FIFO priority 80 (EPERM): the OS refused them" in lines[0]
    assert lines[0].endswith("`edgert doctor` shows how to allow them")
    data = json.loads(proc.stdout)
    check_schema(data, BENCH_SCHEMA)
    assert {"scheduler", "memory_lock"} <= set(data["realtime"]["refused"])
    refused = {o["setting"]: o for o in data["realtime"]["policy"]["refused"]}
    assert refused["scheduler"]["errno"] == 1
    assert "rtprio 80" in refused["scheduler"]["hint"]
    assert "realtime_refused" in [w["code"] for w in data["warnings"]]
    assert data["result"]["requests"] == 300
    assert data["environment"]["sections"]["realtime"]["check_verdicts"]["sched_fifo"] == "fail"
