"""Run the ```python blocks of README.md and docs/*.md, so the guides cannot rot.

Blocks that need a GPU, a Jetson or root-only hardware are fenced ```py and not run here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in _BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((path.relative_to(ROOT).as_posix(), line, m.group(1)))
    return out


@pytest.mark.parametrize(("doc", "line", "code"), _blocks(),
                         ids=[f"{d}:{n}" for d, n, _ in _blocks()])
def test_doc_example_runs(doc: str, line: int, code: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, object] = {"__name__": f"doc_{Path(doc).stem}"}
    exec(compile(code, f"{doc}:{line}", "exec"), env)
    assert os.getcwd() == str(tmp_path)
