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
    assert main(["build", str(path), "-o", str(tmp_path / "x.plan"), "--runtime", "fake",
                 "--no-progress"]) == 1
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
    cases = [
        (["inspect", "bundled", "--hmac-key-file", str(tmp_path / "missing")], "key file"),
        (["inspect", "bundled", "--runtime", "fake"], "--runtime auto"),
        (["inspect", str(model), "--hmac-key-file", str(key)], "m.onnx.sig"),
    ]
    for argv, says in cases:
        assert main(argv) == 1
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
