"""How every ``edgert`` command reports an error: ``edgert COMMAND: what failed``, then ``Hint:``.

The library's errors name Python parameters (``rate_hz``, ``cuda_graph='on'``); a person at the
command line typed flags (``--rate``, ``--graph``). :class:`FlagNames` rewrites the first into
the second, and :func:`print_error` makes sure the last line says what to do next.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NoReturn

__all__ = ["FlagNames", "Parser", "existing_dir", "print_error"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors follow the command line's error format.

    argparse prints the whole usage block and ``error: ...``; here the error is one line naming
    the flag (argparse's own wording: ``argument --rate: invalid float value: 'x'``) and a hint.
    Subparsers are made with the same class.
    """

    def error(self, message: str) -> NoReturn:
        """Print the error and exit with status 2 (a usage error)."""
        self.exit(2, f"{self.prog}: {message}\nHint: `{self.prog} --help` lists the options "
                     "and the values each takes\n")


def existing_dir(text: str) -> Path:
    """An argparse ``type`` for ``--root DIR``: a directory that exists.

    A root that does not exist would make every file under it unreadable, and the doctor and
    the sensors would then describe an empty machine instead of reporting the typo.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not an existing directory.
    """
    path = Path(text)
    if not path.is_dir():
        why = "is not a directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {why} (it should hold proc/, sys/, etc/)")
    return path


class FlagNames:
    """Rewrites Python parameter names in a message into the flags that set them.

    Args:
        flags: Parameter name -> flag (``{"rate_hz": "--rate"}``).
        values: Per parameter, spelled values -> what to type instead
            (``{"cuda_graph": {"on": "--graph", "off": "--no-graph"}}``), for flags whose
            value is not typed after them.
    """

    def __init__(self, flags: Mapping[str, str],
                 values: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._flags = dict(flags)
        self._values = {k: dict(v) for k, v in (values or {}).items()}
        names = "|".join(sorted(map(re.escape, self._flags), key=len, reverse=True))
        # name=value, as the library writes a keyword argument (quoted or a bare word)
        self._kwarg = re.compile(rf"\b({names})=('[^']*'|\"[^\"]*\"|[\w.\-/]+)")
        # "leave name unset"
        self._unset = re.compile(rf"\bleave ({names}) unset\b")
        # a message or hint that starts with the bare parameter name ("rate_hz must be ...")
        self._leading = re.compile(rf"(^|\n|Hint: )({names})\b(?!=)", re.MULTILINE)

    def __call__(self, text: str) -> str:
        """``text`` with every parameter it names given as its flag."""
        text = self._kwarg.sub(self._kwarg_flag, text)
        text = self._unset.sub(lambda m: f"leave out {self._flags[m.group(1)]}", text)
        return self._leading.sub(lambda m: m.group(1) + self._flags[m.group(2)], text)

    def _kwarg_flag(self, m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2).strip("'\"")
        spelled = self._values.get(name)
        if spelled is not None and value in spelled:
            return spelled[value]
        return f"{self._flags[name]} {value}"


def print_error(command: str, error: BaseException | str, *, hint: str,
                flags: FlagNames | None = None, stream: IO[str] | None = None) -> None:
    """Print ``command: message`` and a ``Hint:`` line (``hint`` when the error has none).

    Args:
        command: ``edgert bench`` etc.
        error: An exception (an :class:`~edgert.errors.EdgeRTError` renders its own hint) or
            the message.
        hint: What to do next, used when ``error`` does not say.
        flags: Rewrites parameter names into flags.
        stream: Where to print (default stderr).
    """
    text = str(error)
    if "\nHint: " not in text:
        text += f"\nHint: {hint}"
    if flags is not None:
        text = flags(text)
    print(f"{command}: {text}", file=stream if stream is not None else sys.stderr)
