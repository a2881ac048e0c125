"""What importing edgert costs, checked in fresh interpreters (DESIGN.md, performance targets).

* ``import edgert`` loads no subpackage (PEP 562 lazy attributes) and stays within numpy's import
  time + 30 ms;
* ``import edgert.realtime`` / ``import edgert.power`` load neither numpy, CUDA, nor sessions,
  testing or bench, so a control process can use them alone;
* production code never imports ``edgert.testing``;
* the lazy table in ``edgert/__init__.py``, its ``TYPE_CHECKING`` imports and ``__all__`` agree.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgert

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edgert"

#: Modules a control process that imports only realtime or power must not load.
HEAVY = ("numpy", "cuda", "edgert.session", "edgert.testing", "edgert.bench", "edgert.cuda",
         "edgert.memory", "edgert.engine", "edgert.stats", "edgert.doctor")


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def loaded_after(statement: str) -> set[str]:
    """The modules in ``sys.modules`` after ``statement`` in a fresh interpreter."""
    before = json.loads(run_python("import json, sys; print(json.dumps(sorted(sys.modules)))"))
    after = json.loads(run_python(
        f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"))
    return set(after) - set(before)


def loaded_heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_import_edgert_loads_no_subpackage() -> None:
    mods = loaded_after("import edgert")
    assert sorted(m for m in mods if m.startswith("edgert")) == ["edgert", "edgert._version"]
    assert loaded_heavy(mods) == []


@pytest.mark.parametrize("module", ["edgert.realtime", "edgert.power"])
def test_realtime_and_power_import_without_numpy_cuda_or_sessions(module: str) -> None:
    mods = loaded_after(f"import {module}")
    assert loaded_heavy(mods) == []


def test_realtime_latency_stats_is_still_reachable() -> None:
    # LatencyStats needs numpy, so edgert.realtime resolves it on first access.
    out = run_python("import sys, edgert.realtime as r\n"
                     "before = 'numpy' in sys.modules\n"
                     "from edgert.stats import LatencyStats\n"
                     "print(before, r.LatencyStats is LatencyStats, 'LatencyStats' in dir(r))")
    assert out.split() == ["False", "True", "True"]


def test_import_time_within_numpy_plus_30_ms() -> None:
    """Fresh interpreters, interleaved, the fastest of several runs each (a loaded 2-core CI VM
    varies by tens of ms between runs; the minimum is what the import itself costs)."""
    code = ("import time; t = time.perf_counter_ns(); import {}; "
            "print(time.perf_counter_ns() - t)")
    times: dict[str, list[int]] = {"numpy": [], "edgert": []}
    for _ in range(7):
        for name, runs in times.items():
            runs.append(int(run_python(code.format(name))))
    numpy_ms, edgert_ms = min(times["numpy"]) / 1e6, min(times["edgert"]) / 1e6
    assert edgert_ms <= numpy_ms + 30, (
        f"import edgert took {edgert_ms:.1f} ms, numpy {numpy_ms:.1f} ms")


def test_lazy_names_resolve_to_their_modules() -> None:
    import importlib

    for name in edgert.__all__:
        value = getattr(edgert, name)
        if name in edgert._SUBPACKAGES:
            assert value is importlib.import_module(f"edgert.{name}")
        elif name != "__version__":
            assert value is getattr(importlib.import_module(edgert._LAZY[name]), name), name
    assert set(edgert.__all__) <= set(dir(edgert))
    # In a fresh interpreter nothing public-looking besides the API: no typing helpers or
    # __future__ features (importing a submodule later binds its name too, as always).
    extra = run_python("import edgert\n"
                       "print(sorted({n for n in dir(edgert) if not n.startswith('_')}"
                       " - set(edgert.__all__)))")
    assert extra.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = edgert.NoSuchName  # type: ignore[attr-defined]


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (under any module alias)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _type_checking_imports() -> dict[str, set[str]]:
    """``module -> names`` of the imports under ``if TYPE_CHECKING:`` in edgert/__init__.py."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    [block] = [n for n in tree.body if isinstance(n, ast.If) and _is_type_checking(n.test)]
    out: dict[str, set[str]] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        assert node.module is not None
        out.setdefault(node.module, set()).update(a.name for a in node.names)
    return out


def test_lazy_table_type_checking_block_and_all_agree() -> None:
    seen = _type_checking_imports()
    assert seen.pop("edgert") == set(edgert._SUBPACKAGES)
    assert seen == {mod: set(names) for mod, names in edgert._EXPORTS.items()}
    assert len(edgert._LAZY) == sum(len(n) for n in edgert._EXPORTS.values()), "a name twice"
    assert sorted(edgert.__all__) == sorted(
        {"__version__", *edgert._SUBPACKAGES, *edgert._LAZY})


def test_no_production_module_loads_edgert_testing() -> None:
    public = [p.name for p in PACKAGE.iterdir()
              if (p / "__init__.py").exists() and not p.name.startswith("_")
              and p.name != "testing"]
    mods = loaded_after("import importlib\n"
                        f"for name in {sorted(public)!r}:\n"
                        "    importlib.import_module('edgert.' + name)\n"
                        "from edgert.cli import build_parser\nbuild_parser()")
    assert {"edgert.kernels", "edgert.cli", "edgert.bench"} <= mods
    assert [m for m in mods if m.startswith("edgert.testing")] == []


#: The only production modules that may name edgert.testing: the explicit `--runtime fake`
#: option of `edgert bench` / `edgert inspect`, which loads the fake TensorRT module on request.
# The explicit ``--runtime fake`` option loads the fake through importlib in one module only.
FAKE_RUNTIME_LOADER = "edgert/_fake_runtime.py"


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def test_production_source_imports_edgert_testing_only_for_the_fake_runtime() -> None:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("edgert/testing/") or rel == "edgert/pytest_plugin.py":
            continue
        for node in _runtime_nodes(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "edgert.testing" or n.startswith("edgert.testing.") for n in names):
                found.add(rel)
    assert found == set()
    dynamic = {path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py")
               if not path.relative_to(REPO).as_posix().startswith("edgert/testing/")
               and 'import_module("edgert.testing' in path.read_text()}
    assert dynamic == {FAKE_RUNTIME_LOADER}
