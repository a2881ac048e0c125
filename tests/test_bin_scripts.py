"""bin/edgert and bin/test share one virtual environment: running them in turn installs once."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{log}"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="the scripts are bash")
def test_alternating_scripts_install_the_environment_once(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "bin", clone / "bin")
    shutil.copytree(REPO / "tools", clone / "tools")  # bin/test runs tools/build_docs.sh
    shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
    log = tmp_path / "calls.log"
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    # Stand-ins for what the environment holds: each records how it was called.
    for tool in ("python", "edgert", "ruff", "mypy"):
        (venv_bin / tool).write_text(_FAKE_TOOL.format(log=log))
        (venv_bin / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "EDGERT_EXTRAS"}
    for script in ("edgert", "test", "edgert", "test"):
        proc = subprocess.run([str(clone / "bin" / script)], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
    installs = [line for line in log.read_text().splitlines()
                if line.startswith("python -m pip install") and " -e " in line]
    assert len(installs) == 1, log.read_text()
    [extras] = [arg for arg in installs[0].split() if arg.endswith("]")]
    assert set(extras.split("[", 1)[1].rstrip("]").split(",")) >= {"test", "onnx", "plot"}
    calls = log.read_text().splitlines()
    assert calls.count("edgert bench") == 2  # bin/edgert with no arguments runs the benchmark
    assert calls.count("python -m pytest") == 2
    assert sum(line.startswith("python -m sphinx -E -W") for line in calls) == 2  # strict docs
    # A changed dependency list still re-installs by itself.
    with (clone / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    subprocess.run([str(clone / "bin" / "edgert")], env=env, timeout=60, check=True,
                   capture_output=True)
    assert sum(" -e " in line for line in log.read_text().splitlines()) == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="the scripts are bash")
def test_a_failed_install_shows_its_output_and_is_tried_again(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "bin", clone / "bin")
    shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(
        '#!/usr/bin/env bash\n'
        'if [[ "$*" == *" -e "* ]]; then echo "resolver said no"; exit 1; fi\n')
    (venv_bin / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "EDGERT_EXTRAS"}
    proc = subprocess.run([str(clone / "bin" / "edgert")], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert "resolver said no" in proc.stderr
    assert not (clone / ".venv" / ".edgert-stamp").exists()
