"""`edgert inspect`: text and JSON reports, header-only description without a GPU, exit codes."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
from pathlib import Path

import pytest

import edgert.cuda
from edgert import models
from edgert.cli import _inspect
from edgert.testing import fake_tensorrt as ft


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="edgert")
    _inspect.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inspect", *argv])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_bundled_model_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["bundled"], capsys)
    assert rc == 0
    digest = hashlib.sha256(models.bundled_model_path().read_bytes()).hexdigest()
    for text in ("ONNX model (IR version 8, opset ai.onnx 13", f"sha256     {digest}",
                 "not checked", "onnxruntime", "tensors on the host",
                 "input  obs", "float32 (FLOAT)  [batch, 48]", "49,152 bytes at [256, 48]",
                 "profile 0: min [1, 48]  opt [1, 48]  max [256, 48]",
                 "output actions", "12,288 bytes at [256, 12]"):
        assert text in out, text


def test_bundled_model_json_with_digest(capsys: pytest.CaptureFixture[str]) -> None:
    digest = hashlib.sha256(models.bundled_model_path().read_bytes()).hexdigest()
    rc, out, _ = _run([str(models.bundled_model_path()), "--json", "--sha256", digest], capsys)
    assert rc == 0
    report = json.loads(out)
    assert report["integrity"] == "sha256-verified"
    assert report["loaded"]
    assert report["runtime"]["flavour"] == "onnxruntime"
    assert [t["name"] for t in report["tensors"]] == ["obs", "actions"]
    assert report["tensors"][1]["max_bytes"] == 256 * 12 * 4
    assert report["tensors"][0]["dims"] == ["batch", 48]
    assert report["tensors"][1]["session"] == _inspect.POOLED


def test_what_a_session_does_with_each_output(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["tied"]), helper.make_node("NonZero", ["x"], ["nz"]),
         helper.make_node("ReduceSum", ["u"], ["r"], keepdims=1)], "g",
        [vi("x", TensorProto.FLOAT, ["batch", 4]), vi("u", TensorProto.FLOAT, None)],
        [vi("tied", TensorProto.FLOAT, ["batch", 4]), vi("nz", TensorProto.INT64, [2, "k"]),
         vi("r", TensorProto.FLOAT, None), vi("x", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    rc, out, _ = _run([str(path), "--json"], capsys)
    assert rc == 0
    rows = {(t["mode"], t["name"]): t for t in json.loads(out)["tensors"]}
    assert rows[("input", "x")]["dims"] == ["batch", 4]
    assert rows[("input", "u")]["unknown_rank"]
    assert rows[("output", "tied")]["session"] == _inspect.POOLED
    assert rows[("output", "nz")]["session"] == _inspect.LEARNED
    assert rows[("output", "nz")]["dims"] == [2, "k"]
    assert rows[("output", "r")]["session"] == _inspect.LEARNED
    assert rows[("output", "x")]["session"] == _inspect.ECHO
    rc, out, _ = _run([str(path)], capsys)
    assert "[batch, 4]" in out
    assert "session: " + _inspect.LEARNED in out
    assert "declare them so in the model" in out  # the note says the way out
    assert "profiles   none" in out  # an ONNX model has no profiles, and that is fine
    assert "size set by each request" in out  # a dynamic input: not "known after a run"


def test_data_dependent_tensorrt_output(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "nz.plan"
    plan.write_bytes(ft.make_plan(inputs=[ft.FakeTensor("x", "FLOAT", (8,))],
                                  outputs=[ft.FakeTensor("idx", "INT32", (-1,), max_shape=(8,))],
                                  function="nonzero"))
    rc, out, _ = _run([str(plan), "--runtime", "fake", "--json"], capsys)
    assert rc == 0
    assert json.loads(out)["tensors"][1]["session"] == _inspect.DATA_DEPENDENT


def test_plan_without_gpu_is_described_from_its_header(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: False)
    monkeypatch.setattr(edgert.cuda, "unavailable_reason", lambda: "no NVIDIA driver")
    plan = tmp_path / "policy.plan"
    plan.write_bytes(ft.bundled_policy_plan(version="10.3.0.30"))
    size = plan.stat().st_size
    pytest.importorskip("tensorrt_lean")
    rc, out, _ = _run([str(plan), "--runtime", "lean"], capsys)
    assert rc == 0
    assert "built with TensorRT 10.3.0.30" in out
    assert f"TensorRT plan, {size:,} bytes, cannot deserialize: no CUDA device" in out
    rc, out, _ = _run([str(plan), "--runtime", "lean", "--json"], capsys)
    report = json.loads(out)
    assert rc == 0
    assert not report["loaded"]
    assert "no CUDA device" in report["not_loaded"]
    assert report["header"]["trt_version"] == "10.3.0.30"


def test_plan_with_the_fake_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "policy.plan"
    plan.write_bytes(ft.bundled_policy_plan())
    key = tmp_path / "key"
    key.write_bytes(b"secret\n")
    (tmp_path / "policy.plan.sig").write_text(
        hmac.new(b"secret", plan.read_bytes(), "sha256").hexdigest())
    rc, out, _ = _run([str(plan), "--runtime", "fake", "--hmac-key-file", str(key)], capsys)
    assert rc == 0
    assert "hmac-verified" in out
    assert "device memory per context 524,288 bytes" in out
    assert "tensors on the host" in out  # the fake computes on host memory


@pytest.mark.parametrize(("argv", "text", "status"), [
    (["missing.plan"], "does not exist", 1),
    (["bundled", "--sha256", "0" * 64], "SHA-256", 1),
    (["bundled", "--sha256", "xyz"], "64 hexadecimal", 2),  # a malformed flag: usage error
])
def test_real_errors_exit_non_zero(argv: list[str], text: str, status: int,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(argv, capsys)
    assert rc == status
    assert out == ""
    assert text in err
    assert "Hint:" in err


def test_version_mismatch_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "old.plan"
    plan.write_bytes(ft.bundled_policy_plan(version="8.6.1.6"))
    rc, _, err = _run([str(plan), "--runtime", "fake"], capsys)
    assert rc == 1
    assert "built with TensorRT 8.6.1.6" in err
