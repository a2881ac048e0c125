"""``edgert build MODEL.onnx -o model.plan``: build a TensorRT plan, with trtexec-like flags.

Needs full TensorRT (its builder) and a GPU; ``--runtime fake`` builds with
:mod:`edgert.testing.fake_tensorrt` (CI, demos). Shapes use trtexec's notation, one input per
``--shapes``: ``--shapes obs:1x48,1x48,256x48`` (min,opt,max). The plan is written atomically;
its SHA-256 is printed so it can be pinned.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from edgert._fake_runtime import fake_tensorrt_module
from edgert.cli._errors import EXIT_USAGE as _EXIT_USAGE
from edgert.cli._errors import FlagNames, int_in, print_error, report_error

__all__ = ["ProgressPrinter", "register"]

#: BuildOptions' parameter names as the flags that set them.
_FLAGS = FlagNames({"profiles": "--shapes", "strongly_typed": "--strongly-typed",
                    "workspace_bytes": "--workspace-mib", "optimization_level": "--opt-level",
                    "timing_cache": "--timing-cache", "device": "--device",
                    "version_compatible": "--version-compatible",
                    "exclude_lean_runtime": "--exclude-lean-runtime",
                    "hardware_compatibility": "--hardware-compatibility", "int8": "--int8"},
                   {name: {"True": flag} for name, flag in (
                       ("version_compatible", "--version-compatible"),
                       ("strongly_typed", "--strongly-typed"), ("int8", "--int8"))})
_USAGE_HINT = "`edgert build --help` lists the options and the values each takes"
_PRECISIONS = ("--fp16", "--bf16", "--int8")


def register(sub: Any) -> None:
    """Add the ``build`` subcommand."""
    p = sub.add_parser(
        "build", help="build a TensorRT plan from an ONNX model (full TensorRT)",
        description="Build a TensorRT plan from an ONNX model, like trtexec --onnx ... "
                    "--saveEngine. Needs full TensorRT and a GPU.")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    p.add_argument("-o", "--output", "--saveEngine", dest="output", required=True, type=Path,
                   help="where to write the plan")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT <= 10)")
    p.add_argument("--bf16", action="store_true", help="allow BF16 kernels (TensorRT <= 10)")
    p.add_argument("--int8", action="store_true",
                   help="allow INT8 kernels (explicit quantization: the model's Q/DQ nodes)")
    p.add_argument("--strongly-typed", "--stronglyTyped", dest="strongly_typed",
                   action="store_true", help="build a strongly typed network")
    p.add_argument("--shapes", action="append", default=[], metavar="NAME:MIN,OPT,MAX",
                   help="an input's profile, e.g. obs:1x48,1x48,256x48 (repeat per input)")
    p.add_argument("--workspace-mib", type=int_in(1), metavar="MIB",
                   help="limit the builder's workspace pool (MiB, 1 or more)")
    p.add_argument("--version-compatible", "--versionCompatible", dest="version_compatible",
                   action="store_true",
                   help="a plan newer TensorRT runtimes of this major version can run (embeds a "
                        "lean runtime: loading it needs allow_host_code)")
    p.add_argument("--exclude-lean-runtime", "--excludeLeanRuntime",
                   dest="exclude_lean_runtime", action="store_true",
                   help="with --version-compatible, leave the lean runtime out")
    p.add_argument("--hardware-compatibility", default="none",
                   choices=("none", "ampere_plus", "same_compute_capability"),
                   help="which GPUs the plan may run on")
    p.add_argument("--opt-level", "--builderOptimizationLevel", dest="opt_level", type=int_in(0, 5),
                   metavar="0-5", help="builder optimization level")
    p.add_argument("--timing-cache", "--timingCacheFile", dest="timing_cache", type=Path,
                   help="read and update this timing cache file")
    p.add_argument("--device", type=int_in(0), default=0, metavar="N",
                   help="CUDA device ordinal to build for (default 0)")
    p.add_argument("--runtime", choices=("full", "fake"), default="full",
                   help="full TensorRT, or edgert's fake TensorRT (no GPU; CI and demos)")
    p.add_argument("--no-progress", action="store_true", help="do not draw build progress")
    p.set_defaults(func=_run)


class ProgressPrinter:
    """Draws builder phases as progress bars (one line per phase, redrawn on a terminal)."""

    def __init__(self, stream: TextIO, *, width: int = 30) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._width = width
        self._finished: set[tuple[str, int]] = set()

    def __call__(self, phase: str, step: int, steps: int, depth: int) -> bool:
        """Progress callback for :class:`~edgert.store.EngineBuilder`; never cancels."""
        done = steps > 0 and step >= steps
        key = (phase, depth)
        if step == 0:  # the phase starts (again)
            self._finished.discard(key)
        if done:
            # TensorRT reports the last step complete, then the phase finished: one line.
            if key in self._finished:
                return True
            self._finished.add(key)
        elif not self._tty:
            return True
        fill = int(self._width * step / steps) if steps else self._width
        bar = "#" * fill + "." * (self._width - fill)
        line = f"{'  ' * depth}{phase[:40]:<40} [{bar}] {step}/{steps}"
        end = "\n" if done or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + line + end)
        self._stream.flush()
        return True


def _options(args: argparse.Namespace) -> Any:
    from edgert.store import BuildOptions

    return BuildOptions(
        fp16=args.fp16, bf16=args.bf16, int8=args.int8, strongly_typed=args.strongly_typed,
        profiles=[";".join(args.shapes)] if args.shapes else (),
        workspace_bytes=args.workspace_mib << 20 if args.workspace_mib is not None else None,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        hardware_compatibility=args.hardware_compatibility,
        optimization_level=args.opt_level, timing_cache=args.timing_cache)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What in the flags stops the build, found before TensorRT is even loaded."""
    precisions = [f for f in _PRECISIONS if getattr(args, f[2:])]
    if args.strongly_typed and precisions:
        return (f"{' and '.join(precisions)} contradict{'s' if len(precisions) == 1 else ''} "
                "--strongly-typed: a strongly typed network takes its precisions from the ONNX "
                "model\nHint: leave out --strongly-typed, or convert the model to the precision "
                "you want (e.g. ModelOpt AutoCast, or Q/DQ nodes)")
    if args.exclude_lean_runtime and not args.version_compatible:
        return ("--exclude-lean-runtime applies with --version-compatible only\nHint: add "
                "--version-compatible, or leave out --exclude-lean-runtime")
    for flag, path in (("-o", args.output), ("--timing-cache", args.timing_cache)):
        if path is None:
            continue
        if not path.resolve().parent.is_dir():
            return (f"{flag}: cannot write {path}: its directory does not exist\n"
                    "Hint: create the directory first, or give another path")
        if path.is_dir():
            example = path / ("model.plan" if flag == "-o" else "timing.cache")
            return f"{flag}: {path} is a directory\nHint: give a file name, e.g. {example}"
    return None


def _run(args: argparse.Namespace) -> int:
    from edgert.errors import EdgeRTError
    from edgert.store import EngineBuilder

    problem = _usage_problem(args)
    if problem is not None:  # found before a build of minutes
        print_error("edgert build", problem, hint=_USAGE_HINT)
        return _EXIT_USAGE
    trt_module: ModuleType | None = None
    if args.runtime == "fake":
        trt_module = fake_tensorrt_module()
    try:
        options = _options(args)
        progress = None if args.no_progress else ProgressPrinter(sys.stderr)
        start = time.monotonic()
        with EngineBuilder(trt_module=trt_module, device=args.device) as builder:
            path = builder.build_file(args.model, args.output, options, progress=progress)
            version = builder.trt_version
    except EdgeRTError as err:
        return report_error("edgert build", err, usage_hint=_USAGE_HINT,
                            run_hint="`edgert build --help` lists the options", flags=_FLAGS,
                            given=getattr(args, "given_flags", ()))
    data = path.read_bytes()
    print(f"wrote {path} ({len(data):,} bytes) with TensorRT {version} in "
          f"{time.monotonic() - start:.1f} s")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    if options.embeds_host_code:
        print("note: this plan embeds a lean runtime (host code); load it with "
              "allow_host_code=True, after verifying its sha256 or HMAC")
    return 0
