"""mypy --strict sees every public name of the lazy ``edgert`` package, and no others."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import edgert

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_sees_every_public_name_and_rejects_a_misspelt_one(tmp_path: Path) -> None:
    names = sorted(n for n in edgert.__all__ if n != "__version__")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import edgert\nimport edgert.realtime\n"
        + "".join(f"_{i} = edgert.{n}\n" for i, n in enumerate(names))
        + "_rt = edgert.realtime.LatencyStats\n"
        + "_bad = edgert.InferenceSesion\n")  # misspelt: must be an error, not Any
    # Run from the repository so mypy reuses the cache bin/test keeps for edgert itself.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(probe)],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, proc.stdout
    assert 'has no attribute "InferenceSesion"' in errors[0]
    assert f"probe.py:{len(names) + 4}:" in errors[0]
