"""ONNX's backend node test cases through raw ONNX Runtime and through edgert.

The cases come from the installed ``onnx`` package (``onnx.backend.test.case.node``), generated at
run time and written to a scratch directory, one pickle per case; nothing is committed. Each case
runs in two variants: ``declared`` (the model as ONNX wrote it) and ``symbolic`` (every input
dimension replaced by a fresh ``dim_param``, the graph outputs' shapes cleared).

Every (case, variant) runs in a worker subprocess, so that a crash or a hang costs one case, not
the run: the parent hands out one unit at a time, kills a worker that overruns the per-case
timeout and starts a new one. A worker reports twice per unit: once after raw ORT (so a crash in
ORT is told apart from a crash in edgert), once at the end.

Standalone: ``python tests/_onnx_cases.py --report [-j N] [-k SUBSTRING] [--json PATH]`` prints the
counts and the failing cases grouped by error, which is what to iterate on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("declared", "symbolic")
CASE_TIMEOUT_S = 60.0  # one unit takes milliseconds; a minute is a hang, even on a busy CI core
SUITE_BUDGET_S = 1200.0  # past this, the units left are failures, so CI's 90 minutes hold
MAX_LOST_IN_A_ROW = 8  # workers dying on every unit: the harness is broken, stop
ROOT = Path(__file__).resolve().parents[1]


# -- generating the cases ---------------------------------------------------------------------


def generate(out_dir: Path, name_filter: str = "") -> list[str]:
    """Write every node test case of the installed onnx to ``out_dir/<name>.pkl``.

    Returns:
        The case names, sorted.
    """
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = node_cases.collect_testcases()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for case in cases:
        if name_filter and name_filter not in case.name:
            continue
        assert case.model is not None, case.name
        assert case.data_sets is not None, case.name
        payload = {"model": case.model.SerializeToString(), "data_sets": case.data_sets,
                   "rtol": case.rtol, "atol": case.atol}
        with open(out_dir / f"{case.name}.pkl", "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        names.append(case.name)
    return sorted(names)


def make_symbolic(model: Any) -> Any:
    """A copy of ``model`` with every input dimension symbolic and no output shapes."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, vi in enumerate(m.graph.input):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for j, dim in enumerate(vi.type.tensor_type.shape.dim):
            dim.Clear()
            dim.dim_param = f"edgert_conf_in{i}_d{j}"
    for vo in m.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    return m


# -- one unit, inside a worker ----------------------------------------------------------------


def _as_value(value: Any) -> Any:
    """A data-set entry as ORT's Python API takes and returns it (TensorProto -> ndarray)."""
    from onnx import TensorProto, numpy_helper

    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_as_value(v) for v in value]
    if isinstance(value, np.generic):  # a numpy scalar: what onnx writes as a 0-d tensor
        return np.asarray(value)
    return value


def compare(expected: Sequence[Any], got: Sequence[Any], rtol: float, atol: float) -> str | None:
    """ONNX's own output check (``Runner.assert_similar_outputs``); the failure text or None."""
    from onnx.backend.test.runner import Runner

    try:
        Runner.assert_similar_outputs(list(expected), list(got), rtol, atol)
    except (AssertionError, TypeError, ValueError) as err:
        return _short(f"{type(err).__name__}: {err}")
    return None


def _short(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _error(err: BaseException) -> str:
    return _short(f"{type(err).__name__}: {err}")


def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # The same threading edgert's OnnxRuntimeOptions default to, so results agree bit for bit.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _run_ort(model_bytes: bytes, data_sets: list[tuple[list[Any], list[Any]]],
             input_names: list[str]) -> list[list[Any]]:
    sess = _ort_session(model_bytes)
    out_names = [o.name for o in sess.get_outputs()]
    results = []
    for inputs, _ in data_sets:
        feed = dict(zip(input_names, inputs, strict=False))
        results.append(list(sess.run(out_names, feed)))
    return results


# Element types numpy has no native dtype for (ml_dtypes gives them one): ORT's Python ``run()``
# can neither take nor return them, but ORT runs them. Bits per element.
_RAW_BITS = {"BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8,
             "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4,
             "INT2": 2, "UINT2": 2}


def _raw_bits(elem_type: int) -> int | None:
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() \
        else ""
    return _RAW_BITS.get(name)


def _elem_types(values: Any) -> list[int]:
    return [vi.type.tensor_type.elem_type for vi in values]


def _run_ort_raw(model: Any, model_bytes: bytes,
                 data_sets: list[tuple[list[Any], list[Any]]]) -> list[list[Any]]:
    """Raw ORT on OrtValues written and read as bytes, for the element types ``run()`` lacks.

    The bytes are ONNX's own little-endian layout (``numpy_helper``), which is ORT's in memory.
    """
    import ctypes
    import math

    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    sess = _ort_session(model_bytes)
    in_types = _elem_types(model.graph.input)
    out_types = _elem_types(model.graph.output)
    out_names = [vo.name for vo in model.graph.output]
    results = []
    for inputs, _ in data_sets:
        feed = {}
        for vi, t, value in zip(model.graph.input, in_types, inputs, strict=False):
            if _raw_bits(t) is None:
                feed[vi.name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
                continue
            raw = numpy_helper.from_array(value).raw_data
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), t)
            if raw:
                ctypes.memmove(ov.data_ptr(), raw, len(raw))
            feed[vi.name] = ov
        outs = []
        for t, ov in zip(out_types, sess.run_with_ort_values(out_names, feed), strict=True):
            bits = _raw_bits(t)
            if bits is None:
                outs.append(ov.numpy())
                continue
            shape = list(ov.shape())
            nbytes = (math.prod(shape) * bits + 7) // 8
            raw = ctypes.string_at(ov.data_ptr(), nbytes) if nbytes else b""
            outs.append(numpy_helper.to_array(
                TensorProto(data_type=t, dims=shape, raw_data=raw)))
        results.append(outs)
    return results


def _run_edgert(model_bytes: bytes, data_sets: list[tuple[list[Any], list[Any]]],
                input_names: list[str], output_names: list[str]) -> list[list[Any]]:
    from edgert import Engine, InferenceSession

    results = []
    with Engine.load(model_bytes) as engine, InferenceSession(engine, device="host") as sess:
        for inputs, _ in data_sets:
            feed = dict(zip(input_names, inputs, strict=False))
            out = sess.infer(feed)
            # Copied at once: views are reused by later requests.
            results.append([np.array(out[name], copy=True) for name in output_names])
    return results


def run_unit(case_dir: Path, name: str, variant: str,
             report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run one case in one variant; ``report`` receives the ORT stage before edgert starts."""
    import onnx

    with open(case_dir / f"{name}.pkl", "rb") as f:
        case = pickle.load(f)
    model = onnx.load_from_string(case["model"])
    if variant == "symbolic":
        model = make_symbolic(model)
    model_bytes = model.SerializeToString()
    rtol, atol = case["rtol"], case["atol"]
    data_sets = [([_as_value(v) for v in ins], [_as_value(v) for v in outs])
                 for ins, outs in case["data_sets"]]
    input_names = [vi.name for vi in model.graph.input]
    output_names = [vo.name for vo in model.graph.output]
    # Sequence, map and optional graph inputs/outputs are not tensors: edgert is a tensor runtime,
    # so those cases are counted apart and not required (a wrong answer still fails the rule).
    tensor_io = all(vi.type.HasField("tensor_type")
                    for vi in (*model.graph.input, *model.graph.output))
    res: dict[str, Any] = {"name": name, "variant": variant, "tensor_io": tensor_io}

    ort_outs: list[list[Any]] | None = None
    try:
        ort_outs = _run_ort(model_bytes, data_sets, input_names)
        errs = [compare(exp, got, rtol, atol) for (_, exp), got in zip(data_sets, ort_outs,
                                                                       strict=True)]
        bad = [e for e in errs if e]
        res["ort"] = "fail" if bad else "pass"
        res["ort_error"] = bad[0] if bad else None
    except Exception as err:  # ORT refusing the model is a finding, not a harness failure
        res["ort"], res["ort_error"] = "error", _error(err)
    raw_types = any(_raw_bits(t) for t in _elem_types((*model.graph.input, *model.graph.output)))
    if res["ort"] != "pass" and tensor_io and raw_types:
        # What ORT computes where its Python API cannot carry the dtype: the reference edgert's
        # raw-memory binding is held to.
        try:
            ort_outs = _run_ort_raw(model, model_bytes, data_sets)
            errs = [compare(exp, got, rtol, atol)
                    for (_, exp), got in zip(data_sets, ort_outs, strict=True)]
            bad = [e for e in errs if e]
            res["ort_raw"] = "fail" if bad else "pass"
            res["ort_raw_error"] = bad[0] if bad else None
        except Exception as err:
            res["ort_raw"], res["ort_raw_error"] = "error", _error(err)
    report({**res, "stage": "ort"})
    _fault(name, variant)

    try:
        ed_outs = _run_edgert(model_bytes, data_sets, input_names, output_names)
    except Exception as err:
        from edgert.errors import EdgeRTError

        res["edgert"] = "error"
        res["edgert_error"] = _error(err)
        if not isinstance(err, EdgeRTError):
            # Every refusal must be an EdgeRTError (with ORT's words where ORT refused): another
            # exception type is a bug of its own, whatever ORT did.
            res["edgert"] = "stray-error"
            res["edgert_error"] += " | " + _short(traceback.format_exc(limit=-3), 400)
        return res
    vs_expected = [compare(exp, got, rtol, atol)
                   for (_, exp), got in zip(data_sets, ed_outs, strict=True)]
    vs_ort = ([compare(ref, got, rtol, atol) for ref, got in zip(ort_outs, ed_outs, strict=True)]
              if ort_outs is not None else [None])
    bad_exp = next((e for e in vs_expected if e), None)
    bad_ort = next((e for e in vs_ort if e), None)
    if res["ort"] == "pass" or res.get("ort_raw") == "pass":
        # Both must hold: the right answer, and the same answer as ORT.
        res["edgert"] = "differs" if (bad_exp or bad_ort) else "pass"
        res["edgert_error"] = bad_ort or bad_exp
    elif bad_exp is None:
        res["edgert"], res["edgert_error"] = "pass", None  # right where ORT is not
    elif ort_outs is not None and bad_ort is None:
        res["edgert"], res["edgert_error"] = "same-as-ort", None  # ORT's (wrong) answer, too
    else:
        res["edgert"], res["edgert_error"] = "differs", bad_ort or bad_exp
    return res


def _fault(name: str, variant: str) -> None:
    """The harness's own test hook: EDGERT_CONF_FAULT=name:variant:crash|hang."""
    fault = os.environ.get("EDGERT_CONF_FAULT", "")
    if fault.startswith(f"{name}:{variant}:"):
        if fault.endswith(":crash"):
            os._exit(70)
        time.sleep(3600)


def _worker(case_dir: Path) -> int:
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    warnings.simplefilter("ignore")

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    for line in sys.stdin:
        name, variant = line.split()
        try:
            res = run_unit(case_dir, name, variant, send)
        except Exception as err:
            res = {"name": name, "variant": variant, "harness_error": _error(err)}
        send({**res, "stage": "done"})
    return 0


# -- the pool, in the parent ------------------------------------------------------------------


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    buf: bytes = b""
    unit: tuple[str, str] | None = None
    deadline: float = 0.0
    partial: dict[str, Any] = field(default_factory=dict)


def run_all(case_dir: Path, names: Sequence[str], *, variants: Sequence[str] = VARIANTS,
            jobs: int | None = None, timeout_s: float = CASE_TIMEOUT_S,
            budget_s: float = SUITE_BUDGET_S,
            progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Run every (case, variant) in ``jobs`` worker processes; one result dict per unit.

    Raises:
        RuntimeError: Workers died on MAX_LOST_IN_A_ROW units in a row (they cannot start).
    """
    t_end = time.monotonic() + budget_s
    lost_in_a_row = 0
    todo = collections.deque((n, v) for n in names for v in variants)
    total = len(todo)
    jobs = max(1, min(jobs or os.cpu_count() or 2, total or 1))
    results: list[dict[str, Any]] = []
    sel = selectors.DefaultSelector()
    log = open(case_dir / "workers.log", "ab")  # noqa: SIM115 - closed below
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def start() -> _Worker:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                 str(case_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, env=env, cwd=ROOT)
        w = _Worker(proc)
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ, w)
        return w

    def stop(w: _Worker) -> None:
        assert w.proc.stdout is not None
        sel.unregister(w.proc.stdout)
        w.proc.kill()
        w.proc.wait()
        w.proc.stdout.close()
        if w.proc.stdin is not None:
            w.proc.stdin.close()

    def feed(w: _Worker) -> None:
        if not todo:
            w.unit = None
            return
        w.unit = todo.popleft()
        w.partial = {}
        w.deadline = time.monotonic() + timeout_s
        assert w.proc.stdin is not None
        try:
            w.proc.stdin.write(f"{w.unit[0]} {w.unit[1]}\n".encode())
            w.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died between units: its end of file reaches the loop, which restarts it

    def lost(w: _Worker, why: str) -> None:
        nonlocal lost_in_a_row
        lost_in_a_row += 1
        if lost_in_a_row >= MAX_LOST_IN_A_ROW:
            tail = (case_dir / "workers.log").read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{lost_in_a_row} units in a row lost their worker ({why}); "
                               f"the worker log ends with:\n{tail}")
        assert w.unit is not None
        name, variant = w.unit
        res = {"name": name, "variant": variant, **w.partial}
        res.pop("stage", None)
        if "ort" not in res:  # died inside raw ORT: ORT's failure, not edgert's
            res.update(ort="error", ort_error=f"worker {why} in ORT")
        res.update(edgert="error", edgert_error=f"worker {why} (crash or hang)")
        results.append(res)

    workers = [start() for _ in range(jobs)]
    try:
        for w in workers:
            feed(w)
        while any(w.unit for w in workers):
            now = time.monotonic()
            wait = max(0.0, min(w.deadline for w in workers if w.unit) - now)
            for key, _ in sel.select(timeout=wait):
                w = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:  # the worker died
                    lost(w, f"exited with {w.proc.wait()}")
                    stop(w)
                    workers[workers.index(w)] = w = start()
                    feed(w)
                    continue
                w.buf += chunk
                while b"\n" in w.buf:
                    line, w.buf = w.buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("stage") == "ort":
                        w.partial = msg
                        continue
                    msg.pop("stage", None)
                    results.append(msg)
                    lost_in_a_row = 0
                    if progress is not None:
                        progress(len(results), total)
                    feed(w)
            now = time.monotonic()
            if now > t_end and todo:
                while todo:
                    name, variant = todo.popleft()
                    results.append({"name": name, "variant": variant, "harness_error":
                                    f"not run: the suite's {budget_s:.0f} s budget ran out"})
            for i, w in enumerate(workers):
                if w.unit and now > w.deadline:
                    lost(w, f"timed out after {timeout_s:.0f} s")
                    stop(w)
                    workers[i] = nw = start()
                    feed(nw)
    finally:
        for w in workers:
            stop(w)
        sel.close()
        log.close()
    return sorted(results, key=lambda r: (r["name"], r["variant"]))


# -- judging and reporting --------------------------------------------------------------------


def required(r: dict[str, Any]) -> bool:
    """Whether edgert must pass this unit: raw ORT passes it (through ``run()``, or through raw
    memory for the dtypes ``run()`` cannot carry) and its graph inputs/outputs are tensors."""
    return ((r.get("ort") == "pass" or r.get("ort_raw") == "pass")
            and bool(r.get("tensor_io", True)))


def failures(results: Iterable[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    """The units that break the rule in ``variant``.

    The rule: where raw ORT gets the expected outputs, edgert does too, with ORT's own answer;
    wherever edgert returns outputs that are neither the expected ones nor ORT's, or raises
    anything but an EdgeRTError, that is a failure whatever ORT did. Cases ORT fails, and cases
    whose graph inputs or outputs are sequences, maps or optionals, are otherwise not required.
    """
    bad = []
    for r in results:
        if r["variant"] != variant:
            continue
        if ("harness_error" in r or r.get("edgert") in ("differs", "stray-error")
                or (required(r) and r.get("edgert") != "pass")):
            bad.append(r)
    return bad


def counts(results: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per variant: cases, ORT passes, edgert passes (of all, and of ORT's), rule failures."""
    results = list(results)
    out = {}
    for variant in VARIANTS:
        rs = [r for r in results if r["variant"] == variant]
        if not rs:
            continue
        out[variant] = {
            "cases": len(rs),
            "ort_pass": sum(r.get("ort") == "pass" for r in rs),
            "ort_raw_pass": sum(r.get("ort_raw") == "pass" for r in rs),
            "edgert_pass_of_ort_raw_pass": sum(r.get("ort_raw") == "pass"
                                               and r.get("edgert") == "pass" for r in rs),
            "non_tensor_io": sum(not r.get("tensor_io", True) for r in rs),
            "required": sum(required(r) for r in rs),
            "edgert_pass": sum(r.get("edgert") == "pass" for r in rs),
            "edgert_pass_of_required": sum(required(r) and r.get("edgert") == "pass"
                                           for r in rs),
            "failures": len(failures(rs, variant)),
        }
    return out


def summary_line(results: Iterable[dict[str, Any]]) -> str:
    parts = []
    for variant, c in counts(results).items():
        parts.append(f"{variant}: {c['cases']} cases, ORT passes {c['ort_pass']} through run() "
                     f"+ {c['ort_raw_pass']} through raw memory ({c['required']} with tensor I/O), "
                     f"edgert passes "
                     f"{c['edgert_pass_of_required']} of those ({c['edgert_pass']} in all), "
                     f"{c['failures']} failing")
    return "ONNX node conformance: " + "; ".join(parts)


def category(r: dict[str, Any]) -> str:
    """A failure's error with names and numbers taken out, so alike failures group together."""
    if "harness_error" in r:
        return "harness: " + r["harness_error"].split("\n", 1)[0][:120]
    text = " ".join((r.get("edgert_error") or "").split())
    # ORT's errors: keep its status and words, drop the node, source path and function.
    ort = re.search(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)", text)
    if ort:
        text = f"ORT {ort.group(1)}: {ort.group(2)}"
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\(.*?\)|\[.*?\]|\{.*?\}", "(…)", text)
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    status = r.get("edgert")
    return f"[{status}] {text[:160]}"


def describe(bad: Sequence[dict[str, Any]], max_names: int = 12) -> str:
    """The failures grouped by category: count, case names, one full error per group."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in bad:
        groups[category(r)].append(r)
    lines = []
    for cat, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        names = [r["name"] for r in rs]
        more = f" (+{len(names) - max_names} more)" if len(names) > max_names else ""
        lines.append(f"{len(rs):5d}  {cat}")
        lines.append(f"       cases: {', '.join(names[:max_names])}{more}")
        example = rs[0].get("harness_error") or rs[0].get("edgert_error")
        example = " ".join(str(example).split())
        example = " ".join(str(example).split())
        lines.append(f"       e.g. {rs[0]['name']}: {example}")
    return "\n".join(lines)


def run_suite(work_dir: Path, *, name_filter: str = "", jobs: int | None = None,
              variants: Sequence[str] = VARIANTS, timeout_s: float = CASE_TIMEOUT_S,
              progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Generate the cases into ``work_dir`` and run them all; writes ``results.json`` there."""
    case_dir = work_dir / "cases"
    names = generate(case_dir, name_filter)
    try:
        results = run_all(case_dir, names, variants=variants, jobs=jobs, timeout_s=timeout_s,
                          progress=progress)
    finally:
        if (case_dir / "workers.log").exists():
            (case_dir / "workers.log").replace(work_dir / "workers.log")
        shutil.rmtree(case_dir)  # the cases are regenerated each run; keep the verdicts only
    (work_dir / "results.json").write_text(json.dumps(
        {"counts": counts(results), "results": results}, indent=1))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--worker", metavar="CASE_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--report", action="store_true", help="run the cases and list the failures")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (CPU count)")
    ap.add_argument("-k", "--filter", default="", help="only cases whose name contains this")
    ap.add_argument("--variant", choices=VARIANTS, action="append", help="only this variant")
    ap.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--all", action="store_true", help="list every edgert failure, not only "
                    "the rule's (also cases ORT itself fails)")
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(Path(args.worker))
    if not args.report:
        ap.print_help()
        return 2

    def progress(done: int, total: int) -> None:
        if done % 200 == 0 or done == total:
            print(f"  {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgert-onnx-cases-") as tmp:
        results = run_suite(Path(tmp), name_filter=args.filter, jobs=args.jobs,
                            variants=args.variant or VARIANTS, timeout_s=args.timeout,
                            progress=progress)
    if args.json:
        args.json.write_text(json.dumps({"counts": counts(results), "results": results},
                                        indent=1))
    failing = 0
    for variant in args.variant or VARIANTS:
        bad = failures(results, variant)
        if args.all:
            bad = [r for r in results if r["variant"] == variant and r.get("edgert") != "pass"]
        failing += len(failures(results, variant))
        print(f"\n== {variant}: {len(bad)} failing")
        if bad:
            print(describe(bad, max_names=40))
        ort_bad = [r for r in results if r["variant"] == variant and not required(r)]
        print(f"   (raw ORT itself fails {len(ort_bad)}, or they are not tensor models: "
              "not required)")
    print("\n" + summary_line(results) + f"  [{time.monotonic() - t0:.0f} s]")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
