"""The API reference (docs/api/) is generated from the docstrings and must match the code.

``tools/gen_api_docs.py --check`` is what CI relies on; the renderer and the model behind it are
unit-tested here on small samples, and the whole generator on a throwaway package.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"


@pytest.fixture(scope="module")
def tools() -> Iterator[tuple[ModuleType, ModuleType]]:
    """(the generator, the renderer), imported from tools/ as the script imports them."""
    sys.path.insert(0, str(TOOLS))
    try:
        import _apidoc_render
        import gen_api_docs
        yield gen_api_docs, _apidoc_render
    finally:
        sys.path.remove(str(TOOLS))


def test_committed_api_reference_is_current() -> None:
    proc = subprocess.run([sys.executable, str(TOOLS / "gen_api_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, (
        "docs/api is stale or a public class/function lacks a docstring; run "
        f"`python tools/gen_api_docs.py` and commit docs/api/\n{proc.stdout}{proc.stderr}")
    assert (ROOT / "docs" / "api" / "index.md").is_file()


class Opaque:
    """A default value whose repr has a memory address."""


GOOGLE = '''
    Load a thing from ``path``.

    Args:
        path: Where the thing is; see :class:`~pkg.mod.Thing`.
        retries (int): How often to try, across
            several lines.
        **kwargs: Passed on.

    Returns:
        The loaded :class:`Thing`.

    Raises:
        OSError, ValueError: The file is missing or malformed.
    '''


def test_google_sections_become_lists(tools: tuple[ModuleType, ModuleType]) -> None:
    _, render = tools

    def resolve(role: str, target: str) -> str | None:
        return "other.md#thing" if target == "pkg.mod.Thing" else None

    assert render.render_docstring(GOOGLE, resolve) == [
        "Load a thing from `path`.",
        "",
        "**Args:**",
        "",
        "- `path`: Where the thing is; see [`Thing`](other.md#thing).",
        "- `retries` (int): How often to try, across",
        "  several lines.",
        "- `**kwargs`: Passed on.",
        "",
        "**Returns:**",
        "",
        "- The loaded `Thing`.",
        "",
        "**Raises:**",
        "",
        "- `OSError`, `ValueError`: The file is missing or malformed.",
    ]


def test_literal_blocks_doctests_and_prose_after_a_section(
        tools: tuple[ModuleType, ModuleType]) -> None:
    _, render = tools
    doc = textwrap.dedent('''\
        Summary line.

        Use it like this::

            with thing() as t:
                t.run()

        Attributes:
            count: How many.

        Prose again, with <model>.sig and :meth:`run`.

        Example:
            >>> thing().run()   # doctest: +SKIP
            42
        ''')
    assert render.render_docstring(doc) == [
        "Summary line.",
        "",
        "Use it like this:",
        "",
        "```py",
        "with thing() as t:",
        "    t.run()",
        "```",
        "",
        "**Attributes:**",
        "",
        "- `count`: How many.",
        "",
        "Prose again, with &lt;model>.sig and `run()`.",
        "",
        "**Example:**",
        "",
        "```pycon",
        ">>> thing().run()",
        "42",
        "```",
    ]
    # Code is never fenced ```python: tests/test_docs.py would try to run it.
    assert not any(line.startswith("```python") for line in render.render_docstring(doc))


def test_field_notes_move_attributes_into_the_table(tools: tuple[ModuleType, ModuleType]) -> None:
    _, render = tools
    doc = textwrap.dedent('''\
        Options.

        Attributes:
            rate_hz: Loop rate,
                in hertz.
            mode: See the table below.
            other: Not a field.
        ''')
    notes = render.field_notes(doc, ["rate_hz", "mode"])
    assert notes == {"rate_hz": "Loop rate, in hertz.", "mode": "See the table below."}
    assert render.render_docstring(doc, skip_items=notes) == [
        "Options.", "", "**Attributes:**", "", "- `other`: Not a field."]


def test_signatures_are_deterministic_and_wrapped(tools: tuple[ModuleType, ModuleType]) -> None:
    import enum
    import inspect

    _, render = tools

    class Mode(enum.Enum):
        FAST = "fast"

    def short(a: int, /, b: str = "x", *, mode: Mode = Mode.FAST) -> None: ...

    def long(first_argument: int, second_argument: str | None = None, *args: int,
             marker: object = Opaque(), **kwargs: object) -> dict[str, int]: ...

    fmt = render.format_signature
    assert fmt("short", inspect.signature(short)) == \
        "short(a: int, /, b: str = 'x', *, mode: Mode = Mode.FAST) -> None"
    assert fmt("long", inspect.signature(long)) == textwrap.dedent(f"""\
        long(
            first_argument: int,
            second_argument: str | None = None,
            *args: int,
            marker: object = <{Opaque.__module__}.Opaque object>,
            **kwargs: object,
        ) -> dict[str, int]""")   # one parameter per line, and no memory address
    assert render.format_value(Path("/")) == "Path('/')"
    assert render.format_annotation("edgert.memory._pool.BufferPool | None") == \
        "BufferPool | None"


SAMPLE = '''
"""A sample package for the generator."""
from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Colour", "LIMIT", "Options", "Undocumented", "helper"]

#: The largest value accepted.
LIMIT = 10


class Colour(enum.Enum):
    """A colour."""

    RED = 1


@dataclass(frozen=True, kw_only=True)
class Options:
    """How to run.

    Attributes:
        rate_hz: Loop rate in hertz.
    """

    rate_hz: float = 100.0

    @property
    def period_s(self) -> float:
        return 1 / self.rate_hz


class Undocumented:
    def run(self) -> None:
        """Run it."""


def helper(x: int) -> int:
    """Double :data:`LIMIT`-bounded ``x``; see :class:`Options`."""
    return min(2 * x, LIMIT)
'''


def test_generator_on_a_sample_package(tools: tuple[ModuleType, ModuleType], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    gen, _ = tools
    (tmp_path / "apidoc_sample").mkdir()
    (tmp_path / "apidoc_sample" / "__init__.py").write_text(SAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    pages, missing, notes = gen.build(["apidoc_sample", "apidoc_absent"], package=None)

    assert notes == ["skipped apidoc_absent: not present"]
    assert sorted(pages) == ["apidoc_sample.md", "index.md"]
    page = pages["apidoc_sample.md"]
    assert "| `rate_hz` | `float` | `100.0` | Loop rate in hertz. |" in page
    assert "| `RED` | `1` |" in page
    assert "LIMIT = 10\n```\n\nThe largest value accepted." in page
    assert "see [`Options`](#options)" in page
    assert "[`helper`](apidoc_sample.md#helper) | function" in pages["index.md"]
    # A public class without a docstring is an error; an undocumented property a warning.
    found = {(m.name, m.fatal) for m in missing}
    assert found == {("apidoc_sample.Undocumented", True),
                     ("apidoc_sample.Options.period_s", False)}
    assert gen.build(["apidoc_sample"], package=None)[0] == pages   # deterministic


def test_check_mode_reports_a_stale_page(tools: tuple[ModuleType, ModuleType],
                                         tmp_path: Path) -> None:
    gen, _ = tools
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    (tmp_path / "new" / "a.md").write_text("one\ntwo\n")
    (tmp_path / "new" / "b.md").write_text("b\n")
    (tmp_path / "old" / "a.md").write_text("one\nTWO\n")
    (tmp_path / "old" / "gone.md").write_text("x\n")
    report = gen.compare(tmp_path / "new", tmp_path / "old")
    assert report[:3] == ["missing: b.md", "stale (no longer generated): gone.md",
                          "differs: a.md (2 changed lines)"]
    assert gen.compare(tmp_path / "new", tmp_path / "new") == []
