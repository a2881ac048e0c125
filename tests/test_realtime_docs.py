"""docs/realtime.md's Python examples run as written, and realtime never loads CUDA."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.realtime import realtime_capabilities

REPO = Path(__file__).resolve().parents[1]


def test_realtime_and_stats_never_import_cuda() -> None:
    # No module of realtime/stats imports edgert.cuda, cuda-python or TensorRT ...
    sources = [*sorted((REPO / "edgert" / "realtime").glob("*.py")), REPO / "edgert" / "stats.py",
               REPO / "edgert" / "_latency.py", REPO / "edgert" / "testing" / "realtime.py"]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("edgert.cuda", "cuda", "tensorrt")), (path, name)
    # ... and importing them loads neither (edgert's own __init__ keeps CUDA lazy).
    code = ("import sys, edgert.realtime, edgert.stats, edgert.testing.realtime\n"
            "bad = sorted(m for m in sys.modules if m == 'cuda' or m.startswith(('cuda.', "
            "'tensorrt')))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not realtime_capabilities(priority=80).can_schedule_fifo,
                    reason="the examples use SCHED_FIFO, refused here (CI runs as root)")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the examples pin to CPU 1")
def test_doc_examples_run() -> None:
    text = (REPO / "docs" / "realtime.md").read_text()
    blocks = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(block, "docs/realtime.md", "exec"), namespace)
