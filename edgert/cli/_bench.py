"""``edgert bench [MODEL]``: run a model the way a robot does and print a trtexec-style report.

With no MODEL it runs the bundled control policy: as CUDA kernels on a GPU, through ONNX Runtime
on the host otherwise, so it works on a fresh machine. Exit status: 0 when the run completed
(warnings included), 1 when the model could not be run or a file not written, 2 for bad options,
130 when Ctrl-C stopped it (the report of what ran is still printed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from pathlib import Path
from typing import IO, Any

from edgert.cli._errors import EXIT_ERROR as _EXIT_ERROR
from edgert.cli._errors import EXIT_USAGE as _EXIT_USAGE
from edgert.cli._errors import FlagNames, existing_dir, print_error, report_error

__all__ = ["FLAGS", "parse_cpus", "register"]

_EXIT_INTERRUPTED = 130
_COMMAND = "edgert bench"
_USAGE_HINT = "`edgert bench --help` lists the options and the values each takes"
_RUN_HINT = "`edgert doctor` shows what this machine has and allows"

#: The library's parameter names (BenchOptions, InferenceSession) as the flags that set them.
FLAGS = FlagNames(
    {"rate_hz": "--rate", "duration_s": "--duration", "warmup_s": "--warmup", "rt": "--rt",
     "priority": "--priority", "cpus": "--cpus", "io": "--io", "cuda_graph": "--graph",
     "slots": "--slots", "batch": "--batch", "shapes": "--shapes", "sync": "--sync",
     "runtime": "--runtime",
     "device": "--device", "root": "--root", "environment": "--no-environment"},
    {"rt": {"True": "--rt", "False": "--no-rt"},
     "cuda_graph": {"on": "--graph", "True": "--graph", "off": "--no-graph",
                    "False": "--no-graph", "auto": "the default (no --graph or --no-graph)"}})


def parse_cpus(text: str) -> frozenset[int]:
    """``"0,2-3"`` -> ``{0, 2, 3}`` (the cpuset list format).

    Raises:
        argparse.ArgumentTypeError: Not a CPU list.
    """
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError(part)
            cpus.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a CPU list like 2 or 0,2-3") from None
    return frozenset(cpus)


def _device(text: str) -> int | str:
    if text == "host":
        return "host"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a CUDA ordinal or 'host'") from None


def register(sub: Any) -> None:
    """Add the ``bench`` subcommand."""
    from edgert.engine import RUNTIME_CHOICES

    p = sub.add_parser(
        "bench", help="benchmark a model the way a robot runs it (default: the bundled model)",
        description="Run MODEL in a periodic loop at --rate under a real-time policy (where "
                    "permitted), with temperatures sampled alongside, and print a trtexec-style "
                    "report: throughput; total, enqueue, H2D, compute and D2H latency; wake-up "
                    "jitter; deadline misses; throttling; warnings. Without MODEL: the bundled "
                    "control policy on the best backend here.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a .plan/.engine or .onnx file, or 'bundled' (the default)")
    p.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                   help="requests per second in a periodic loop (default 1000); 0 runs them "
                        "back to back (throughput: add --no-rt, since RT throttling may stop a "
                        "SCHED_FIFO loop that never sleeps for up to 50 ms a second)")
    p.add_argument("--duration", type=float, default=3.0, metavar="S",
                   help="seconds measured (default 3)")
    p.add_argument("--warmup", type=float, default=0.2, metavar="S",
                   help="seconds of warm-up before that (default 0.2)")
    p.add_argument("--rt", action=argparse.BooleanOptionalAction, default=True,
                   help="real-time policy for the loop thread: SCHED_FIFO, locked memory, "
                        "frozen GC (default on; what the OS refuses is reported)")
    p.add_argument("--priority", type=int, default=80, metavar="N",
                   help="SCHED_FIFO priority (default 80)")
    p.add_argument("--cpus", type=parse_cpus, metavar="LIST",
                   help="pin the loop thread to these CPUs, e.g. 3 or 2-3 (part of --rt)")
    p.add_argument("--io", choices=("auto", "copy", "zero_copy"), default="auto",
                   help="session I/O mode (default auto)")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA graphs on or off (default: where the executable allows)")
    p.add_argument("--slots", type=int, default=1, metavar="N",
                   help="requests in flight at once (default 1)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="batch size of each request (default 1)")
    p.add_argument("--shapes", metavar="SPEC",
                   help="input shapes to run, like trtexec: images:1x3x320x320,state:2x1x128 "
                        "(default: the profile's opt shape, or 1 per dynamic dimension)")
    p.add_argument("--sync", choices=("adaptive", "blocking", "spin"), default="adaptive",
                   help="how the host waits for the GPU: spin for about the expected time, "
                        "then sleep (adaptive, the default), always sleep, or always spin")
    p.add_argument("--runtime", choices=(*RUNTIME_CHOICES, "fake"), default="auto",
                   help="runtime for a model file (fake: edgert.testing.fake_tensorrt)")
    p.add_argument("--device", type=_device, default=None, metavar="N|host",
                   help="CUDA device ordinal, or 'host' to stay off the GPU")
    p.add_argument("--root", type=existing_dir, default=Path("/"),
                   help="read sensors (and the doctor's files) under this directory")
    p.add_argument("--json", metavar="FILE",
                   help="write every figure and the environment as JSON ('-': to stdout, "
                        "instead of the text report)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a latency histogram and timeline (needs edgert[plot])")
    p.add_argument("--no-environment", dest="environment", action="store_false",
                   help="leave the doctor's environment summary out (saves ~0.5 s)")
    from edgert.cli._bench_load import add_load_arguments

    add_load_arguments(p)
    p.set_defaults(func=_run)


class _Console:
    """The live progress line (only on a terminal) and one-line notices, on stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._shown = False

    def notice(self, line: str) -> None:
        with self._lock:
            self._clear()
            print(line, file=self.stream, flush=True)

    def progress(self, p: Any) -> None:
        if not self.live:
            return
        parts = [f"bench: {p.phase} {p.elapsed_s:4.1f}/{p.duration_s:g} s",
                 f"{p.requests:,} requests"]
        if p.mean_us is not None:
            parts.append(f"step {p.mean_us:.1f} us (max {p.max_us:.0f})")
        if p.late:
            parts.append(f"{p.late} late")
        s = p.sample
        if s is not None and s.max_temp_c is not None:
            parts.append(f"{s.hottest} {s.max_temp_c:.1f} °C")
        line = "  ".join(parts)[: shutil.get_terminal_size().columns - 1]
        with self._lock:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def done(self) -> None:
        with self._lock:
            self._clear()


def _check_outputs(args: argparse.Namespace) -> str | None:
    """What stops the report from being written, found before the run rather than after it."""
    from edgert.errors import EdgeRTError

    if args.plot:
        from edgert.bench._plot import require_matplotlib

        try:
            require_matplotlib()
        except EdgeRTError as err:
            return f"--plot: {err}"
    for flag, name in (("--json", args.json), ("--plot", args.plot)):
        if name and name != "-" and not Path(name).resolve().parent.is_dir():
            return (f"{flag}: cannot write {name}: its directory does not exist\n"
                    "Hint: create the directory first, or give another path")
        if name and name != "-" and Path(name).is_dir():
            example = Path(name) / ("run.json" if flag == "--json" else "run.png")
            return f"{flag}: {name} is a directory\nHint: give a file name, e.g. {example}"
    return None


def _run(args: argparse.Namespace) -> int:
    from edgert.bench import BenchOptions, run_options
    from edgert.errors import EdgeRTError, InvalidArgumentError
    from edgert.session import GraphMode

    if args.load is not None:  # latency beside a background load: its own report
        from edgert.cli._bench_load import run_load

        return run_load(args)
    given = [flag for flag, value in (("--reserve-sms", args.reserve_sms),
                                      ("--stream-priority", args.stream_priority))
             if value is not None]
    if given:  # they shape the --load run only: without it they would be ignored in silence
        print_error(_COMMAND, f"{' and '.join(given)} only "
                    f"{'applies' if len(given) == 1 else 'apply'} with --load",
                    hint="add --load gemm|conv|MODEL, or leave them out")
        return _EXIT_USAGE
    console = _Console(sys.stderr)
    graph: GraphMode | bool = GraphMode.AUTO if args.graph is None else bool(args.graph)
    try:
        options = BenchOptions(
            rate_hz=args.rate, duration_s=args.duration, warmup_s=args.warmup, rt=args.rt,
            priority=args.priority, cpus=args.cpus, io=args.io, cuda_graph=graph,
            slots=args.slots, batch=args.batch, shapes=args.shapes, sync=args.sync,
            runtime=args.runtime,
            device=args.device, root=args.root, environment=args.environment)
    except InvalidArgumentError as err:
        print_error(_COMMAND, err, hint=_USAGE_HINT, flags=FLAGS)
        return _EXIT_USAGE
    problem = _check_outputs(args)
    if problem is not None:
        print_error(_COMMAND, problem, hint=_USAGE_HINT)
        return _EXIT_USAGE
    try:
        report = run_options(args.model, options, progress=console.progress,
                             notify=console.notice)
    except (EdgeRTError, OSError) as err:
        console.done()
        return report_error(_COMMAND, err, usage_hint=_USAGE_HINT, run_hint=_RUN_HINT,
                            flags=FLAGS, given=getattr(args, "given_flags", ()))
    console.done()
    try:
        if args.json == "-":
            print(report.to_json())
        else:
            print(report.render())
            if args.json:
                Path(args.json).write_text(report.to_json() + "\n")
        if args.plot:
            report.plot(args.plot)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main stops quietly
    except OSError as err:
        print_error(_COMMAND, f"cannot write {err.filename}: {err.strerror}",
                    hint="check that the path is writable; the report above is complete")
        return _EXIT_ERROR
    except EdgeRTError as err:
        print_error(_COMMAND, err, hint="the report above is complete")
        return _EXIT_ERROR
    if report.stopped_by == "interrupted":
        print("edgert bench: interrupted; the report covers what ran", file=sys.stderr)
        return _EXIT_INTERRUPTED
    return 0
