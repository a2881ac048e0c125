"""SubprocessRunner with real processes, and how run_command normalises any runner."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from edgert.errors import (
    CommandError,
    CommandTimeoutError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
)
from edgert.power import CommandResult, SubprocessRunner
from edgert.power._command import run_command


def test_runs_and_captures() -> None:
    res = SubprocessRunner()(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert res.output == "out\nerr\n"
    assert res.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")


def test_stdin_is_exactly_what_was_given_then_eof() -> None:
    prompt = ["sh", "-c", 'printf "reboot? "; read answer; echo "[$answer]"']
    assert SubprocessRunner()(prompt, timeout=10).stdout == "reboot? []\n"
    assert SubprocessRunner()(prompt, stdin="YES\n", timeout=10).stdout == "reboot? [YES]\n"


def test_output_is_parsed_in_the_c_locale() -> None:
    res = SubprocessRunner(env={"LC_ALL": "de_DE.UTF-8", "PATH": os.environ["PATH"]})(
        ["sh", "-c", "echo $LC_ALL"])
    assert res.stdout == "C\n"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; echo started >&2; wait"
    with pytest.raises(CommandTimeoutError, match=r"did not finish within 0\.5 s") as info:
        SubprocessRunner()(["sh", "-c", script], timeout=0.5)
    assert info.value.argv[0] == "sh"
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, CommandError)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(child), "the grandchild survived the timeout"


def test_default_timeout_applies() -> None:
    with pytest.raises(CommandTimeoutError):
        SubprocessRunner(default_timeout_s=0.3)(["sleep", "30"])


def test_missing_and_unexecutable_programs(tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="no such program") as info:
        SubprocessRunner()(["/usr/sbin/nvpmodel-does-not-exist", "-q"])
    assert info.value.hint is not None
    assert "JetPack" in info.value.hint
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(PermissionDeniedError):
        SubprocessRunner()([str(script)])
    with pytest.raises(InvalidArgumentError):
        SubprocessRunner()([])
    with pytest.raises(InvalidArgumentError):
        SubprocessRunner(default_timeout_s=0)


def test_run_command_normalises_foreign_runners() -> None:
    def raw(argv, *, stdin=None, timeout=None):
        return subprocess.CompletedProcess(argv, 0, stdout=b"bytes\n", stderr=None)

    res = run_command(raw, ["x"])
    assert isinstance(res, CommandResult)
    assert (res.stdout, res.stderr) == ("bytes\n", "")

    def raising(exc: BaseException):
        def runner(argv, *, stdin=None, timeout=None):
            raise exc
        return runner

    with pytest.raises(NotSupportedError):
        run_command(raising(FileNotFoundError(2, "nope")), ["x"])
    with pytest.raises(PermissionDeniedError):
        run_command(raising(PermissionError(13, "nope")), ["x"])
    with pytest.raises(CommandTimeoutError):
        run_command(raising(subprocess.TimeoutExpired(["x"], 1.0)), ["x"], timeout=1.0)
    with pytest.raises(CommandError, match="cannot run x"):
        run_command(raising(OSError(5, "EIO")), ["x"])
