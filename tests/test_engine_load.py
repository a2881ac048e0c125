"""Engine.load on bad input and integrity checks: each failure a specific error with a hint."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from _fuzz import finishes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgert.cuda
from edgert import models
from edgert.engine import Engine, EngineFormat, IntegrityStatus, read_model_header
from edgert.errors import (
    EdgeRTError,
    EngineLoadError,
    IntegrityError,
    InvalidArgumentError,
    ModelFormatError,
    NotSupportedError,
    PermissionDeniedError,
    VersionMismatchError,
)
from edgert.testing import fake_tensorrt as ft

ONNX = models.bundled_model_path()
KEY = b"robot-fleet-signing-key"


def _plan_file(tmp_path: Path, data: bytes | None = None) -> Path:
    path = tmp_path / "policy.plan"
    path.write_bytes(ft.bundled_policy_plan() if data is None else data)
    return path


def _exact(info: pytest.ExceptionInfo[Any], cls: type[Exception]) -> EdgeRTError:
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    err = info.value
    assert isinstance(err, EdgeRTError)
    assert err.hint, "every load error says what to do next"
    return err


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError) as info:
        Engine.load(tmp_path / "nope.plan")
    err = _exact(info, EngineLoadError)
    assert "does not exist" in str(err)
    assert "nope.plan" in str(err)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="is a directory") as info:
        Engine.load(tmp_path)
    _exact(info, EngineLoadError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    path.chmod(0)
    with pytest.raises(PermissionDeniedError) as info:
        Engine.load(path)
    assert info.value.errno_value is not None


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"empty \(0 bytes\)") as info:
        Engine.load(_plan_file(tmp_path, b""))
    _exact(info, ModelFormatError)


def test_random_bytes(tmp_path: Path) -> None:
    data = bytes(range(7, 250)) * 4
    with pytest.raises(ModelFormatError, match="neither a TensorRT plan nor an ONNX") as info:
        Engine.load(_plan_file(tmp_path, data))
    _exact(info, ModelFormatError)


@pytest.mark.parametrize("cut", [1, 100, 20_000, 326_000])
def test_truncated_onnx(cut: int) -> None:
    data = ONNX.read_bytes()[:cut]
    with pytest.raises(ModelFormatError) as info:
        Engine.load(data)
    _exact(info, ModelFormatError)


def test_onnx_cut_after_its_graph_is_reported() -> None:
    data = ONNX.read_bytes()
    end = data.index(b"\x42\x04\x0a\x00\x10\x0d")  # opset_import: domain "", version 13
    with pytest.raises(ModelFormatError, match="without opset_import"):
        Engine.load(data[:end])


def test_truncated_plan() -> None:
    with pytest.raises(ModelFormatError, match="truncated") as info:
        Engine.load(ft.bundled_policy_plan()[:200], trt_module=ft)
    assert info.value.log_lines


def test_plan_behind_a_metadata_prefix() -> None:
    meta = b'{"author": "exporter"}'
    data = struct.pack("<I", len(meta)) + meta + ft.bundled_policy_plan()
    with pytest.raises(ModelFormatError, match="metadata prefix") as info:
        Engine.load(data, trt_module=ft)
    assert f"strip the first {4 + len(meta)} bytes" in (info.value.hint or "")


def test_plan_from_another_tensorrt_version(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, ft.bundled_policy_plan(version="8.6.1.6"))
    with pytest.raises(VersionMismatchError) as info:
        Engine.load(path, trt_module=ft)
    err = info.value
    assert err.path == str(path)
    assert "built with TensorRT 8.6.1.6" in str(err)


def test_plan_without_gpu_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgert.cuda, "is_available", lambda: False)
    module = ft.make_module()
    module.EDGERT_REQUIRES_CUDA = True  # type: ignore[attr-defined]
    with pytest.raises(NotSupportedError, match="no CUDA device") as info:
        Engine.load(ft.bundled_policy_plan(), trt_module=module)
    assert "edgert inspect" in (info.value.hint or "")


def test_onnx_ir_version_too_new() -> None:
    # The installed ONNX Runtime's IR limit moves with its releases (1.31 read 13, 1.32 reads 14):
    # use a version no release will read, and check that the error reports the real limit.
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(ONNX.read_bytes())
    model.ir_version = 1000
    with pytest.raises(VersionMismatchError, match="IR version 1000") as info:
        Engine.load(model.SerializeToString())
    err = info.value
    found = re.search(r"max supported IR version: (\d+)", err.log_lines[0])
    assert found is not None, err.log_lines
    limit = int(found.group(1))
    assert 8 <= limit < 1000
    assert f"model.ir_version = {limit}" in (err.hint or "")


def test_header_without_loading() -> None:
    header = read_model_header(ONNX)
    assert header.format is EngineFormat.ONNX
    assert header.onnx_ir_version == 8
    assert header.onnx_opsets == (("", 13),)
    assert header.onnx_producer == "edgert 1"
    plan = read_model_header(ft.bundled_policy_plan(version="10.3.0.30"))
    assert plan.trt_version_str == "10.3.0.30"
    assert plan.fake_plan


# -- integrity -------------------------------------------------------------------------------

def test_sha256_verified_before_loading(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for good in (digest, digest.upper(), f"sha256:{digest}", bytes.fromhex(digest)):
        with Engine.load(path, sha256=good, trt_module=ft) as engine:
            assert engine.integrity is IntegrityStatus.SHA256
    with pytest.raises(IntegrityError, match="expected 0000") as info:
        Engine.load(path, sha256="0" * 64, trt_module=ft)
    assert digest in str(info.value)
    _exact(info, IntegrityError)


def test_integrity_comes_before_parsing() -> None:
    for data in (b"", b"random bytes that are no model"):
        with pytest.raises(IntegrityError):
            Engine.load(data, sha256="1" * 64)


@pytest.mark.parametrize("bad", ["abc", "g" * 64, b"short", 12])
def test_malformed_digest(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="64 hexadecimal"):
        Engine.load(ONNX, sha256=bad)


def test_hmac_from_sidecar(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    tag = hmac.new(KEY, path.read_bytes(), "sha256").hexdigest()
    sidecar = tmp_path / "policy.plan.sig"
    with pytest.raises(IntegrityError, match="has no signature"):
        Engine.load(path, hmac_key=KEY, trt_module=ft)
    sidecar.write_text(tag + "  policy.plan\n")
    with Engine.load(path, hmac_key=KEY, trt_module=ft) as engine:
        assert engine.integrity is IntegrityStatus.HMAC
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Engine.load(path, hmac_key=KEY.decode(), sha256=digest, trt_module=ft) as engine:
        assert engine.integrity is IntegrityStatus.SHA256_AND_HMAC
    with pytest.raises(IntegrityError, match="does not match its signature") as info:
        Engine.load(path, hmac_key=b"another key", trt_module=ft)
    _exact(info, IntegrityError)
    sidecar.write_text("not hex")
    with pytest.raises(IntegrityError, match="does not hold"):
        Engine.load(path, hmac_key=KEY, trt_module=ft)


def test_hmac_for_bytes() -> None:
    data = ONNX.read_bytes()
    tag = hmac.new(KEY, data, "sha256").digest()
    with Engine.load(data, hmac_key=KEY, signature=tag) as engine:
        assert engine.integrity is IntegrityStatus.HMAC
    with pytest.raises(IntegrityError):
        Engine.load(data[:-1] + b"\x00", hmac_key=KEY, signature=tag.hex())
    with pytest.raises(InvalidArgumentError, match="no signature"):
        Engine.load(data, hmac_key=KEY)
    with pytest.raises(InvalidArgumentError, match="without hmac_key"):
        Engine.load(data, signature=tag)
    with pytest.raises(InvalidArgumentError, match="empty"):
        Engine.load(data, hmac_key=b"", signature=tag)


# -- fuzzing: whatever the bytes, the loader raises an EdgeRTError or loads ------------------

_fuzz = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_edgert_errors(data: bytes) -> None:
    for kw in ({}, {"trt_module": ft}):
        try:
            Engine.load(data, **kw).close()
        except EdgeRTError:
            pass


_PLAN = ft.bundled_policy_plan()


@_fuzz
@given(st.integers(0, len(_PLAN)), st.lists(st.tuples(st.integers(0, len(_PLAN) - 1),
                                                      st.integers(0, 255)), max_size=4))
def test_damaged_plans_only_raise_edgert_errors(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(_PLAN[:cut] if cut >= 28 else _PLAN)
    for index, value in flips:
        if index < len(data):
            data[index] = value
    try:
        Engine.load(bytes(data), trt_module=ft).close()
    except EdgeRTError:
        pass


_ONNX_BYTES = ONNX.read_bytes()


@_fuzz
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 399), st.integers(0, 255)),
                min_size=1, max_size=4),
       st.booleans())
def test_damaged_onnx_only_raises_edgert_errors(
        flips: list[tuple[int, int, int]], truncate: bool) -> None:
    # Damage the header, the tail (metadata, opsets) or the middle (weights), so that most
    # inputs pass edgert's scan and reach ONNX Runtime itself.
    data = bytearray(_ONNX_BYTES)
    for region, offset, value in flips:
        index = (offset, len(data) - 400 + offset, len(data) // 2 + offset)[region]
        data[index] = value
    try:
        Engine.load(bytes(data[:-150] if truncate else data)).close()
    except EdgeRTError:
        pass


# -- hostile files (issue 12): special files, caps, keys, NUL bytes, one read -----------------


def test_fifo_model_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "model.plan"
    os.mkfifo(fifo)
    for call in (lambda: Engine.load(fifo), lambda: read_model_header(fifo)):
        err = finishes(call, fifo)
        assert type(err) is EngineLoadError, repr(err)
        assert "FIFO" in str(err)
        assert "not a regular file" in str(err)
        assert err.path == str(fifo)
        assert err.hint


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_device_model_is_refused_before_reading(tmp_path: Path, device: str) -> None:
    link = tmp_path / "model.onnx"
    link.symlink_to(device)
    err = finishes(lambda: Engine.load(link))
    assert type(err) is EngineLoadError, repr(err)
    assert "character device" in str(err)


def test_max_bytes_caps_the_model_and_says_how_to_raise_it(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    size = path.stat().st_size
    with pytest.raises(EngineLoadError, match=f"over the limit of {size - 1:,} bytes") as info:
        Engine.load(path, trt_module=ft, max_bytes=size - 1)
    assert "max_bytes=" in (info.value.hint or "")
    with Engine.load(path, trt_module=ft, max_bytes=size) as engine:
        assert engine.size_bytes == size
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(InvalidArgumentError, match="max_bytes"):
            Engine.load(path, trt_module=ft, max_bytes=bad)


def test_sidecar_that_is_a_fifo_or_a_device_is_an_integrity_error(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    sidecar = path.with_name(path.name + ".sig")
    os.mkfifo(sidecar)
    err = finishes(lambda: Engine.load(path, trt_module=ft, hmac_key=KEY), sidecar)
    assert type(err) is IntegrityError, repr(err)
    assert "not a regular file" in str(err)
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")
    err = finishes(lambda: Engine.load(path, trt_module=ft, hmac_key=KEY))
    assert type(err) is IntegrityError, repr(err)


@pytest.mark.parametrize("key", [32, 0, -1, 10**12, 3.5, True, [1, 2], object()])
def test_a_key_that_is_not_bytes_str_or_a_key_file_is_refused(tmp_path: Path, key: Any) -> None:
    # bytes(32) is 32 zero bytes: a key everyone knows. It must never become one.
    path = _plan_file(tmp_path)
    forged = hmac.new(bytes(32), path.read_bytes(), "sha256").hexdigest()
    path.with_name(path.name + ".sig").write_text(forged)
    with pytest.raises(InvalidArgumentError, match="hmac_key must be bytes, str or the path") \
            as info:
        Engine.load(path, trt_module=ft, hmac_key=key)
    _exact(info, InvalidArgumentError)


def test_key_file(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    path.with_name(path.name + ".sig").write_text(
        hmac.new(KEY, path.read_bytes(), "sha256").hexdigest() + "\n")
    key_file = tmp_path / "fleet.key"
    key_file.write_bytes(KEY + b"\n")
    with Engine.load(path, trt_module=ft, hmac_key=key_file) as engine:
        assert engine.integrity is IntegrityStatus.HMAC
    key_file.write_bytes(b"another key")
    with pytest.raises(IntegrityError):
        Engine.load(path, trt_module=ft, hmac_key=key_file)
    key_fifo = tmp_path / "key.fifo"
    os.mkfifo(key_fifo)
    err = finishes(lambda: Engine.load(path, trt_module=ft, hmac_key=key_fifo), key_fifo)
    assert type(err) is InvalidArgumentError, repr(err)
    with pytest.raises(InvalidArgumentError, match="cannot read key file"):
        Engine.load(path, trt_module=ft, hmac_key=tmp_path / "missing.key")


@pytest.mark.parametrize("source", ["model\0.plan", Path("dir\0/model.onnx")])
def test_nul_in_path_is_an_invalid_argument_naming_the_path(source: Any) -> None:
    for call in (lambda: Engine.load(source), lambda: read_model_header(source)):
        with pytest.raises(InvalidArgumentError, match="NUL byte") as info:
            call()
        err = _exact(info, InvalidArgumentError)
        assert repr(os.fspath(source)) in str(err)


@pytest.mark.parametrize("source", [3, None, 2.5, ["model.plan"]])
def test_source_that_is_neither_path_nor_bytes(source: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="path or the model's bytes"):
        Engine.load(source)


def test_permission_denied_carries_the_path(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads mode-000 files, so the OS's refusal is imitated where edgert reads.
    path = _plan_file(tmp_path)

    def refuse(where: Any, **_: Any) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(where))

    monkeypatch.setattr("edgert.engine._source.read_file", refuse)
    with pytest.raises(PermissionDeniedError) as info:
        Engine.load(path)
    err = _exact(info, PermissionDeniedError)
    assert err.path == str(path)
    assert err.errno_value == errno.EACCES
    assert str(path) in str(err)


def test_onnx_sniff_does_not_copy_the_graph() -> None:
    # ModelProto: ir_version 8, a 32 MiB graph field, opset_import {version 13}.
    graph = 32 << 20
    data = (b"\x08\x08" + b"\x3a" + _varint(graph) + bytes(graph) + b"\x42\x02\x10\x0d")
    tracemalloc.start()
    try:
        header = read_model_header(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.format is EngineFormat.ONNX
    assert header.onnx_opsets == (("", 13),)
    assert peak < 1 << 20, f"sniffing allocated {peak:,} bytes"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_millions_of_tiny_fields_are_not_an_onnx_model() -> None:
    data = b"\x08\x01" * 200_000  # 200,000 ir_version fields: no ModelProto looks like that
    with pytest.raises(ModelFormatError, match="neither a TensorRT plan nor an ONNX model"):
        read_model_header(data)


def test_inspect_hashes_the_bytes_it_verifies(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The file is swapped after the first read: a second read would verify other bytes than
    # the ones whose sha256 is printed.
    from edgert._fileio import read_file
    from edgert.cli import _inspect

    path = tmp_path / "model.onnx"
    path.write_bytes(ONNX.read_bytes())
    reads: list[str] = []

    def read_then_swap(where: Any, **kw: Any) -> bytes:
        data = read_file(where, **kw)
        reads.append(str(where))
        path.write_bytes(b"swapped after the first read")
        return data

    monkeypatch.setattr("edgert.engine._source.read_file", read_then_swap)
    digest = hashlib.sha256(ONNX.read_bytes()).hexdigest()
    report = _inspect.inspect_model(path, sha256=digest)
    assert reads == [str(path)]
    assert report["sha256"] == digest
    assert report["integrity"] == IntegrityStatus.SHA256.value
    assert report["loaded"] is True


def test_malformed_profile_metadata_is_a_model_format_error_with_path(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # A rank-1 profile for a rank-2 input: the metadata does not fit the model.
    helper.set_model_props(model, {"edgert.profiles": json.dumps(
        {"x": {"min": [1], "opt": [1], "max": [8]}})})
    path = tmp_path / "bad_profile.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFormatError, match=r"edgert\.profiles") as info:
        Engine.load(path)
    err = _exact(info, ModelFormatError)
    assert err.path == str(path)
