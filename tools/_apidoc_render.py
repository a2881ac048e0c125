"""Markdown rendering for tools/gen_api_docs.py: Google docstrings, signatures and values.

Pure functions of their inputs (no imports of edgert), so the test suite can check them on small
samples. Google-style sections (Args, Returns, Raises, Attributes, ...) become bold-labelled
lists; reST inline markup (````code````, ``:class:`X```) becomes Markdown, with cross-references
turned into links by a resolver the caller supplies; ``::`` literal blocks and doctests become
fenced code (``py``/``pycon``, never ``python``, which the docs tests would execute).
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 88


SECTIONS = {
    "args": "Args", "arguments": "Args", "parameters": "Args", "params": "Args",
    "keyword args": "Keyword args", "keyword arguments": "Keyword args",
    "other parameters": "Other parameters", "returns": "Returns", "return": "Returns",
    "yields": "Yields", "yield": "Yields", "raises": "Raises", "exceptions": "Raises",
    "attributes": "Attributes", "example": "Example", "examples": "Examples",
    "note": "Note", "notes": "Note", "warning": "Warning", "warnings": "Warning",
    "see also": "See also", "todo": "Todo", "references": "References",
}
ITEM_SECTIONS = {"Args", "Keyword args", "Other parameters", "Raises", "Attributes"}
_SECTION_RE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_NAME = r"\*{0,2}[A-Za-z_][\w.]*"
_ITEM_RE = re.compile(rf"^({_NAME}(?:\s*,\s*{_NAME})*)\s*(?:\((.+?)\))?\s*:(?:\s+(.*))?$")
_ROLE_RE = re.compile(r":(?:py:)?(\w+):`([^`]+)`")
_DOCTEST_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
_TAG_RE = re.compile(r"<(?=[A-Za-z/!])")

#: Resolves a reST cross-reference target to a Markdown link target, or None.
Resolver = Callable[[str, str], "str | None"]


def _no_resolver(_role: str, _target: str) -> str | None:
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def render_inline(text: str, resolve: Resolver = _no_resolver) -> str:
    """Turn reST inline markup into Markdown: ``x`` to `x`, :role:`target` to a link or `code`."""
    out: list[str] = []
    # Split on single-backtick code spans that are already Markdown: leave them untouched.
    pos = 0
    for m in re.finditer(r"``.+?``|:(?:py:)?\w+:`[^`]+`|`[^`]+`", text):
        out.append(_TAG_RE.sub("&lt;", text[pos:m.start()]))
        token = m.group(0)
        if token.startswith("``"):
            inner = token[2:-2]
            out.append(f"`` {inner} ``" if "`" in inner else f"`{inner}`")
        elif token.startswith(":"):
            role_m = _ROLE_RE.match(token)
            assert role_m is not None
            out.append(_render_role(role_m.group(1), role_m.group(2), resolve))
        else:
            out.append(token)
        pos = m.end()
    out.append(_TAG_RE.sub("&lt;", text[pos:]))
    return "".join(out)


def _render_role(role: str, content: str, resolve: Resolver) -> str:
    explicit = re.match(r"^(.*?)\s*<([^>]+)>$", content)
    if explicit:
        label, target = explicit.group(1), explicit.group(2)
    else:
        target = content
        label = target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target
        if role in ("func", "meth") and not label.endswith(")"):
            label += "()"
    target = target.lstrip("~.")
    link = resolve(role, target)
    code = f"`{label}`"
    return f"[{code}]({link})" if link else code


def _fence(lines: list[str], lang: str) -> list[str]:
    body = textwrap.dedent("\n".join(lines)).strip("\n").splitlines()
    body = [_DOCTEST_DIRECTIVE.sub("", ln) if ln.lstrip().startswith((">>>", "...")) else ln
            for ln in body]
    return ["", f"```{lang}", *body, "```", ""]


def render_prose(text: str, resolve: Resolver = _no_resolver) -> list[str]:
    """Render free docstring text: paragraphs, lists, ``::`` literal blocks and doctests."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out.extend(_fence(block, "pycon"))
            continue
        if stripped.endswith("::"):
            lead = stripped[:-2].rstrip()
            if lead:
                out.append(line[: _indent(line)] + render_inline(lead + ":", resolve))
            base = _indent(line)
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                block.append(lines[i])
                i += 1
            out.extend(_fence(block, "py"))
            continue
        out.append(render_inline(line, resolve) if stripped else "")
        i += 1
    return squeeze(out)


def squeeze(lines: list[str]) -> list[str]:
    """Drop leading/trailing blank lines and collapse runs of blanks outside code fences."""
    out: list[str] = []
    in_fence = False
    for ln in lines:
        if ln.startswith("```"):
            in_fence = not in_fence
        if not in_fence and not ln.strip() and (not out or not out[-1].strip()):
            continue
        out.append(ln.rstrip() if not in_fence else ln)
    while out and not out[-1].strip():
        out.pop()
    return out


def split_sections(doc: str) -> list[tuple[str | None, str]]:
    """Split a cleaned docstring into (section title or None for prose, dedented body)."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in doc.splitlines():
        title, body = parts[-1]
        m = _SECTION_RE.match(line)
        if m and m.group(1).strip().lower() in SECTIONS:
            parts.append((SECTIONS[m.group(1).strip().lower()], []))
        elif title is not None and line.strip() and _indent(line) == 0:
            parts.append((None, [line]))  # back to prose after a section's indented body
        else:
            body.append(line)
    return [(t, textwrap.dedent("\n".join(b)).strip("\n")) for t, b in parts
            if "\n".join(b).strip()]


def _items(body: str) -> list[list[str]]:
    items: list[list[str]] = []
    for line in body.splitlines():
        if line.strip() and _indent(line) == 0:
            items.append([line])
        elif items:
            items[-1].append(line)
    return items


def _render_item(lines: list[str], resolve: Resolver) -> list[str]:
    first, rest = lines[0], textwrap.dedent("\n".join(lines[1:])).strip("\n")
    m = _ITEM_RE.match(first)
    if m:
        names = ", ".join(f"`{n.strip()}`" for n in m.group(1).split(","))
        kind = f" ({render_inline(m.group(2), resolve)})" if m.group(2) else ""
        desc = (m.group(3) or "").strip()
        head = f"- {names}{kind}" + (f": {render_inline(desc, resolve)}" if desc else "")
    else:
        head = f"- {render_inline(first.strip(), resolve)}"
    body = render_prose(rest, resolve) if rest else []
    out = [head]
    for ln in body:
        out.append(f"  {ln}" if ln else "")
    return out


def _item_names(first_line: str) -> list[str]:
    m = _ITEM_RE.match(first_line)
    return [n.strip().lstrip("*") for n in m.group(1).split(",")] if m else []


def field_notes(doc: str | None, names: Iterable[str],
                resolve: Resolver = _no_resolver) -> dict[str, str]:
    """One-line descriptions of ``names`` from the Attributes/Args sections, for a table.

    Only items that fit in a table cell (one paragraph, no code block) are returned; the others
    stay in the rendered docstring.
    """
    wanted, notes = set(names), dict[str, str]()
    for title, body in split_sections(inspect.cleandoc(doc or "")):
        if title not in ("Attributes", "Args"):
            continue
        for item in _items(body):
            item_names = _item_names(item[0])
            m = _ITEM_RE.match(item[0])
            if len(item_names) != 1 or item_names[0] not in wanted or m is None \
                    or any(not ln.strip() for ln in item) or "::" in "".join(item):
                continue
            text = " ".join([(m.group(3) or "").strip(), *(ln.strip() for ln in item[1:])])
            notes.setdefault(item_names[0], render_inline(text.strip(), resolve))
    return notes


def render_docstring(doc: str | None, resolve: Resolver = _no_resolver, *,
                     skip_items: Iterable[str] = ()) -> list[str]:
    """Render a Google-style docstring as Markdown lines (sections as bold-labelled lists).

    ``skip_items`` leaves out Attributes/Args items shown elsewhere (a data class's field table).
    """
    if not doc:
        return []
    skip = set(skip_items)
    out: list[str] = []
    for title, body in split_sections(inspect.cleandoc(doc)):
        if title is None:
            out += ["", *render_prose(body, resolve)]
        elif title in ITEM_SECTIONS:
            items = [it for it in _items(body) if not (
                title in ("Attributes", "Args") and len(_item_names(it[0])) == 1
                and _item_names(it[0])[0] in skip)]
            if items:
                out += ["", f"**{title}:**", ""]
            for item in items:
                out += _render_item(item, resolve)
        elif title in ("Returns", "Yields"):
            text = render_prose(body, resolve)
            out += ["", f"**{title}:**", "", f"- {text[0]}" if text else "-"]
            out += [f"  {ln}" if ln else "" for ln in text[1:]]
        elif title in ("Example", "Examples"):
            code = ">>>" not in body and "::" not in body
            out += ["", f"**{title}:**"]
            out += _fence(body.splitlines(), "py") if code else ["", *render_prose(body, resolve)]
        else:
            out += ["", f"**{title}:**", "", *render_prose(body, resolve)]
    return squeeze(out)


def summary_line(doc: str | None) -> str:
    """The first sentence-line of a docstring, for tables."""
    if not doc:
        return ""
    first = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(first.split()).rstrip(":")


# ---------------------------------------------------------------------------------------------
# Formatting signatures and values
# ---------------------------------------------------------------------------------------------

def _sanitize(text: str) -> str:
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x...", text)
    for path, name in ((str(ROOT), "<repo>"), (sys.prefix, "<prefix>"), (str(Path.home()), "~")):
        text = text.replace(path, name)
    return text


def format_annotation(ann: Any) -> str:
    if isinstance(ann, str):
        text = ann
    elif isinstance(ann, type):
        text = ann.__qualname__
    else:
        text = inspect.formatannotation(ann)
    text = re.sub(r"\b(?:typing|typing_extensions|collections\.abc)\.", "", text)
    text = re.sub(r"\bedgert(?:\.\w+)*\.(?=[A-Z])", "", text)
    return " ".join(_sanitize(text).split())


def format_value(value: Any, limit: int = 80) -> str:
    if isinstance(value, enum.Enum):
        text = f"{type(value).__name__}.{value.name}"
    elif isinstance(value, type):
        text = value.__qualname__
    elif isinstance(value, Path):
        text = f"Path({str(value)!r})"
    elif inspect.isroutine(value):
        text = getattr(value, "__qualname__", getattr(value, "__name__", "<function>"))
    else:
        text = _sanitize(repr(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_signature(name: str, sig: inspect.Signature, *, drop_first: bool = False,
                     prefix: str = "") -> str:
    """``name(params) -> ret``, one parameter per line when it would not fit on one."""
    params = list(sig.parameters.values())
    if drop_first and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    parts: list[str] = []
    star = False
    for idx, p in enumerate(params):
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = p.name
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            text, star = f"*{p.name}", True
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{p.name}"
        annotated = p.annotation is not inspect.Parameter.empty
        if annotated:
            text += f": {format_annotation(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            text += (" = " if annotated else "=") + format_value(p.default)
        parts.append(text)
        nxt = params[idx + 1] if idx + 1 < len(params) else None
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and (
                nxt is None or nxt.kind is not inspect.Parameter.POSITIONAL_ONLY):
            parts.append("/")
    ret = ""
    if sig.return_annotation is not inspect.Signature.empty:
        ret = f" -> {format_annotation(sig.return_annotation)}"
    one = f"{prefix}{name}({', '.join(parts)}){ret}"
    if len(one) <= WIDTH or not parts:
        return one
    inner = "".join(f"    {p},\n" for p in parts)
    return f"{prefix}{name}(\n{inner}){ret}"


def signature_of(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


