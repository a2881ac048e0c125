"""``edgert inspect MODEL``: what a model is, what it needs, and whether it is the one you pinned.

Prints the format and the versions in its header, size and SHA-256, the integrity check, the
runtime that loaded it, and every tensor with dtype, shape, profiles and buffer sizes. Without a
GPU a TensorRT plan is still described from its header. The exit status is non-zero only for
real errors: unreadable or malformed files, integrity failures, and models the runtime rejects.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._fake_runtime import fake_tensorrt_module
from edgert.cli._errors import FlagNames, report_error

__all__ = ["inspect_model", "register", "render"]

_USAGE_HINT = "`edgert inspect --help` lists the options and the values each takes"


def register(sub: Any) -> None:
    """Add the ``inspect`` subcommand."""
    from edgert.engine import RUNTIME_CHOICES

    p = sub.add_parser(
        "inspect", help="describe a model: tensors, shapes, profiles, runtime, integrity",
        description="Describe a TensorRT plan or ONNX model. MODEL 'bundled' is edgert's "
                    "bundled control policy.")
    p.add_argument("model", metavar="MODEL", help="a .plan/.engine or .onnx file, or 'bundled'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--runtime", default="auto", choices=(*RUNTIME_CHOICES, "fake"),
                   help="which runtime loads it (fake: edgert.testing.fake_tensorrt)")
    p.add_argument("--sha256", metavar="HEX", help="verify the file's SHA-256 before loading")
    p.add_argument("--hmac-key-file", metavar="PATH", type=Path,
                   help="verify the HMAC-SHA256 in MODEL.sig with the key in this file")
    p.add_argument("--allow-host-code", action="store_true",
                   help="let a version-compatible plan's embedded runtime run (trusted plans)")
    p.set_defaults(func=_run)


# What a session does with each output (``edgert inspect``'s "session" column).
POOLED = "pooled"
LEARNED = ("allocated per run until its input shapes repeat, then pooled "
           "(per run always if its size follows the data)")
DATA_DEPENDENT = "data-dependent: allocated per run (output allocator, no CUDA graphs)"
STRINGS = "allocated per run (strings)"
ECHO = "copied from the input of the same name"


def _output_plan(t: Any, ctx: Any, inputs: set[str], resolved: bool) -> str:
    if t.name in inputs:
        return ECHO
    if t.dtype.kind == "O":
        return STRINGS
    follows = getattr(ctx, "shape_follows_inputs", None)
    if callable(follows):  # ONNX Runtime: declared dimensions say it
        return POOLED if follows(t.name) else LEARNED
    return POOLED if resolved else DATA_DEPENDENT


def _dims(t: Any) -> list[int | str]:
    """The shape with the model's dimension names where it has them (Polygraphy does too)."""
    if t.unknown_rank:
        return ["..."]
    names = t.dim_names or ("",) * len(t.shape)
    return [n if n and d < 0 else d for d, n in zip(t.shape, names, strict=True)]


def _tensor_rows(engine: Any) -> list[dict[str, Any]]:
    """Tensors with byte sizes; dynamic shapes are sized at their profile's max."""
    max_shapes: dict[str, tuple[int, ...]] = {}
    plans: dict[str, str] = {}
    inputs = {t.name for t in engine.inputs}
    try:
        with engine.create_context() as ctx:
            for t in engine.inputs:
                if t.is_dynamic and t.profiles:
                    ctx.set_input_shape(t.name, t.profiles[0].max)
            for t in engine.tensors:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(t.name))
                max_shapes[t.name] = shape
                if not t.is_input:
                    resolved = -1 not in shape
                    plans[t.name] = _output_plan(t, ctx, inputs, resolved)
    except Exception:  # sizes are a courtesy; the description stands without them
        max_shapes = {}
    rows = []
    for t in engine.tensors:
        shape = max_shapes.get(t.name, t.shape)
        known = -1 not in shape and not t.unknown_rank
        rows.append({
            "name": t.name, "mode": t.mode.value, "dtype": t.dtype.name,
            "trt_dtype": t.trt_dtype_name, "shape": list(t.shape), "dims": _dims(t),
            "unknown_rank": t.unknown_rank, "optional": t.optional,
            "location": t.location.value,
            "profiles": [{"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                         for p in t.profiles],
            "max_shape": list(shape) if known else None,
            "max_bytes": t.nbytes(shape) if known else None,
            "session": plans.get(t.name) if not t.is_input else None,
        })
    return rows


def _header_dict(header: Any) -> dict[str, Any]:
    if header.format.value == "onnx":
        return {"ir_version": header.onnx_ir_version,
                "opsets": {d or "ai.onnx": v for d, v in header.onnx_opsets},
                "producer": header.onnx_producer}
    return {"trt_version": header.trt_version_str,
            "serialization_tag": header.plan_serialization_tag, "fake_plan": header.fake_plan}


def inspect_model(model: str | Path, *, runtime: str = "auto", sha256: str | None = None,
                  hmac_key: bytes | str | Path | None = None,
                  allow_host_code: bool = False) -> dict[str, Any]:
    """Describe a model as a JSON-ready dict (what ``edgert inspect --json`` prints).

    The file is read once: the SHA-256 printed is that of the very bytes that were verified and
    loaded (``hmac_key`` may be a key file's path).

    A TensorRT plan that cannot be deserialized here (no CUDA device, runtime not installed) is
    described from its header, with ``loaded`` False and the reason in ``not_loaded``.

    Raises:
        EdgeRTError: Unreadable or malformed file, integrity failure, or a runtime that rejects
            the model (each a specific subclass).
    """
    from edgert import models
    from edgert.engine import Engine
    from edgert.engine._source import read_source, sniff
    from edgert.errors import NotSupportedError

    path = models.bundled_model_path() if str(model) == "bundled" else Path(model)
    src = read_source(path)  # the one read: hashed, sniffed, verified and loaded below
    header = sniff(src.data, src.label)
    report: dict[str, Any] = {
        "model": str(path), "format": header.format.value, "size_bytes": header.size_bytes,
        "sha256": hashlib.sha256(src.data).hexdigest(), "header": _header_dict(header),
        "integrity": "unchecked", "loaded": False, "not_loaded": None,
    }
    trt_module: ModuleType | None = None
    if runtime == "fake":
        trt_module, runtime = fake_tensorrt_module(), "auto"
    try:
        engine = Engine.load(src, runtime=runtime, sha256=sha256, hmac_key=hmac_key,
                             allow_host_code=allow_host_code, trt_module=trt_module)
    except NotSupportedError as err:
        if header.format.value != "tensorrt-plan":
            raise
        # Integrity was checked before the runtime was refused, so a pinned digest did match.
        report["integrity"] = "verified" if sha256 or hmac_key else "unchecked"
        # "cannot deserialize TensorRT plan X: no CUDA device (...)" -> "no CUDA device (...)"
        reason = err.message
        if reason.startswith("cannot deserialize TensorRT plan"):
            reason = reason.split(": ", 1)[-1]
        report["not_loaded"] = reason
        return report
    with engine:
        report.update({
            "integrity": engine.integrity.value, "loaded": True,
            "runtime": {"flavour": engine.flavour.value, "module": engine.runtime_module,
                        "version": engine.runtime_version},
            "placement": engine.placement.value, "num_profiles": engine.num_profiles,
            "device_memory_bytes": engine.device_memory_bytes,
            "tensors": _tensor_rows(engine),
        })
    return report


def _fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _format_line(report: dict[str, Any]) -> str:
    h = report["header"]
    if report["format"] == "onnx":
        opsets = ", ".join(f"{d} {v}" for d, v in h["opsets"].items())
        producer = f"; producer {h['producer']}" if h["producer"] else ""
        return f"ONNX model (IR version {h['ir_version']}, opset {opsets}{producer})"
    built = f"built with TensorRT {h['trt_version']}" if h["trt_version"] else \
        f"serialization tag {h['serialization_tag']}"
    return f"TensorRT plan ({built}{', fake' if h['fake_plan'] else ''})"


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    integrity = {"unchecked": "not checked (pass --sha256 HEX or --hmac-key-file to verify)"}
    lines = [
        f"model      {report['model']}",
        f"format     {_format_line(report)}",
        f"size       {report['size_bytes']:,} bytes",
        f"sha256     {report['sha256']}",
        f"integrity  {integrity.get(report['integrity'], report['integrity'])}",
    ]
    if not report["loaded"]:
        kind = "TensorRT plan" if report["format"] == "tensorrt-plan" else "model"
        lines.append(f"status     {kind}, {report['size_bytes']:,} bytes, cannot deserialize: "
                     f"{report['not_loaded']}")
        return "\n".join(lines)
    rt = report["runtime"]
    memory = report["device_memory_bytes"]
    lines += [
        f"runtime    {rt['module']} {rt['version']} ({rt['flavour']}), tensors on the "
        f"{report['placement']}",
        (f"profiles   {report['num_profiles']}" if report["num_profiles"] or
         report["format"] == "tensorrt-plan" else
         "profiles   none (dynamic dimensions take any size a request gives)" if any(
             t["mode"] == "input" and (-1 in t["shape"] or t.get("unknown_rank"))
             for t in report["tensors"]) else
         "profiles   none (every input has a fixed shape)")
        + (f"; device memory per context {memory:,} bytes" if memory is not None else ""),
        "tensors",
    ]
    learned = False
    for t in report["tensors"]:
        size = (f"{t['max_bytes']:,} bytes at {_fmt_shape(t['max_shape'])}"
                if t["max_bytes"] is not None else "size set by each request"
                if t["mode"] == "input" else "size known after a run")
        optional = "  optional (has a default)" if t.get("optional") else ""
        lines.append(f"  {t['mode']:<6} {t['name']:<12} {t['dtype']} ({t['trt_dtype']})  "
                     f"{_fmt_shape(t.get('dims', t['shape']))}  {t['location']}  {size}"
                     f"{optional}")
        for i, p in enumerate(t["profiles"]):
            lines.append(f"         profile {i}: min {_fmt_shape(p['min'])}  opt "
                         f"{_fmt_shape(p['opt'])}  max {_fmt_shape(p['max'])}")
        if t.get("session"):
            lines.append(f"         session: {t['session']}")
            learned |= t["session"] == LEARNED
    if learned:
        lines.append("note       outputs whose sizes the model does not declare as fixed "
                     "numbers or as an input's dimension names (formulas, fresh names, none) "
                     "are sized by running: declare them so in the model to keep them pooled "
                     "from the first run")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from edgert.errors import EdgeRTError

    try:
        report = inspect_model(args.model, runtime=args.runtime, sha256=args.sha256,
                               hmac_key=args.hmac_key_file, allow_host_code=args.allow_host_code)
    except (EdgeRTError, OSError) as err:
        # The library names its parameters; a person typed flags. `inspect` has no flag for a
        # detached signature: it reads MODEL.sig, so say that instead of "pass signature=HEX".
        flags = FlagNames({"runtime": "--runtime", "sha256": "--sha256",
                           "hmac_key": "--hmac-key-file",
                           "allow_host_code": "--allow-host-code"})
        text = str(err).replace(", or pass signature=HEX", "").replace(
            "pass signature=HEX (the HMAC-SHA256 tag) along with the bytes",
            "write the HMAC-SHA256 tag (hex) into MODEL.sig")
        run_hint = ("check the path and that the file is readable" if isinstance(err, OSError)
                    else "`edgert inspect --help` lists the options")
        return report_error("edgert inspect", err, text=text, flags=flags,
                            usage_hint=_USAGE_HINT, run_hint=run_hint,
                            given=getattr(args, "given_flags", ()))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="edgert")
    register(_parser.add_subparsers(dest="command"))
    _args = _parser.parse_args(["inspect", *sys.argv[1:]])
    sys.exit(_args.func(_args))
