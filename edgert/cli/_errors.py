"""How every ``edgert`` command reports an error: ``edgert COMMAND: what failed``, then ``Hint:``.

The library's errors name Python parameters (``rate_hz``, ``cuda_graph='on'``); a person at the
command line typed flags (``--rate``, ``--graph``). :class:`FlagNames` rewrites the first into
the second, and :func:`print_error` makes sure the last line says what to do next.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, NoReturn

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "FlagNames", "Parser", "existing_dir", "exit_status",
           "given_flags", "int_in", "print_error", "report_error"]

#: A runtime failure: the model, the machine or a file did not allow what was asked.
EXIT_ERROR = 1
#: A usage error: a flag's value, a combination of flags, or a flag this machine cannot honour.
EXIT_USAGE = 2


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


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an int from ``low`` to ``high`` (no upper bound when None).

    The range is checked as the flag is parsed, so the message names the flag and the value
    as typed (``--workspace-mib -5``), not the library's parameter in its own unit.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be an int {allowed}, not {text}")
        return value

    parse.__name__ = "int"  # argparse names the type in its own messages
    return parse


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> frozenset[str]:
    """The option strings of every flag whose value is not its default (what was typed).

    Both spellings of a flag are included (``--graph`` and ``--no-graph``), so a message that
    names either counts as naming the flag.
    """
    given: set[str] = set()
    for action in parser._actions:  # argparse has no public view of its actions
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        if getattr(args, action.dest, action.default) != action.default:
            given.update(action.option_strings)
    return frozenset(given)


def exit_status(error: BaseException, text: str, given: Collection[str] = ()) -> int:
    """The exit status of a library error that stopped a command: 2 for usage, else 1.

    A usage error is one the person at the command line fixes by changing the command: an
    :class:`~edgert.errors.InvalidArgumentError` (a value out of range, a malformed digest,
    an impossible combination), or a :class:`~edgert.errors.NotSupportedError` whose first
    line names a flag that was typed (``--graph needs a CUDA device``: a flag this machine
    cannot honour, like ``--device 3`` on a machine without it). What the machine, the model
    or a file refused without a flag asking for it is a runtime failure.

    Args:
        error: What the library raised.
        text: Its message as printed, with parameter names rewritten into flags.
        given: The flags typed on the command line (:func:`given_flags`).
    """
    from edgert.errors import InvalidArgumentError, NotSupportedError

    if isinstance(error, InvalidArgumentError):
        return EXIT_USAGE
    if isinstance(error, NotSupportedError):
        first = text.split("\n", 1)[0]
        if any(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", first) for flag in given):
            return EXIT_USAGE
    return EXIT_ERROR


def report_error(command: str, error: BaseException, *, usage_hint: str, run_hint: str,
                 flags: FlagNames | None = None, given: Collection[str] = (),
                 text: str | None = None) -> int:
    """Print a library error (:func:`print_error`) and return its exit status (:func:`exit_status`).

    Args:
        command: ``edgert bench`` etc.
        error: What the library raised.
        usage_hint: The hint for a usage error that brings none of its own.
        run_hint: The hint for a runtime failure that brings none of its own.
        flags: Rewrites parameter names into flags.
        given: The flags typed on the command line.
        text: The message to print instead of ``str(error)`` (a command's rewording).
    """
    message = str(error) if text is None else text
    shown = flags(message) if flags is not None else message
    status = exit_status(error, shown, given)
    print_error(command, shown, hint=usage_hint if status == EXIT_USAGE else run_hint)
    return status


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
