"""Fuzz Engine.load and read_model_header: any bytes, any file kind, any key or digest.

Contract (tests/_fuzz.py): an EdgeRTError with a message, or a correct answer, never a hang, a
foreign exception or a crash. A correct answer here: the engine describes the bytes given (size,
format) and a load that succeeds with a digest or key had that digest or tag really match.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

from _fuzz import FUZZ, outcome
from hypothesis import given
from hypothesis import strategies as st

from edgert import models
from edgert.engine import Engine, EngineFormat, IntegrityStatus, read_model_header
from edgert.errors import EdgeRTError, IntegrityError
from edgert.testing import fake_tensorrt as ft

_PLAN = ft.bundled_policy_plan()
_ONNX = models.bundled_model_path().read_bytes()
KEY = b"fleet-key"


def _mutate(base: bytes) -> st.SearchStrategy[bytes]:
    edits = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=6)

    def apply(args: tuple[int, list[tuple[int, int]], bool, bytes]) -> bytes:
        cut, flips, append, extra = args
        data = bytearray(base[:cut])
        for index, value in flips:
            if index < len(data):
                data[index] = value
        return bytes(data) + (extra if append else b"")

    return st.tuples(st.integers(0, len(base)), edits, st.booleans(),
                     st.binary(max_size=64)).map(apply)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = (number << 3) | wire
    out = bytearray()
    for number_ in (key, len(payload)) if wire == 2 else (key,):
        rest = number_
        while True:
            byte, rest = rest & 0x7F, rest >> 7
            out.append(byte | (0x80 if rest else 0))
            if not rest:
                break
    return bytes(out) + (payload if wire == 2 else payload[:10] or b"\0")


_protobuf = st.lists(st.tuples(st.integers(1, 20), st.sampled_from([0, 1, 2, 5]),
                               st.binary(max_size=40)), max_size=8).map(
    lambda fields: b"".join(_field(n, w, p) for n, w, p in fields))

MODEL_BYTES = st.one_of(st.binary(max_size=512), _mutate(_PLAN), _mutate(_ONNX), _protobuf,
                        st.sampled_from([_PLAN, _ONNX, b"", b"ftrt", b"\x08\x08"]),
                        st.sampled_from([_PLAN, _ONNX]))

# Right, wrong and ill-typed values for every integrity argument; None and "right" are
# weighted up so that a good share of the loads succeed and get their answer checked.
JUNK = st.one_of(st.integers(-2, 2**70), st.floats(), st.booleans(), st.text(max_size=70),
                 st.binary(max_size=40), st.lists(st.integers(0, 3)))
DIGEST = st.one_of(st.none(), st.none(), st.none(), st.just("right"), st.just("right"),
                   st.just("wrong"), JUNK)
KEYS = st.one_of(st.none(), st.none(), st.none(), st.just("right"), st.just("file"),
                 st.just("wrong"), JUNK)
SIDECAR = st.sampled_from(["none", "right", "right", "wrong", "junk", "fifo", "zero", "dir"])
KIND = st.sampled_from(["bytes", "file", "bytes", "file", "fifo", "zero", "dir", "missing",
                        "nul", "loop"])


def _source(kind: str, data: bytes, where: Path) -> Any:
    path = where / "model.bin"
    if kind == "bytes":
        return data
    if kind == "file":
        path.write_bytes(data)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "dir":
        path.mkdir()
    elif kind == "nul":
        return str(where / "model\0.bin")
    elif kind == "loop":
        path.symlink_to(path)
    return path


def _sidecar(choice: str, data: bytes, path: Path) -> None:
    sig = path.with_name(path.name + ".sig")
    if choice == "right":
        sig.write_text(hmac.new(KEY, data, "sha256").hexdigest() + "\n")
    elif choice == "wrong":
        sig.write_text(hmac.new(b"other", data, "sha256").hexdigest())
    elif choice == "junk":
        sig.write_bytes(b"\xff\0 not hex")
    elif choice == "fifo":
        os.mkfifo(sig)
    elif choice == "zero":
        sig.symlink_to("/dev/zero")
    elif choice == "dir":
        sig.mkdir()


def _load_and_check(*, data: bytes, kind: str, sha: Any, key: Any, signature: Any,
                    sidecar: str, fake_trt: bool, max_bytes: int | None) -> EdgeRTError | None:
    digest = hashlib.sha256(data).hexdigest()
    tag = hmac.new(KEY, data, "sha256").hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        source = _source(kind, data, where)
        if isinstance(source, Path):
            _sidecar(sidecar, data, source)
        key_file = where / "key"
        key_file.write_bytes(KEY + b"\n")
        kw: dict[str, Any] = {
            "sha256": {"right": digest, "wrong": "0" * 64}.get(sha, sha) if isinstance(sha, str)
            else sha,
            "hmac_key": {"right": KEY, "wrong": b"wrong key", "file": key_file}.get(key, key)
            if isinstance(key, str) else key,
            "signature": {"right": tag, "wrong": "1" * 64}.get(signature, signature)
            if isinstance(signature, str) else signature,
        }
        if fake_trt:
            kw["trt_module"] = ft
        if max_bytes is not None:
            kw["max_bytes"] = max_bytes
        result = outcome(lambda: Engine.load(source, **kw))
    if isinstance(result, EdgeRTError):
        return result
    with result as engine:
        # A correct answer: the engine is the bytes that were given, verified as asked.
        assert engine.size_bytes == len(data)
        assert engine.format is (EngineFormat.TENSORRT_PLAN if data[:4] == b"ftrt"
                                 else EngineFormat.ONNX)
        if kw["sha256"] is not None:
            assert sha == "right", f"loaded with sha256={kw['sha256']!r}"
            assert engine.integrity in (IntegrityStatus.SHA256, IntegrityStatus.SHA256_AND_HMAC)
        if kw["hmac_key"] is not None:
            assert key in ("right", "file"), f"loaded with hmac_key={kw['hmac_key']!r}"
            assert signature == "right" if kw["signature"] is not None else sidecar == "right"
            assert engine.integrity in (IntegrityStatus.HMAC, IntegrityStatus.SHA256_AND_HMAC)
        if kw["sha256"] is None and kw["hmac_key"] is None:
            assert engine.integrity is IntegrityStatus.UNCHECKED
    return None


@FUZZ
@given(data=MODEL_BYTES, kind=KIND, sha=DIGEST, key=KEYS, signature=DIGEST, sidecar=SIDECAR,
       fake_trt=st.booleans(),
       max_bytes=st.one_of(st.none(), st.none(), st.none(), st.integers(1, 1 << 20)))
def test_engine_load_contract(**args: Any) -> None:
    _load_and_check(**args)


@FUZZ
@given(model=st.sampled_from(["plan", "onnx"]), kind=st.sampled_from(["bytes", "file"]),
       sha=st.sampled_from([None, "right", "wrong"]),
       key=st.sampled_from([None, "right", "file", "wrong"]),
       signature=st.sampled_from([None, None, "right", "wrong"]),
       sidecar=st.sampled_from(["right", "wrong", "none"]))
def test_integrity_contract_on_real_models(model: str, **args: Any) -> None:
    # Good models, so that most loads succeed and a wrong acceptance would show.
    _load_and_check(data=_PLAN if model == "plan" else _ONNX, fake_trt=model == "plan",
                    max_bytes=None, **args)


@FUZZ
@given(data=MODEL_BYTES, kind=KIND)
def test_read_model_header_contract(data: bytes, kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = _source(kind, data, Path(tmp))
        result = outcome(lambda: read_model_header(source))
    if isinstance(result, EdgeRTError):
        assert not isinstance(result, IntegrityError)
        return
    assert kind in ("bytes", "file")
    assert result.size_bytes == len(data)
    if data[:4] == b"ftrt":
        assert result.format is EngineFormat.TENSORRT_PLAN
    else:
        assert result.format is EngineFormat.ONNX
        assert result.onnx_ir_version is not None
        assert result.onnx_opsets
