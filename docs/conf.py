"""Sphinx configuration: the guides (MyST Markdown) and the API reference (autodoc).

Build the site with ``tools/build_docs.sh`` (``sphinx-build -W``: every warning — a broken link,
an unresolved reference to an edgert name, a malformed docstring, a public name without a
docstring — fails the build). docs/_ext/edgert_apidoc.py holds edgert's additions to autodoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import edgert  # noqa: E402

project = "edgert"
author = "edgert developers"
copyright = "edgert developers"
release = edgert.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "edgert_apidoc",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Google-style docstrings (the project's convention).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections become attribute entries: ``:attr:`LoopReport.skipped_periods``` links.
napoleon_use_ivar = False
napoleon_attr_annotations = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
# Defaults as written (``np.uint8``, not ``<class 'numpy.uint8'>``, which no parser can read) and
# numpy's aliases by name instead of their expansion into a page-long union.
autodoc_preserve_defaults = True
autodoc_type_aliases = {
    "DTypeLike": "numpy.typing.DTypeLike",
    "ArrayLike": "numpy.typing.ArrayLike",
    "NDArray": "numpy.typing.NDArray",
}
# docs/_ext/edgert_apidoc.py adds "inherited-members" (every public base: members inherited from
# a private base such as Owner are documented on the class) and the build's own checks.
autodoc_default_options = {"members": True, "show-inheritance": True}
# Hardware and optional packages that a docs build machine may lack.
autodoc_mock_imports = ["tensorrt", "tensorrt_lean", "tensorrt_dispatch", "pynvml"]

# Every reference to an edgert name must resolve; names of other projects cannot be resolved
# without their inventories (intersphinx would need the network), so they are not checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|npt|cuda|ctypes|collections|typing|typing_extensions|types|enum|"
               r"pathlib|os|threading|concurrent|logging|subprocess|dataclasses|weakref|"
               r"argparse|io|json|abc|contextlib|datetime|decimal|fractions|re|socket|"
               r"onnxruntime|onnx|ml_dtypes|pytest|_pytest|matplotlib|psutil)(\..*)?"),
    (r"py:.*", r"(int|float|str|bytes|bool|object|None|type|tuple|list|dict|set|frozenset|"
               r"Callable|Mapping|Sequence|Iterable|Iterator|Any|Self|Path|ModuleType|"
               r"TracebackType|BaseException|Exception|memoryview|bytearray|complex|range|"
               r"slice|Hashable|Generator|Literal|TypeVar|ParamSpec|Protocol|StrEnum|Enum|"
               r"IntEnum|Logger|Popen|CompletedProcess|Namespace|module|"
               r"ArgumentParser|ndarray|dtype|generic|DTypeLike|ArrayLike|NDArray|"
               r"PathLike|StrPath|BufferProtocol|ReadableBuffer)"),
]

html_theme = "alabaster"
html_title = f"edgert {release}"
