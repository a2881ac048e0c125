"""The ``edgert`` command line: ``doctor``, ``inspect``, ``bench``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the command owns no
state of its own and uses the public library underneath.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from edgert._version import __version__
from edgert.cli._errors import Parser, given_flags, print_error

__all__ = ["build_parser", "main"]

# Subcommand modules, in the order `edgert --help` lists them.
_COMMANDS = ("edgert.cli._bench", "edgert.cli._build", "edgert.cli._doctor",
             "edgert.cli._inspect", "edgert.cli._store")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered.

    Usage errors print one line naming the flag and a ``Hint:`` line, and exit with status 2.
    """
    parser = Parser(
        prog="edgert",
        description="Predictable-latency inference on NVIDIA edge hardware.",
    )
    parser.add_argument("--version", action="version", version=f"edgert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    parser.set_defaults(subcommands=sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    owner = args.subcommands.get(args.command, parser)
    # Which flags were typed: a library error naming one of them is a usage error (exit 2).
    args.given_flags = given_flags(owner, args)
    if extra:  # said by the subcommand that was given them, so the hint names its --help
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        print_error("edgert", "no command given",
                    hint="`edgert bench` runs the bundled model here; `edgert doctor` reports "
                         "what this machine allows")
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print("edgert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`edgert ... | head`): stop quietly. Point stdout at /dev/null
        # so the interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE").
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
