"""docs/realtime.md's Python examples run as written, and realtime never loads CUDA."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_realtime_and_stats_do_not_import_cuda() -> None:
    code = ("import sys, edgert.realtime, edgert.stats, edgert.testing.realtime\n"
            "bad = sorted(m for m in sys.modules if m == 'cuda' or m.startswith(('cuda.', "
            "'edgert.cuda', 'tensorrt')))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the examples use SCHED_FIFO (CI runs as root)")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the examples pin to CPU 1")
def test_doc_examples_run() -> None:
    text = (REPO / "docs" / "realtime.md").read_text()
    blocks = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(block, "docs/realtime.md", "exec"), namespace)
