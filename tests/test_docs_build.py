"""The checks docs/_ext/edgert_apidoc.py adds to the strict Sphinx build can fail.

The build itself runs in bin/test; these tests show that each check notices what it is for, so a
quiet build means a clean API rather than a check that stopped looking.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from types import ModuleType

import pytest

import edgert.engine
from edgert._owner import Owner
from edgert.bench import GpuLoad
from edgert.cuda import Stream
from edgert.stats import LatencyStats

pytest.importorskip("sphinx", reason="the docs extra (Sphinx) is not installed")

EXT = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "edgert_apidoc.py"


@pytest.fixture(scope="module")
def conf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgert_apidoc", EXT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_as_it_is_has_no_missing_docstring_and_one_page_per_name(
        conf: ModuleType) -> None:
    assert list(conf._missing_docstrings()) == []
    assert list(conf._misplaced_exports()) == []


def test_a_public_method_without_a_docstring_is_reported(
        conf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LatencyStats.to_json, "__doc__", None)
    missing = list(conf._missing_docstrings())
    # reported once, though edgert, edgert.stats and edgert.realtime all export LatencyStats
    assert [m for m in missing if m.endswith("LatencyStats.to_json")] == [
        "edgert.LatencyStats.to_json"]


def test_a_method_inherited_from_a_private_base_is_checked_on_each_subclass(
        conf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Owner.close, "__doc__", None)
    missing = set(conf._missing_docstrings())
    assert {"edgert.cuda.Stream.close", "edgert.cuda.Event.close"} <= missing


def test_an_exported_constant_without_a_comment_is_reported(
        conf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = dict(conf._CONSTANT_DOCS)
    del docs[("edgert.bench", "STAGES")]
    monkeypatch.setattr(conf, "_CONSTANT_DOCS", docs)
    assert any(m.startswith("edgert.bench.STAGES ") for m in conf._missing_docstrings())


def test_a_constant_re_exported_from_a_private_module_keeps_its_comment(
        conf: ModuleType) -> None:
    assert conf._CONSTANT_DOCS[("edgert.bench", "STAGES")][0].startswith(
        "The latency figures a report carries")
    # Imported under another name: found by identity.
    assert conf._CONSTANT_DOCS[("edgert.engine", "TENSORRT_LOGGER_NAME")][0].startswith(
        "The :mod:`logging` logger")


def test_a_name_documented_on_two_pages_is_reported(
        conf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conf, "_excluded", lambda module_name: set())
    problems = list(conf._misplaced_exports())
    assert any("LatencyStats is documented" in p and "edgert.realtime.LatencyStats" in p
               and "edgert.stats.LatencyStats" in p for p in problems)


def test_private_bases_are_replaced_by_their_public_ancestors(conf: ModuleType) -> None:
    bases: list[object] = [Owner]
    conf._hide_private_bases(None, "edgert.cuda.Stream", Stream, None, bases)
    assert bases == [object]
    bases = list(GpuLoad.__bases__)  # edgert.bench._load._Background, itself an Owner
    conf._hide_private_bases(None, "edgert.bench.GpuLoad", GpuLoad, None, bases)
    assert bases == [object]
    bases = [edgert.errors.EdgeRTError, MemoryError]
    conf._hide_private_bases(None, "x", object, None, bases)
    assert bases == [edgert.errors.EdgeRTError, MemoryError]
    # and their public members are documented on the subclass instead
    config = types.SimpleNamespace(autodoc_default_options={})
    conf._add_inherited_members(None, config)
    skipped = config.autodoc_default_options["inherited-members"].split(",")
    assert "Owner" not in skipped
    assert "EdgeRTError" in skipped


def test_a_constructor_that_takes_private_types_is_not_shown(conf: ModuleType) -> None:
    sig = "(*, backend: ~edgert.engine._tensorrt.TrtLoaded | ~edgert.engine._onnx.OnnxLoaded)"
    assert conf._signature(None, "class", "edgert.engine.Engine", edgert.engine.Engine, None,
                           sig, None) == ("", None)
    public = "(*, device: int = 0, priority: int | None = None)"
    assert conf._signature(None, "class", "edgert.cuda.Stream", Stream, None, public,
                           None) == (public, None)
    factory = "(*, fan: ~collections.abc.Mapping[str, str]=<factory>)"
    assert conf._signature(None, "class", "x", object, None, factory, None) == (
        "(*, fan: ~collections.abc.Mapping[str, str]=...)", None)
