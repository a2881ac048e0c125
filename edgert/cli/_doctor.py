"""``edgert doctor``: one report of what this machine is and allows."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from edgert.cli._errors import existing_dir, print_error

__all__ = ["register"]

_REQUIRED = ("numpy", "typing_extensions", "cuda.bindings")


def register(sub: Any) -> None:
    """Add the ``doctor`` subcommand."""
    p = sub.add_parser("doctor", help="report what this machine is and allows",
                       description="Report kernel, Jetson, GPU, TensorRT, real-time and thermal "
                       "facts, with a verdict per section and what to change.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--root", type=existing_dir, default=Path("/"),
                   help="read /proc, /sys, /etc and /var under this directory (a fake tree)")
    p.set_defaults(func=_run)


def _broken_install() -> list[str]:
    missing = []
    for name in _REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as err:
            missing.append(f"{name} ({type(err).__name__}: {err})")
    return missing


def _run(args: argparse.Namespace) -> int:
    from edgert.doctor import run_doctor

    report = run_doctor(args.root)
    print(report.to_json() if args.json else report.render())
    missing = _broken_install()
    if missing:
        # The only non-zero exit: edgert itself is not installed properly.
        print_error("edgert doctor", "edgert is not installed correctly; these dependencies do "
                    "not import: " + "; ".join(missing),
                    hint="reinstall edgert with its dependencies: `pip install -e .` in its "
                         "clone (or `bin/edgert doctor` there, which sets up .venv)")
        return 3
    return 0
