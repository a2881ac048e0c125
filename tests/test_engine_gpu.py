"""GPU tier: the real lean and dispatch runtimes (run with `pytest -m gpu` on a CUDA machine).

Without a TensorRT builder there is no real plan to run, so this tier covers everything up to
and including rejecting bad engines: runtime creation, the runtime properties edgert sets, and
every bad input giving an EngineLoadError that carries TensorRT's own message.
"""

from __future__ import annotations

import importlib
import os
import struct
from pathlib import Path
from types import ModuleType

import pytest

from edgert.engine import Engine
from edgert.engine._trt_logger import bridge_for
from edgert.errors import EngineLoadError, ModelFormatError, VersionMismatchError

pytestmark = pytest.mark.gpu

MODULES = {"lean": "tensorrt_lean", "dispatch": "tensorrt_dispatch"}


@pytest.fixture(params=sorted(MODULES))
def flavour(request: pytest.FixtureRequest) -> str:
    pytest.importorskip(MODULES[request.param])
    return str(request.param)


def _module(flavour: str) -> ModuleType:
    return importlib.import_module(MODULES[flavour])


def _version(trt: ModuleType) -> tuple[int, ...]:
    return tuple(int(p) for p in trt.__version__.split(".")[:4])


def _plan_like(version: tuple[int, ...], size: int) -> bytes:
    """A plan header as TensorRT 11 writes it (tag, serialization tag 0, the plan's size at
    byte 16, the version at bytes 24..27) and a zeroed body: no engine, but a plan in form."""
    data = bytearray(b"ftrt" + bytes(20) + bytes(v & 0xFF for v in version[:4]) + bytes(size - 28))
    struct.pack_into("<Q", data, 16, size)
    return bytes(data)


def _bad_inputs(trt: ModuleType) -> dict[str, bytes]:
    mine = _version(trt)
    return {
        "zero bytes": b"",
        "random bytes": os.urandom(4096),
        "truncated plan": _plan_like(mine, 8192)[:5000],
        "plan from another version": _plan_like((mine[0] - 3, 1, 0, 0), 8192),
        "plan tag with garbage": b"ftrt" + os.urandom(8192),
    }


def test_runtime_creation_and_properties(flavour: str, tmp_path: Path) -> None:
    trt = _module(flavour)
    bridge = bridge_for(trt)
    runtime = trt.Runtime(bridge.trt_logger)
    assert runtime is not None
    runtime.engine_host_code_allowed = True
    assert runtime.engine_host_code_allowed
    runtime.temporary_directory = str(tmp_path)
    assert runtime.temporary_directory == str(tmp_path)
    flags = trt.TempfileControlFlag
    runtime.tempfile_control_flags = (1 << int(flags.ALLOW_IN_MEMORY_FILES)) | (
        1 << int(flags.ALLOW_TEMPORARY_FILES))
    assert runtime.get_plugin_registry() is not None
    assert runtime.get_plugin_registry().load_library(str(tmp_path / "libnone.so")) is None
    assert bridge.drain(), "TensorRT reports the missing plugin through edgert's logger"


def test_tensorrt_itself_rejects_every_bad_input_with_a_message(flavour: str) -> None:
    """Bypassing edgert's format check: TensorRT's own verdict on each bad input."""
    trt = _module(flavour)
    bridge = bridge_for(trt)
    runtime = trt.Runtime(bridge.trt_logger)
    for case, data in _bad_inputs(trt).items():
        bridge.drain()
        try:
            engine = runtime.deserialize_cuda_engine(data)
        except Exception as err:  # some bindings raise instead of returning None
            engine, raised = None, err
        else:
            raised = None
        lines = bridge.drain()
        print(f"{flavour} {case}: raised={raised!r} lines={lines}")
        assert engine is None, case
        assert lines or raised is not None, f"{case}: no message from TensorRT"


def test_engine_load_gives_engine_load_errors_with_tensorrts_words(flavour: str) -> None:
    trt = _module(flavour)
    for case, data in _bad_inputs(trt).items():
        with pytest.raises(EngineLoadError) as info:
            Engine.load(data, runtime=flavour)
        err = info.value
        print(f"{flavour} {case}: {type(err).__name__}: {err}")
        assert err.hint, case
        if data[:4] == b"ftrt":
            assert err.log_lines, f"{case}: TensorRT's message is missing"
        else:  # recognised as no model at all before TensorRT is involved
            assert isinstance(err, ModelFormatError), case
        if case == "plan from another version":
            assert isinstance(err, VersionMismatchError)
            assert trt.__version__ in str(err)
        if case == "truncated plan":
            assert isinstance(err, ModelFormatError)
            assert "truncated" in str(err)
