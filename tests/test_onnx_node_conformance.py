"""ONNX's backend node test cases: whatever raw ONNX Runtime gets right, edgert gets right too.

The cases are generated from the installed ``onnx`` package at test time and run in worker
processes (see ``tests/_onnx_cases.py``; ``python tests/_onnx_cases.py --report`` lists what fails,
grouped by error). Two variants: the models as declared, and with every input dimension symbolic
and the output shapes cleared. The rule, per variant:

* every case raw ORT passes (its outputs match the case's expected outputs with onnx's own
  check and tolerances) and whose graph inputs/outputs are tensors, edgert passes too, returning
  the same outputs as raw ORT. Raw ORT is ``InferenceSession.run``, or, for the element types
  its Python API cannot carry (bfloat16, float8, 4- and 2-bit), ORT run on OrtValues written and
  read as bytes: ORT runs those, so edgert must too;
* wherever edgert returns outputs, they are the expected ones or ORT's: a different answer fails
  the suite whatever ORT did; and whatever edgert refuses, it refuses with an EdgeRTError.

Nothing is skipped. The counts are printed and written to ``results.json`` in the pytest tmp dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import _onnx_cases as cases  # noqa: E402 - after the importorskips


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    work = tmp_path_factory.mktemp("onnx-node-cases")
    res = cases.run_suite(work)
    line = cases.summary_line(res)
    (work / "summary.txt").write_text(line + "\n")
    print(f"\n{line}\n(results: {work / 'results.json'})")
    return res


def _check(results: list[dict[str, Any]], variant: str) -> None:
    c = cases.counts(results)[variant]
    # The generator really produced the suite, and raw ORT really ran it.
    assert c["cases"] > 1000, c
    assert c["required"] > 1000, c
    bad = cases.failures(results, variant)
    if bad:
        pytest.fail(
            f"{len(bad)} ONNX node cases fail in the {variant} variant "
            f"({c['edgert_pass_of_required']} of the {c['required']} raw ORT passes with tensor "
            f"I/O pass through edgert); by error:\n{cases.describe(bad)}\n"
            f"{cases.summary_line(results)}", pytrace=False)


def test_declared_shapes(results: list[dict[str, Any]],
                         capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n" + cases.summary_line(results))
    _check(results, "declared")


def test_symbolic_shapes(results: list[dict[str, Any]]) -> None:
    _check(results, "symbolic")


# -- the harness itself ----------------------------------------------------------------------


def _model(dims: list[int | str]) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_make_symbolic_names_every_input_dim_and_clears_outputs() -> None:
    model = _model([2, "n", 3])
    sym = cases.make_symbolic(model)
    dims = sym.graph.input[0].type.tensor_type.shape.dim
    assert [d.WhichOneof("value") for d in dims] == ["dim_param"] * 3
    assert len({d.dim_param for d in dims}) == 3
    assert not sym.graph.output[0].type.tensor_type.HasField("shape")
    # The original is untouched.
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    scalar = cases.make_symbolic(_model([]))
    assert scalar.graph.input[0].type.tensor_type.HasField("shape")  # rank 0 stays rank 0
    assert len(scalar.graph.input[0].type.tensor_type.shape.dim) == 0


def test_compare_catches_wrong_values_shapes_and_dtypes() -> None:
    ref = [np.array([[1.0, 2.0]], np.float32)]
    assert cases.compare(ref, [ref[0].copy()], 1e-3, 1e-7) is None
    assert cases.compare(ref, [ref[0] + 1], 1e-3, 1e-7) is not None
    assert cases.compare(ref, [ref[0].reshape(2)], 1e-3, 1e-7) is not None
    assert cases.compare(ref, [ref[0].astype(np.float64)], 1e-3, 1e-7) is not None
    assert cases.compare(ref, [], 1e-3, 1e-7) is not None


def test_the_rule() -> None:
    def unit(name: str, ort: str, edgert: str, tensor_io: bool = True) -> dict[str, Any]:
        return {"name": name, "variant": "declared", "ort": ort, "edgert": edgert,
                "tensor_io": tensor_io, "edgert_error": "x"}

    units = [
        unit("ok", "pass", "pass"),
        unit("refused", "pass", "error"),  # ORT passes, edgert must too
        unit("wrong", "pass", "differs"),
        unit("ort_refuses", "error", "error"),  # not required
        unit("ort_wrong_same", "fail", "same-as-ort"),  # not required
        unit("ort_wrong_other", "fail", "differs"),  # a different answer: always a failure
        unit("stray", "error", "stray-error"),  # not an EdgeRTError: always a failure
        unit("sequence", "pass", "error", tensor_io=False),  # not a tensor model
        {**unit("bf16_refused", "error", "error"), "ort_raw": "pass"},  # ORT runs it: required
        {**unit("bf16_ok", "error", "pass"), "ort_raw": "pass"},
    ]
    assert [r["name"] for r in cases.failures(units, "declared")] == [
        "refused", "wrong", "ort_wrong_other", "stray", "bf16_refused"]
    assert cases.failures(units, "symbolic") == []
    c = cases.counts(units)["declared"]
    assert (c["cases"], c["ort_pass"], c["ort_raw_pass"], c["required"],
            c["edgert_pass_of_required"]) == (10, 4, 2, 5, 2)


@pytest.mark.parametrize("elem", ["BFLOAT16", "FLOAT8E4M3FN", "INT4", "UINT4"])
def test_raw_ort_carries_the_dtypes_run_cannot(elem: str) -> None:
    # Cast float -> elem -> float, and elem out: ORT's own answers, read and written as bytes.
    import ml_dtypes
    from onnx import TensorProto, helper

    t = getattr(TensorProto, elem)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])
    q = helper.make_tensor_value_info("q", t, [5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    back = helper.make_tensor_value_info("back", TensorProto.FLOAT, [5])
    inp = helper.make_tensor_value_info("q_in", t, [5])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["q"], to=t),
         helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["q_in"], ["back"], to=TensorProto.FLOAT)],
        "g", [x, inp], [q, y, back])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    dtype = {"BFLOAT16": ml_dtypes.bfloat16, "FLOAT8E4M3FN": ml_dtypes.float8_e4m3fn,
             "INT4": ml_dtypes.int4, "UINT4": ml_dtypes.uint4}[elem]
    xv = np.array([0, 1, 2, 3, 5], np.float32)  # exact in every one of these types
    qv = np.array([1, 2, 3, 4, 7], np.float32).astype(dtype)
    [[q_out, y_out, back_out]] = cases._run_ort_raw(
        model, model.SerializeToString(), [([xv, qv], [])])
    assert q_out.dtype == dtype
    np.testing.assert_array_equal(q_out.astype(np.float32), xv)
    np.testing.assert_array_equal(y_out, xv)
    np.testing.assert_array_equal(back_out, qv.astype(np.float32))


def _write_case(case_dir: Path, name: str) -> None:
    import pickle

    x = np.array([[-1.0, 2.0]], np.float32)
    case_dir.mkdir(parents=True, exist_ok=True)
    payload = {"model": _model([1, 2]).SerializeToString(),
               "data_sets": [([x], [np.maximum(x, 0)])], "rtol": 1e-3, "atol": 1e-7}
    (case_dir / f"{name}.pkl").write_bytes(pickle.dumps(payload))


def test_a_crash_or_a_hang_costs_one_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["test_a", "test_b", "test_c"]
    for n in names:
        _write_case(tmp_path, n)
    monkeypatch.setenv("EDGERT_CONF_FAULT", "test_a:declared:crash")
    res = {(r["name"], r["variant"]): r for r in cases.run_all(tmp_path, names, jobs=2)}
    assert len(res) == 6
    crashed = res["test_a", "declared"]
    assert crashed["ort"] == "pass"  # ORT's verdict, reported before edgert ran, survives
    assert crashed["edgert"] == "error"
    assert "exited with 70" in crashed["edgert_error"]
    assert all(r["edgert"] == "pass" for k, r in res.items() if k != ("test_a", "declared"))
    assert cases.failures(res.values(), "declared") == [crashed]

    monkeypatch.setenv("EDGERT_CONF_FAULT", "test_b:symbolic:hang")
    res = {(r["name"], r["variant"]): r
           for r in cases.run_all(tmp_path, names, jobs=2, timeout_s=5)}
    assert "timed out" in res["test_b", "symbolic"]["edgert_error"]
    assert all(r["edgert"] == "pass" for k, r in res.items() if k != ("test_b", "symbolic"))


def test_the_report_runs_standalone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = cases.main(["--report", "-k", "test_relu", "-j", "1", "--json", str(out)])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    declared = [r for r in data["results"] if r["variant"] == "declared"]
    assert declared
    assert all("test_relu" in r["name"] for r in declared)
    assert f"ONNX node conformance: declared: {len(declared)} cases" in text
    assert {r["variant"] for r in data["results"]} == {"declared", "symbolic"}
    assert rc == (1 if any(cases.failures(data["results"], v) for v in cases.VARIANTS) else 0)


def test_units_left_when_the_budget_runs_out_are_failures(tmp_path: Path) -> None:
    names = ["test_a", "test_b", "test_c"]
    for n in names:
        _write_case(tmp_path, n)
    res = cases.run_all(tmp_path, names, jobs=1, budget_s=0)
    assert len(res) == 6
    not_run = [r for r in res if "budget" in r.get("harness_error", "")]
    assert len(not_run) == 5  # the one unit in flight finished
    assert len(cases.failures(res, "declared")) + len(cases.failures(res, "symbolic")) == 5
