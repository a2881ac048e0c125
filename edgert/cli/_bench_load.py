"""``edgert bench --load gemm|conv|MODEL``: the control model's latency beside a GPU load.

Runs :func:`edgert.bench.run_under_load`: the load alone, the model alone (idle latency), then
both; prints latency idle and under load, the load's throughput with and without the model, and
which SM partition and stream priority each had. ``--reserve-sms N`` gives the model a partition
of N SMs (a green context) and confines the load to the rest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgert.cli._errors import EXIT_ERROR as _EXIT_ERROR
from edgert.cli._errors import EXIT_USAGE as _EXIT_USAGE
from edgert.cli._errors import int_in, print_error, report_error

__all__ = ["add_load_arguments", "run_load"]

_COMMAND = "edgert bench"
_USAGE_HINT = "`edgert bench --help` lists the options and the values each takes"


def _stream_priority(text: str) -> int | str:
    if text in ("highest", "lowest"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'highest', 'lowest' or an int") from None


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--load``, ``--reserve-sms`` and ``--stream-priority`` to the bench parser."""
    g = p.add_argument_group("latency under load (GPU)")
    g.add_argument("--load", metavar="gemm|conv|MODEL",
                   help="run a background load on the same GPU and report the model's latency "
                        "idle and under it: a persistent GEMM, a convolution stack, or a model "
                        "file run back to back")
    g.add_argument("--reserve-sms", type=int_in(1), default=None, metavar="N",
                   help="with --load: a partition of N SMs (green context) for the model, the "
                        "rest for the load (see `edgert doctor` for legal sizes)")
    g.add_argument("--stream-priority", type=_stream_priority, default=None,
                   metavar="P", help="with --load: the model's CUDA stream priority "
                                     "(highest, lowest or an int; default highest)")


def run_load(args: argparse.Namespace) -> int:
    """Run ``bench --load`` and print its report; return the exit status."""
    from edgert.bench import run_under_load
    from edgert.cli._bench import FLAGS
    from edgert.errors import EdgeRTError

    if args.device == "host":
        print_error(_COMMAND, "--load needs a CUDA device, not --device host",
                    hint="leave out --device (or give a CUDA ordinal), or leave out --load")
        return _EXIT_USAGE
    if args.rate <= 0:
        print_error(_COMMAND, "--load needs a periodic --rate above 0",
                    hint="the model's latency is measured once per period: e.g. --rate 500")
        return _EXIT_USAGE
    from edgert import cuda

    if not cuda.is_available():
        print_error(_COMMAND, "--load runs a background load on a GPU beside the model, and "
                    f"there is no CUDA device here: {cuda.unavailable_reason()}",
                    hint="leave out --load to benchmark the model on the host; `edgert "
                         "doctor` says what is missing for CUDA")
        return _EXIT_USAGE  # a flag this machine cannot honour, as --graph without a GPU
    try:
        report = run_under_load(
            args.model, load=args.load, device=args.device or 0, reserve_sms=args.reserve_sms,
            priority="highest" if args.stream_priority is None else args.stream_priority,
            rate_hz=args.rate, duration_s=args.duration,
            runtime=args.runtime)
    except (EdgeRTError, OSError) as err:
        return report_error(_COMMAND, err, usage_hint=_USAGE_HINT,
                            run_hint="`edgert doctor` shows what this machine has and allows",
                            flags=FLAGS, given=getattr(args, "given_flags", ()))
    text = json.dumps(report.to_dict(), indent=2)
    try:
        if args.json == "-":
            print(text)
        else:
            print(report.render())
            if args.json:
                Path(args.json).write_text(text + "\n")
    except OSError as err:
        print_error(_COMMAND, f"cannot write {err.filename}: {err.strerror}",
                    hint="check that the path is writable; the report above is complete")
        return _EXIT_ERROR
    return 0
