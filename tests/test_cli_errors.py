"""Every `edgert` command reports errors alike: `edgert COMMAND: what failed`, then `Hint:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgert.cli import main
from edgert.cli._bench import FLAGS
from edgert.cli._errors import FlagNames, print_error


def test_flag_names_rewrite_only_what_names_a_parameter() -> None:
    names = FlagNames({"rate_hz": "--rate", "device": "--device", "batch": "--batch"},
                      {"rt": {}})
    assert names("rate_hz must be >= 0") == "--rate must be >= 0"
    assert names("pass device='host' or leave device unset") == \
        "pass --device host or leave out --device"
    assert names("oops\nHint: batch must be 1") == "oops\nHint: --batch must be 1"
    # Ordinary words stay words: only a leading name, name=value or "leave name unset" changes.
    assert names("pick a batch from 1 to 256 on this device") == \
        "pick a batch from 1 to 256 on this device"
    assert names("rate_hzx must") == "rate_hzx must"


def test_bench_flag_names_for_flags_without_a_typed_value() -> None:
    assert FLAGS("cuda_graph='on' needs a CUDA device\nHint: use cuda_graph='auto'") == \
        "--graph needs a CUDA device\nHint: use the default (no --graph or --no-graph)"
    assert FLAGS("cpus needs rt=True\nHint: drop rt=False") == \
        "--cpus needs --rt\nHint: drop --no-rt"
    assert FLAGS("use runtime='auto'") == "use --runtime auto"


def test_print_error_adds_a_hint_only_when_the_error_has_none(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.errors import InvalidArgumentError

    print_error("edgert x", InvalidArgumentError("bad", hint="do this"), hint="fallback")
    print_error("edgert x", OSError("broken"), hint="fallback")
    assert capsys.readouterr().err == (
        "edgert x: bad\nHint: do this\nedgert x: broken\nHint: fallback\n")


def test_no_command_prints_help_then_an_error_with_a_hint(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "COMMAND" in err  # the help
    assert err.rstrip().splitlines()[-2:] == [
        "edgert: no command given",
        "Hint: `edgert bench` runs the bundled model here; `edgert doctor` reports what this "
        "machine allows"]


@pytest.mark.parametrize(("argv", "first"), [
    (["doctor", "--nope"], "edgert doctor: unrecognized arguments: --nope"),
    (["inspect"], "edgert inspect: the following arguments are required: MODEL"),
    (["nope"], "edgert: argument COMMAND: invalid choice: 'nope'"),
])
def test_usage_errors_of_every_command(argv: list[str], first: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.rstrip().splitlines()
    assert lines[0].startswith(first)
    assert lines[-1].startswith("Hint: `edgert")


def test_doctor_on_a_broken_install_exits_3_with_a_hint(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import edgert.cli._doctor as doctor_cli

    monkeypatch.setattr(doctor_cli, "_REQUIRED", ("numpy", "edgert_no_such_dependency"))
    assert main(["doctor", "--root", str(tmp_path)]) == 3
    lines = capsys.readouterr().err.rstrip().splitlines()
    assert lines[0].startswith("edgert doctor: edgert is not installed correctly; these "
                               "dependencies do not import: edgert_no_such_dependency")
    assert lines[-1].startswith("Hint: reinstall edgert")
    assert "pip install edgert`" not in lines[-1]  # it is not on a package index


@pytest.mark.parametrize("command", ["doctor", "bench"])
def test_a_root_that_does_not_exist_is_a_usage_error(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before, `--root /typo` read nothing under it and described an empty machine, exit 0.
    missing, a_file = tmp_path / "nope", tmp_path / "file"
    a_file.write_text("x")
    for root, why in ((missing, "does not exist"), (a_file, "is not a directory")):
        with pytest.raises(SystemExit) as info:
            main([command, "--root", str(root)])
        assert info.value.code == 2
        lines = capsys.readouterr().err.rstrip().splitlines()
        assert lines[0].startswith(f"edgert {command}: argument --root: '{root}' {why}")
        assert lines[-1].startswith("Hint: `edgert")


def test_build_progress_prints_one_line_per_finished_phase() -> None:
    import io

    from edgert.cli._build import ProgressPrinter

    out = io.StringIO()  # not a terminal: only finished phases are printed
    printer = ProgressPrinter(out)
    # TensorRT's order: phase_start, step_complete per step, phase_finish (the last step twice).
    for step in (0, 1, 2, 2):
        assert printer("Building engine", step, 2, 0) is True
    assert printer("Building engine", 0, 2, 0) is True  # built again: its line again
    printer("Building engine", 2, 2, 0)
    assert [line.split("[")[0].strip() for line in out.getvalue().splitlines()] == \
        ["Building engine", "Building engine"]


def test_build_errors_name_the_flags_and_find_a_missing_directory_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "image.onnx"
    onnx.save(model, str(path))
    # A dynamic model without --shapes: the command needs a flag added, a usage error.
    assert main(["build", str(path), "-o", str(tmp_path / "x.plan"), "--runtime", "fake",
                 "--no-progress"]) == 2
    hint = capsys.readouterr().err.rstrip().splitlines()[-1]
    # It said "give BuildOptions(profiles=...), e.g. 'x:1x3x1x1'": Python, and not MIN,OPT,MAX.
    assert hint.startswith("Hint: give each dynamic input its MIN,OPT,MAX shapes, "
                           "--shapes x:1x3x1x1,1x3x1x1,1x3x1x1 with the sizes")
    assert "BuildOptions" not in hint
    # A missing output directory is found before the build, not after it (with a cache hint).
    out = tmp_path / "no" / "x.plan"
    assert main(["build", str(path), "-o", str(out), "--runtime", "fake", "--shapes",
                 "x:1x3x8x8,1x3x8x8,1x3x8x8"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"edgert build: -o: cannot write {out}: its directory does not exist",
        "Hint: create the directory first, or give another path"]


def test_inspect_errors_name_flags_and_say_what_to_do(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Found by the new-user trial: a missing key file printed "[Errno 2] ..." with no Hint,
    # --runtime fake hinted "use runtime='auto'", and a missing .sig hinted at a flag that
    # `inspect` does not have ("pass signature=HEX").
    from edgert.models import bundled_model_path

    model = tmp_path / "m.onnx"
    model.write_bytes(bundled_model_path().read_bytes())
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    cases = [  # a flag's value the command cannot use is a usage error (2); a model, 1
        (["inspect", "bundled", "--hmac-key-file", str(tmp_path / "missing")], "key file", 2),
        (["inspect", "bundled", "--runtime", "fake"], "--runtime auto", 2),
        (["inspect", str(model), "--hmac-key-file", str(key)], "m.onnx.sig", 1),
    ]
    for argv, says, status in cases:
        assert main(argv) == status, argv
        err = capsys.readouterr().err
        assert err.startswith("edgert inspect: "), err
        assert "\nHint: " in err, err
        assert says in err, err
        assert "runtime='" not in err, err
        assert "signature=HEX" not in err, err


def test_a_reader_that_goes_away_stops_the_output_quietly(tmp_path: Path) -> None:
    # `edgert store list --json | head` printed "[Errno 32] Broken pipe" with a hint about
    # options (found by a new user's trial).
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import edgert.cli._store as store\n"
        "from edgert.cli import main\n"
        "store._list = lambda *a: print('{\"versions\": [' + '0, ' * 200000 + '0]}')\n"
        f"sys.exit(main(['store', '--root', {str(tmp_path)!r}, 'list', '--json']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.read(10)
    proc.stdout.close()  # like `head` exiting
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err
    assert err == b""


# --- A new user's trial: usage errors exited 1, named Python parameters, or said "unknown
# runtime 'fake'" for a runtime --help lists. Each is exit 2, the flag as typed, and a Hint.

def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run ``argv``; assert exit 2 (returned, or raised by argparse); the stderr lines."""
    try:
        status = main(argv)
    except SystemExit as info:
        status = int(info.code or 0)
    lines = capsys.readouterr().err.rstrip().splitlines()
    assert status == 2, lines
    assert lines[0].startswith(f"edgert {argv[0]}: "), lines
    assert lines[-1].startswith("Hint: "), lines
    text = "\n".join(lines)
    for python_name in ("trt_module=", "rate_hz", "duration_s", "workspace_bytes",
                        "optimization_level", "runtime='", "cuda_graph"):
        assert python_name not in text, text
    return lines


def test_runtime_fake_on_an_onnx_model_says_it_needs_a_plan(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.models import bundled_model_path

    onnx_path = str(bundled_model_path())
    for argv in (["bench", onnx_path, "--runtime", "fake", "--duration", "0.1",
                  "--no-environment"],
                 ["inspect", "bundled", "--runtime", "fake"],
                 ["inspect", "bundled", "--runtime", "full"]):
        lines = _usage_error(argv, capsys)
        assert "is an ONNX model, which runs on ONNX Runtime, not TensorRT" in lines[0], lines
        assert "unknown runtime" not in "\n".join(lines)
        assert "--runtime auto" in lines[-1]


def test_bench_bundled_on_the_fake_tensorrt_runs_its_plan(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` lists `--runtime fake`: on the bundled model it runs the fake's plan of it (the
    TensorRT code path without a GPU); it said "unknown runtime 'fake'" (new user's trial)."""
    from edgert.cli import main

    rc = main(["bench", "--runtime", "fake", "--duration", "0.1", "--warmup", "0.05",
               "--no-environment", "--no-rt", "--rate", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "a plan on the fake TensorRT module" in out


def test_inspect_malformed_digest_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _usage_error(["inspect", "bundled", "--sha256", "deadbeef"], capsys)
    assert lines[0].startswith("edgert inspect: --sha256 must be 64 hexadecimal characters")


@pytest.mark.parametrize(("flags", "says"), [
    (["--opt-level", "9"], "argument --opt-level/--builderOptimizationLevel: must be an int "
                           "from 0 to 5, not 9"),
    (["--workspace-mib", "-5"], "argument --workspace-mib: must be an int 1 or more, not -5"),
    (["--workspace-mib", "0"], "argument --workspace-mib: must be an int 1 or more, not 0"),
    (["--device", "-1"], "argument --device: must be an int 0 or more, not -1"),
    (["--exclude-lean-runtime"], "--exclude-lean-runtime applies with --version-compatible"),
    (["--strongly-typed", "--fp16"], "--fp16 contradicts --strongly-typed"),
    (["--timing-cache", "/nonexistent-dir/x.cache"], "--timing-cache: cannot write"),
])
def test_build_flag_values_are_usage_errors_in_the_flags_unit(
        flags: list[str], says: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.models import bundled_model_path

    argv = ["build", str(bundled_model_path()), "-o", str(tmp_path / "x.plan"), "--runtime",
            "fake", "--no-progress", *flags]
    lines = _usage_error(argv, capsys)
    assert lines[0].startswith(f"edgert build: {says}"), lines
    assert "5242880" not in "\n".join(lines)  # bytes: the user typed MiB
    assert not (tmp_path / "x.plan").exists()


def test_build_output_that_is_a_directory_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.models import bundled_model_path

    lines = _usage_error(["build", str(bundled_model_path()), "-o", str(tmp_path), "--runtime",
                          "fake", "--no-progress"], capsys)
    assert lines[0] == f"edgert build: -o: {tmp_path} is a directory"


def test_a_flag_this_machine_cannot_honour_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgert import cuda

    if cuda.is_available():
        pytest.skip("needs a machine without a CUDA device")
    # --device 3 gave 2 and --graph gave 1: both ask for a GPU that is not here.
    for argv in (["bench", "--graph", "--duration", "0.1", "--no-environment", "--no-rt"],
                 ["bench", "--device", "3", "--duration", "0.1", "--no-environment",
                  "--no-rt"]):
        lines = _usage_error(argv, capsys)
        assert argv[1] in "\n".join(lines), lines


def test_exit_status_names_a_not_supported_flag_only_when_typed() -> None:
    from edgert.cli._errors import exit_status
    from edgert.errors import InvalidArgumentError, NotSupportedError

    gpu = NotSupportedError("x")
    assert exit_status(gpu, "--graph needs a CUDA device", {"--graph", "--no-graph"}) == 2
    assert exit_status(gpu, "--graph needs a CUDA device", {"--rate"}) == 1
    assert exit_status(gpu, "no TensorRT runtime\nHint: --graph-ish", {"--graph"}) == 1
    assert exit_status(InvalidArgumentError("x"), "anything", ()) == 2
    assert exit_status(OSError("x"), "--graph", {"--graph"}) == 1


def test_reserve_sms_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _usage_error(["bench", "--load", "gemm", "--reserve-sms", "-2"], capsys)
    assert lines[0] == "edgert bench: argument --reserve-sms: must be an int 1 or more, not -2"


@pytest.mark.parametrize(("rate", "duration", "says"), [
    ("0.5", "1", "--duration 1 is shorter than one period at --rate 0.5 (one period is 2 s)"),
    ("0.7", "2", "--duration 2 is 1.4 periods at --rate 0.7"),
])
def test_a_duration_that_is_not_whole_periods_is_refused(
        rate: str, duration: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It ran one 2 s period and reported "for 1 s".
    lines = _usage_error(["bench", "--rate", rate, "--duration", duration, "--no-environment"],
                         capsys)
    assert lines[0].startswith(f"edgert bench: {says}"), lines
    assert "whole periods" in lines[-1]


def test_ordinary_rates_at_the_default_duration_are_accepted() -> None:
    """Found by review: 12.5, 7.5 and 2.5 Hz for the default 3 s were refused (37.5 periods
    run as 38, within 10 % of what was asked)."""
    from edgert.bench import BenchOptions

    for rate in (12.5, 7.5, 2.5, 333.0, 0.7):
        BenchOptions(rate_hz=rate, duration_s=3.0)


def test_whole_periods_are_accepted_and_the_library_says_it_too() -> None:
    from edgert.bench import BenchOptions
    from edgert.errors import InvalidArgumentError

    for rate, duration in ((0.5, 2.0), (1000, 0.2), (1000, 0.05), (7, 1.0), (333.3, 0.5)):
        BenchOptions(rate_hz=rate, duration_s=duration)
    BenchOptions(rate_hz=0, duration_s=0.01)  # back to back: no periods
    with pytest.raises(InvalidArgumentError, match=r"duration_s=1 is shorter than one period "
                                                   r"at rate_hz=0\.5"):
        BenchOptions(rate_hz=0.5, duration_s=1)
