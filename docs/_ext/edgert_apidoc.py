"""edgert's additions to autodoc: what the API pages show, and the checks the strict build runs.

A local Sphinx extension (docs/conf.py loads it). What it shows:

* Members a class inherits from a private base (``close``/``closed`` from ``edgert._owner.Owner``)
  are documented on the class; the private base is replaced by its public ancestors in "Bases".
* A class whose constructor takes a private type (``Engine``, ``Lease``) is made by the library and
  shows no constructor; ``<factory>`` defaults show as ``...``.
* Constants a package re-exports from a private module keep their ``#:`` comments.
* ``edgert.Name`` references resolve to where ``Name`` is documented; a type alias referenced as a
  class resolves to its data entry.

What it checks (warnings, so ``sphinx-build -W`` fails): every exported class, function, method,
property and constant has a docstring or ``#:`` comment (ruff's D1 rules cannot see definitions in
private modules), and every exported class and function is documented on exactly one page.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import edgert

API_DIR = Path(__file__).resolve().parents[1] / "api"

# The modules the API pages document: the ``automodule`` lines of docs/api/*.md, one source.
API_MODULES = sorted(
    m for page in API_DIR.glob("*.md")
    for m in re.findall(r"^\.\. automodule:: (\S+)$", page.read_text(), re.MULTILINE)
)


def _exports(module_name: str) -> Iterator[tuple[str, Any]]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and getattr(v, "__module__", None) == module_name]
    for name in names:
        yield name, getattr(module, name)


#: Every object a documented module exports (by identity): these have a page of their own.
_PUBLIC = {id(obj) for m in API_MODULES for _, obj in _exports(m)}


def _is_private_class(cls: type) -> bool:
    """An edgert class no documented module exports (``Owner``, ``_Background``, ...)."""
    return cls.__module__.split(".")[0] == "edgert" and id(cls) not in _PUBLIC


def _public_classes() -> Iterator[type]:
    for m in API_MODULES:
        for _, obj in _exports(m):
            if inspect.isclass(obj):
                yield obj


# Members a class inherits from a *private* edgert base (``close`` and ``closed`` from
# ``edgert._owner.Owner``, the load generators' shared methods) are documented on the class
# itself: that base has no page to link to. Members inherited from public classes (edgert's or
# Python's) are not repeated: the "Bases" line links to them. autodoc's ``inherited-members``
# takes the names of the bases whose members to leave out, so that is every base name except the
# private ones (checked below: a private class sharing a public one's name would be ambiguous).
_PRIVATE_BASES = {b for c in _public_classes() for b in c.__mro__[1:] if _is_private_class(b)}
_PUBLIC_BASES = {b for c in _public_classes() for b in c.__mro__ if not _is_private_class(b)}
assert not {b.__name__ for b in _PRIVATE_BASES} & {b.__name__ for b in _PUBLIC_BASES}, (
    "a private base class shares its name with a public class; rename one")



def _hide_private_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a private base's public ancestors instead of the private base (``Owner`` → object).

    A private base is an implementation detail with no page; its public members are documented on
    each subclass (``inherited-members`` above).
    """
    def public(base: Any) -> list[Any]:
        if inspect.isclass(base) and _is_private_class(base):
            return [a for b in base.__bases__ for a in public(b)]
        return [base]

    shown: list[Any] = []
    for base in bases:
        shown.extend(b for b in public(base) if b not in shown)
    if len(shown) > 1 and object in shown:
        shown.remove(object)
    bases[:] = shown  # autodoc prints "Bases:" even when empty: a plain class shows object


def _attr_docs(module_name: str) -> dict[tuple[str, str], list[str]]:
    """The ``#:`` comments (and docstrings after assignments) of a module's source."""
    from sphinx.pycode import ModuleAnalyzer

    try:
        return dict(ModuleAnalyzer.for_module(module_name).find_attr_docs())
    except Exception:  # a module without source (a mocked or compiled one)
        return {}


def _own_constant_docs(module_name: str) -> set[str]:
    return {name for cls, name in _attr_docs(module_name) if cls == ""}


def _constant_docs() -> dict[tuple[str, str], list[str]]:
    """The ``#:`` comments of every exported constant, found where the constant is defined.

    autodoc reads ``#:`` comments from the module it documents, so a constant that a package
    re-exports from its private module (``edgert.bench.STAGES`` from ``edgert.bench._report``)
    would be left out as undocumented. This finds the comment in the defining private module.
    """
    found: dict[tuple[str, str], list[str]] = {}
    for module_name in API_MODULES:
        own = _attr_docs(module_name)
        # Its own private modules first, then edgert's shared ones (edgert._protocols).
        private = sorted((n for n in list(sys.modules) if n.split(".")[0] == "edgert"
                          and any(p.startswith("_") for p in n.split("."))),
                         key=lambda n: (not n.startswith(module_name + "._"), n))
        for name, obj in _exports(module_name):
            if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
                continue
            if ("", name) in own:
                found[(module_name, name)] = list(own[("", name)])
                continue
            for sub in private:
                docs = _attr_docs(sub)
                ours = [k for k in docs if k[0] == ""
                        and getattr(sys.modules[sub], k[1], None) is obj]
                same = sorted(ours, key=lambda k: k[1] != name)  # its own name first
                if same:
                    found[(module_name, name)] = list(docs[same[0]])
                    break
    return found


_CONSTANT_DOCS = _constant_docs()


def _add_reexported_constants(app: Any, docname: str, source: list[str]) -> None:
    """Append an ``autodata`` for each constant a module re-exports from a private module.

    autodoc's ``automodule`` documents a module-level constant only when the module's own source
    holds its ``#:`` comment; these are found in the defining module instead (``_CONSTANT_DOCS``).
    """
    if not docname.startswith("api/"):
        return
    module_name = docname.removeprefix("api/")
    own = _own_constant_docs(module_name)
    extra = [name for (mod, name) in _CONSTANT_DOCS if mod == module_name and name not in own]
    if extra:
        source[0] += "\n```{eval-rst}\n" + "".join(
            f".. autodata:: {module_name}.{name}\n" for name in extra) + "```\n"


def _constant_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                        lines: list[str]) -> None:
    """A re-exported constant's ``#:`` comment (not its value's type's docstring: ``dict()``)."""
    module, _, attr = name.rpartition(".")
    if what == "data" and (module, attr) in _CONSTANT_DOCS:
        lines[:] = _CONSTANT_DOCS[(module, attr)]


def _private_types_in(obj: Any, signature: str) -> list[str]:
    """The private edgert classes a class's constructor signature names."""
    init = getattr(obj, "__init__", None)
    namespace = dict(getattr(init, "__globals__", {}))
    found = []
    for ident in set(re.findall(r"[A-Za-z_][\w.]*", signature)):
        parts = ident.split(".")
        target: Any = None
        for i in range(len(parts), 0, -1):  # a dotted path: its longest imported module prefix
            module = sys.modules.get(".".join(parts[:i]))
            if module is not None:
                target = module
                for part in parts[i:]:
                    target = getattr(target, part, None)
                break
        if target is None:
            target = namespace.get(ident)
        if target is None and "." not in ident:  # imported under TYPE_CHECKING only
            target = next((vars(m)[ident] for n, m in list(sys.modules.items())
                           if n.split(".")[0] == "edgert" and m is not None
                           and inspect.isclass(vars(m).get(ident))), None)
        if inspect.isclass(target) and _is_private_class(target):
            found.append(ident)
    return found


def _signature(app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None,
               return_annotation: str | None) -> tuple[str | None, str | None] | None:
    """Signatures that say what can be called.

    A class whose constructor takes a private edgert type (``Engine(backend=...)``,
    ``Lease(pool)``) is made by the library (``Engine.load``, ``BufferPool.acquire``), not by its
    users: its page shows no constructor. A dataclass field with a ``default_factory`` shows ``...``
    as its default instead of ``<factory>``, which no signature parser reads.
    """
    if signature is None:
        return None
    if what in ("class", "exception") and _private_types_in(obj, signature):
        return "", return_annotation
    return signature.replace("=<factory>", "=...").replace(" = <factory>", " = ..."), \
        return_annotation


def _skip_tuple_fields(app: Any, what: str, name: str, obj: Any, skip: bool,
                       options: Any) -> bool | None:
    """Leave out a NamedTuple field's generated "Alias for field number N" entry.

    The class's Attributes section documents the field; a second entry would be a duplicate.
    """
    if what == "class" and re.fullmatch(r"Alias for field number \d+", getattr(obj, "__doc__", "")
                                        or ""):
        return True
    return None


def _resolve_public_paths(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve two kinds of reference to public edgert names that Sphinx alone leaves unresolved.

    * ``edgert.Name`` (a top-level re-export, ``edgert.__all__``) resolves to where ``Name`` is
      documented: ``edgert.BufferPool`` to ``edgert.memory.BufferPool``.
    * A type alias named in a signature (``stream: StreamLike``) is referenced as a class but
      documented as data (``edgert.cuda.StreamLike``); Sphinx before 8.2 does not look there.

    Anything else stays unresolved, and the strict build fails on it.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node.get("reftarget", "")
    if target.startswith("edgert."):
        first, _, rest = target.removeprefix("edgert.").partition(".")
        home = edgert._LAZY.get(first)  # the module each top-level name is imported from
        if home is not None:
            moved = node.deepcopy()
            moved["reftarget"] = ".".join(filter(None, (home, first, rest)))
            found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                        moved["reftarget"], moved, contnode)
            if found is not None:
                return found
    if node.get("reftype") == "class":
        return domain.resolve_xref(env, node["refdoc"], app.builder, "data", target, node,
                                   contnode)
    return None


def _missing_docstrings() -> Iterator[str]:
    """Public names without a docstring.

    Every export of a documented module, and the public methods and properties of exported
    classes, including those inherited from private bases (inherited docstrings count, as in
    autodoc). A name several modules export is reported once.
    """
    seen: set[int] = set()
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        if not inspect.getdoc(module):
            yield module_name
        for name, obj in _exports(module_name):
            if not (inspect.isclass(obj) or inspect.isroutine(obj)):
                if not inspect.ismodule(obj) and (module_name, name) not in _CONSTANT_DOCS:
                    yield f"{module_name}.{name} (a constant: document it with a #: comment)"
                continue
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if not inspect.getdoc(obj):
                yield f"{module_name}.{name}"
            if not inspect.isclass(obj):
                continue
            for cls in obj.__mro__:
                if cls is not obj and not _is_private_class(cls):
                    continue
                for attr, value in vars(cls).items():
                    if attr.startswith("_") or not (inspect.isroutine(value)
                                                    or isinstance(value, property)):
                        continue
                    member = value if isinstance(value, property) else getattr(obj, attr, None)
                    if not inspect.getdoc(member):
                        yield f"{module_name}.{name}.{attr}"


def _excluded(module_name: str) -> set[str] | None:
    """The names a module's page leaves out (``:exclude-members:``), or None (``:no-members:``)."""
    page = (API_DIR / f"{module_name}.md").read_text()
    if re.search(r"^\s+:no-members:", page, re.MULTILINE):
        return None
    found = re.search(r"^\s+:exclude-members:(.*)$", page, re.MULTILINE)
    return {n.strip() for n in found.group(1).split(",")} if found else set()


def _misplaced_exports() -> Iterator[str]:
    """Classes and functions documented on no page, or on more than one.

    A name that several modules export (a subpackage re-exporting its modules' names,
    ``edgert.realtime`` re-exporting ``edgert.stats``) is documented on one page; the others list
    it in ``:exclude-members:`` (or use ``:no-members:``) and say where it is.
    """
    pages: dict[int, list[str]] = {}
    for module_name in API_MODULES:
        excluded = _excluded(module_name)
        for name, obj in _exports(module_name):
            if inspect.isclass(obj) or inspect.isroutine(obj):
                shown = excluded is not None and name not in excluded
                pages.setdefault(id(obj), [])
                if shown:
                    pages[id(obj)].append(f"{module_name}.{name}")
    names = {id(obj): f"{m}.{n}" for m in API_MODULES for n, obj in _exports(m)}
    for key, shown_on in pages.items():
        if len(shown_on) != 1:
            yield f"{names[key]} is documented {len(shown_on)} times ({', '.join(shown_on)})"


def _check_docstrings(app: Any) -> None:
    # autodoc leaves an undocumented public name out of the site silently; this makes it a
    # warning, so the strict build fails on it. ruff's D1 rules cannot: they treat every
    # definition in a private module (edgert/cuda/_stream.py, ...) as private.
    from sphinx.util import logging

    log = logging.getLogger("edgert.docs")
    for name in sorted(set(_missing_docstrings())):
        log.warning("public name without a docstring: %s", name,
                    type="edgert", subtype="missing_docstring")
    for problem in _misplaced_exports():
        log.warning("%s; document it once: the other pages leave it out with :exclude-members:",
                    problem, type="edgert", subtype="export_pages")


def _add_inherited_members(app: Any, config: Any) -> None:
    config.autodoc_default_options["inherited-members"] = ",".join(
        sorted({b.__name__ for b in _PUBLIC_BASES}))


def setup(app: Any) -> dict[str, Any]:
    """Connect the hooks above."""
    app.connect("config-inited", _add_inherited_members)
    app.connect("autodoc-process-bases", _hide_private_bases)
    app.connect("autodoc-process-signature", _signature)
    app.connect("source-read", _add_reexported_constants)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("missing-reference", _resolve_public_paths)
    app.connect("autodoc-process-docstring", _constant_docstring, priority=400)
    app.connect("builder-inited", _check_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
