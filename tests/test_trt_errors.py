"""How TensorRT failures reach the caller (issue 12, defect 10): classified by the error
recorder's codes or by exact fragments of TensorRT's words, and never an exception thrown
through TensorRT's noexcept callbacks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from edgert.engine import Engine
from edgert.engine._trt_logger import LOGGER_NAME, LogBridge, bridge_for
from edgert.errors import EngineLoadError, ModelFormatError, VersionMismatchError
from edgert.testing import fake_tensorrt as ft

_ERROR = ft.ILogger.Severity.ERROR


def _failing_module(report: Any) -> ModuleType:
    """A fake TensorRT whose deserialization fails after ``report(runtime)`` said why."""
    module = ft.make_module()

    class Runtime(module.Runtime):  # type: ignore[misc,name-defined]
        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            report(self)
            return None

    module.Runtime = Runtime  # type: ignore[attr-defined]
    return module


def test_cudas_libcuda_stub_message_is_not_a_version_compatibility_problem() -> None:
    stub = ("[runtime.cpp::createRuntime] Error Code 6: Cuda Runtime (CUDA initialization "
            "failure with error: 34. libcuda.so is a stub library, not the driver)")
    module = _failing_module(lambda rt: rt._log(_ERROR, stub))
    with pytest.raises(EngineLoadError) as info:
        Engine.load(ft.bundled_policy_plan(), trt_module=module)
    assert not isinstance(info.value, VersionMismatchError)
    assert "version-compatible plan" not in info.value.message
    assert any("libcuda.so is a stub" in line for line in info.value.log_lines)


def test_the_real_lean_message_still_means_a_version_compatible_plan_is_needed() -> None:
    module = ft.make_module(flavour="lean")
    with pytest.raises(VersionMismatchError, match="not a version-compatible plan"):
        Engine.load(ft.bundled_policy_plan(version=module.__version__), trt_module=module)


def test_an_error_code_classifies_a_failure_whose_text_says_nothing_known() -> None:
    def report(runtime: Any) -> None:
        assert runtime.error_recorder is not None, "edgert sets its recorder on the runtime"
        runtime.error_recorder.report_error(ft.ErrorCodeTRT.FAILED_ALLOCATION,
                                            "deserialization could not proceed")

    with pytest.raises(EngineLoadError, match="ran out of memory") as info:
        Engine.load(ft.bundled_policy_plan(), trt_module=_failing_module(report))
    assert type(info.value) is EngineLoadError
    assert any("FAILED_ALLOCATION" in line for line in info.value.log_lines)


def test_recorded_errors_carry_codes_and_tensorrts_words() -> None:
    # The fake, like TensorRT, reports to the runtime's recorder instead of logging once one
    # is set; edgert's recorder keeps the code and still puts the words in log_lines.
    with pytest.raises(EngineLoadError, match="ran out of memory") as info:
        Engine.load(ft.bundled_policy_plan(fail_deserialize="oom"), trt_module=ft)
    assert any(line.startswith("INTERNAL_ERROR: ") and "OutOfMemory" in line
               for line in info.value.log_lines)
    with pytest.raises(ModelFormatError, match="truncated"):
        Engine.load(ft.bundled_policy_plan()[:100], trt_module=ft)


class _Raising(logging.Handler):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(logging.ERROR)
        self.exc = exc

    def emit(self, record: logging.LogRecord) -> None:
        raise self.exc


@pytest.fixture
def interrupting_handler() -> Iterator[None]:
    log = logging.getLogger(LOGGER_NAME)
    handler = _Raising(KeyboardInterrupt())
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


@pytest.mark.usefixtures("interrupting_handler")
def test_a_keyboard_interrupt_in_the_logger_waits_for_python_instead_of_crossing_tensorrt() -> None:
    bridge = LogBridge(ft)
    bridge.drain()
    bridge.trt_logger.log(_ERROR, "an error while a signal arrives")  # must return normally
    with pytest.raises(KeyboardInterrupt):
        bridge.drain()  # back in Python: now it is raised
    assert bridge.drain() == ()  # raised once, then gone
    bridge.trt_logger.log(_ERROR, "again")
    with pytest.raises(KeyboardInterrupt):
        bridge.raise_pending()  # the cheap check, for hot paths
    bridge.raise_pending()  # nothing left


@pytest.mark.usefixtures("interrupting_handler")
def test_a_keyboard_interrupt_in_the_recorder_waits_for_python_too() -> None:
    bridge = LogBridge(ft)
    recorder = bridge.trt_recorder
    assert recorder.report_error(ft.ErrorCodeTRT.INVALID_ARGUMENT, "bad") is False
    assert recorder.num_errors() == 1
    with pytest.raises(KeyboardInterrupt):
        bridge.drain()


@pytest.mark.usefixtures("interrupting_handler")
def test_engine_load_raises_the_interrupt_after_tensorrt_returned() -> None:
    module = _failing_module(lambda rt: rt._log(_ERROR, "Error Code 1: Serialization (x)"))
    with pytest.raises(KeyboardInterrupt):
        Engine.load(ft.bundled_policy_plan(), trt_module=module)


def test_the_recorder_fits_the_real_lean_bindings() -> None:
    trt = pytest.importorskip("tensorrt_lean")
    bridge = bridge_for(trt)  # makes the ILogger and IErrorRecorder subclasses; no Runtime
    recorder = bridge.trt_recorder
    assert isinstance(recorder, trt.IErrorRecorder)
    bridge.drain()
    assert recorder.report_error(trt.ErrorCodeTRT.FAILED_ALLOCATION, "no memory") is False
    assert recorder.num_errors() == 1
    assert recorder.get_error_code(0) == trt.ErrorCodeTRT.FAILED_ALLOCATION
    assert recorder.get_error_desc(0) == "no memory"
    assert recorder.get_error_code(7) == trt.ErrorCodeTRT.SUCCESS  # out of range: no raise
    assert not recorder.has_overflowed()
    (rec,) = bridge.recorded()
    assert (rec.code, rec.code_name) == (5, "FAILED_ALLOCATION")
    recorder.clear()
    assert recorder.num_errors() == 0
    assert bridge.drain() == ("FAILED_ALLOCATION: no memory",)


@pytest.mark.gpu
def test_a_real_runtime_takes_the_recorder_and_reports_through_it() -> None:
    import edgert.cuda

    if not edgert.cuda.is_available():
        pytest.skip(f"needs a CUDA device: {edgert.cuda.unavailable_reason()}")
    trt = pytest.importorskip("tensorrt_lean")
    bridge = bridge_for(trt)
    runtime = trt.Runtime(bridge.trt_logger)
    runtime.error_recorder = bridge.trt_recorder
    assert runtime.error_recorder is not None
    bridge.drain()
    assert runtime.deserialize_cuda_engine(b"ftrt" + bytes(8188)) is None
    records = bridge.recorded()
    lines = bridge.drain()
    print(f"recorded={records} lines={lines}")
    assert lines, "TensorRT's words reach edgert through the recorder or the logger"
    assert all(isinstance(r.code, int) and r.code > 0 for r in records)
