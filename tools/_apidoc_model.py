"""The model behind tools/gen_api_docs.py: what each public module exports, and from where.

Imports the modules, classifies every name of each ``__all__`` (class, data class, enum,
exception, protocol, function, type alias, constant, module), decides which module documents an
object that several export (its *home*), lists a class's public members, and reads constants'
values and ``#:`` comments from the source.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re
import textwrap
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _module_ast(modname: str) -> tuple[ast.Module, str, Path] | None:
    try:
        spec = importlib.util.find_spec(modname)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    source = path.read_text(encoding="utf-8")
    return ast.parse(source), source, path


def relpath(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


@dataclasses.dataclass(frozen=True)
class SourceConst:
    """Where a module-level name is assigned, with its source text and ``#:`` comment."""

    value_src: str | None
    annotation: str | None
    doc: str | None
    location: str


def _assigned_name(node: ast.stmt) -> str | None:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    names = [t.id for t in targets if isinstance(t, ast.Name)]
    return names[0] if names else None


def _assignment_doc(body: list[ast.stmt], idx: int, lines: list[str]) -> str | None:
    """The string literal after an assignment, else the ``#:`` comment lines above it."""
    nxt = body[idx + 1] if idx + 1 < len(body) else None
    if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)):
        return inspect.cleandoc(nxt.value.value)
    comments: list[str] = []
    ln = body[idx].lineno - 2
    while ln >= 0 and lines[ln].lstrip().startswith("#:"):
        comments.insert(0, lines[ln].lstrip()[2:].strip())
        ln -= 1
    return " ".join(comments) or None


def find_constant(modname: str, name: str, _depth: int = 0) -> SourceConst | None:
    """Follow ``from x import name`` chains to the assignment of ``name``."""
    parsed = _module_ast(modname)
    if parsed is None or _depth > 8:
        return None
    tree, source, path = parsed
    lines = source.splitlines()
    for idx, node in enumerate(tree.body):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _assigned_name(node) == name:
            value = ast.get_source_segment(source, node.value) if node.value else None
            ann = (ast.get_source_segment(source, node.annotation)
                   if isinstance(node, ast.AnnAssign) else None)
            return SourceConst(value, ann, _assignment_doc(tree.body, idx, lines),
                               f"{relpath(path)}:{node.lineno}")
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return find_constant(_absolute(modname, path, node), alias.name, _depth + 1)
    return None


def attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings of class-level assignments (enum members, fields): the string literal after
    the assignment, or ``#:`` comments above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
        return {}
    body, lines = tree.body[0].body, source.splitlines()
    docs = {}
    for idx, node in enumerate(body):
        name = _assigned_name(node)
        doc = _assignment_doc(body, idx, lines) if name else None
        if name and doc:
            docs[name] = doc
    return docs


def import_source(modname: str, name: str) -> str | None:
    """The module ``modname`` imports ``name`` from (``from x import name``), if it does."""
    parsed = _module_ast(modname)
    if parsed is None:
        return None
    tree, _, path = parsed
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _absolute(modname, path, node)
    return None


def _absolute(modname: str, path: Path, node: ast.ImportFrom) -> str:
    base = node.module or ""
    if not node.level:
        return base
    pkg = modname if path.name == "__init__.py" else modname.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        pkg = pkg.rsplit(".", 1)[0]
    return f"{pkg}.{base}" if base else pkg


def definition_site(obj: Any) -> str:
    """``path:line`` of a class or function, relative to the repository."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        path = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
    except (TypeError, OSError):
        return "?"
    return f"{relpath(Path(path))}:{line}" if path else "?"


# ---------------------------------------------------------------------------------------------
# The model: what each module exports
# ---------------------------------------------------------------------------------------------

KINDS = ("module", "class", "dataclass", "enum", "exception", "protocol", "function", "alias",
         "constant")
KIND_TITLES = {
    "class": "Classes", "dataclass": "Data classes", "enum": "Enums", "exception": "Exceptions",
    "protocol": "Protocols", "function": "Functions", "alias": "Type aliases",
    "constant": "Constants", "module": "Modules",
}
_PLAIN_DATA = (int, float, complex, str, bytes, bool, tuple, list, dict, set, frozenset,
               type(None))


def kind_of(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        if issubclass(obj, BaseException):
            return "exception"
        if issubclass(obj, enum.Enum):
            return "enum"
        if dataclasses.is_dataclass(obj) or (issubclass(obj, tuple) and hasattr(obj, "_fields")):
            return "dataclass"
        if getattr(obj, "_is_protocol", False):
            return "protocol"
        return "class"
    if inspect.isroutine(obj) or isinstance(obj, functools.partial):
        return "function"
    if isinstance(obj, (*_PLAIN_DATA, enum.Enum)):
        return "constant"
    return "alias" if type(obj).__module__ in ("typing", "types", "typing_extensions") \
        else "constant"


def own_doc(obj: Any) -> str | None:
    """The object's own docstring; None for the ones Python makes up (dataclass signatures)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if doc and re.fullmatch(rf"{re.escape(obj.__name__)}\(.*\)", doc.strip(), re.DOTALL):
            return None
        return doc if isinstance(doc, str) and doc.strip() else None
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


@dataclasses.dataclass
class Entry:
    """One exported name of one module."""

    module: str
    name: str
    obj: Any
    kind: str
    home: str = ""

    @property
    def anchor(self) -> str:
        return slug(self.name)


def slug(text: str) -> str:
    """GitHub's heading anchor for ``text``."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def page_name(module: str) -> str:
    return f"{module}.md"


@dataclasses.dataclass
class Missing:
    """A public object without a docstring, with where it is defined."""

    name: str
    kind: str
    site: str
    fatal: bool


def load_modules(names: Iterable[str]) -> tuple[list[Any], list[str]]:
    """Import each module; a module that does not exist is skipped with a note."""
    mods, notes = [], []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (name == err.name or name.startswith(err.name + ".")):
                notes.append(f"skipped {name}: not present")
                continue
            raise
        if getattr(mod, "__file__", None) is None:
            notes.append(f"skipped {name}: a directory without __init__.py (not a package yet)")
            continue
        mods.append(mod)
    return mods, notes


def discover_modules(fixed: Iterable[str], package: str) -> list[str]:
    """``fixed``, then ``package`` (if it has an ``__all__``) and its public submodules."""
    names = list(fixed)
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError:
        return names
    if getattr(pkg, "__all__", None):
        names.append(package)
    names += sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
                    if not m.name.startswith("_"))
    return names


def collect(modules: list[Any]) -> dict[str, list[Entry]]:
    """Entries per module, each with its home module (where it is documented in full)."""
    by_module: dict[str, list[Entry]] = {}
    exporters: dict[int, list[str]] = {}
    for mod in modules:
        names = getattr(mod, "__all__", None)
        if names is None:
            raise SystemExit(f"error: {mod.__name__} has no __all__, so its public API is "
                             "undefined; add one (see DESIGN.md)")
        entries = []
        for name in sorted(set(names), key=lambda n: (n.lower(), n)):
            obj = getattr(mod, name)
            entry = Entry(mod.__name__, name, obj, kind_of(obj))
            entries.append(entry)
            if entry.kind == "module":
                entry.home = obj.__name__
            elif entry.kind not in ("constant", "alias"):
                exporters.setdefault(id(obj), []).append(mod.__name__)
        by_module[mod.__name__] = entries
    for entries in by_module.values():
        for e in entries:
            if e.kind in ("constant", "alias"):
                e.home = e.module
            elif e.kind != "module":
                e.home = _home(e, exporters[id(e.obj)])
    return by_module


def _home(entry: Entry, candidates: list[str]) -> str:
    defined_in = getattr(entry.obj, "__module__", "") or ""

    def score(mod: str) -> tuple[int, int, str]:
        prefix = defined_in == mod or defined_in.startswith(mod + ".")
        common = 0
        for a, b in zip(mod.split("."), defined_in.split("."), strict=False):
            if a != b:
                break
            common += 1
        return (0 if prefix else 1, -common if not prefix else -len(mod), mod)

    # A package that re-exports its public submodules' names (edgert.testing) is not their home.
    deepest = [c for c in candidates if not any(o.startswith(c + ".") for o in candidates)]
    # Nor is a module that imports the name from another candidate (realtime from stats).
    direct = [c for c in deepest if import_source(c, entry.name) not in deepest]
    return min(direct or deepest, key=score)


def same_package(klass: type, cls: type) -> bool:
    """Whether ``klass`` comes from the same top-level package as ``cls`` (not the stdlib's
    object, Enum, Exception or Thread, whose members are not this API's)."""
    top = (cls.__module__ or "").split(".")[0]
    return (klass.__module__ or "").split(".")[0] == top


def class_members(cls: type) -> list[tuple[str, str, Any, type]]:
    """(name, kind, value, defining class) for the public members of ``cls`` and its edgert
    bases (not object's, Enum's or Exception's); dataclass/namedtuple fields are left out."""
    skip = set(getattr(cls, "__members__", {}))
    if dataclasses.is_dataclass(cls):
        skip |= {f.name for f in dataclasses.fields(cls)}
    skip |= set(getattr(cls, "_fields", ()))
    seen: dict[str, tuple[str, Any, type]] = {}
    for klass in cls.__mro__:
        if not same_package(klass, cls):
            continue
        for name, value in vars(klass).items():
            if name in seen or name in skip or (name.startswith("_") and name != "__call__"):
                continue
            if isinstance(value, (property, functools.cached_property)):
                seen[name] = ("property", value, klass)
            elif isinstance(value, staticmethod):
                seen[name] = ("staticmethod", value.__func__, klass)
            elif isinstance(value, classmethod):
                seen[name] = ("classmethod", value.__func__, klass)
            elif inspect.isfunction(value):
                seen[name] = ("method", value, klass)
            elif isinstance(value, type) or inspect.isdatadescriptor(value) \
                    or inspect.ismethoddescriptor(value):
                continue
            else:
                seen[name] = ("attribute", value, klass)
    return [(n, *seen[n]) for n in sorted(seen, key=lambda n: (n.lower(), n))]


def member_doc(cls: type, name: str, kind: str, value: Any) -> str | None:
    if kind == "property":
        fget = value.func if isinstance(value, functools.cached_property) else value.fget
        doc = own_doc(fget) or own_doc(value)
        if doc:
            return doc
    elif kind in ("method", "staticmethod", "classmethod"):
        doc = own_doc(value)
        if doc:
            return doc
    else:
        return None
    for base in cls.__mro__[1:]:  # an override inherits its base's contract
        inherited = base.__dict__.get(name)
        if inherited is not None and not isinstance(inherited, (int, str)):
            target = getattr(inherited, "fget", None) or getattr(inherited, "__func__", inherited)
            doc = own_doc(target)
            if doc:
                return doc
    return None


