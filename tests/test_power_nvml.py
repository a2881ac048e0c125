"""NvmlSensors: decoding and failure handling with a fake pynvml, then the real one (gpu tier).

The gpu tests only read; they never set clocks, power limits or persistence mode.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from edgert.errors import InvalidArgumentError, NotSupportedError, ResourceClosedError
from edgert.power import NvmlSensors, decode_clock_event_reasons


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(*, init_error: int | None = None, unsupported: tuple[str, ...] = (),
              versioned_temp: bool = True, count: int = 1) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: dict[str, int] = {}
    mod.calls = calls  # type: ignore[attr-defined]
    mod.shutdowns = 0  # type: ignore[attr-defined]

    def fn(name: str, value: Any) -> Any:
        def call(*args: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if name in unsupported:
                raise NVMLError(3)
            return value(*args) if callable(value) else value
        return call

    def init() -> None:
        if init_error is not None:
            raise NVMLError(init_error)

    def shutdown() -> None:
        mod.shutdowns += 1  # type: ignore[attr-defined]

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = fn("count", count)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = fn("handle", "h0")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = fn("name", b"NVIDIA H200")  # type: ignore[attr-defined]
    if versioned_temp:
        mod.nvmlDeviceGetTemperatureV = fn("temp_v", 41)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTemperature = fn("temp", 40)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPowerUsage = fn("power", 123456)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetEnforcedPowerLimit = fn("limit", 700000)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetClockInfo = fn(  # type: ignore[attr-defined]
        "clock", lambda h, kind: {1: 1980, 2: 3201}[kind])
    mod.nvmlDeviceGetUtilizationRates = fn(  # type: ignore[attr-defined]
        "util", types.SimpleNamespace(gpu=87, memory=12))
    mod.nvmlDeviceGetCurrentClocksEventReasons = fn("reasons", 0x24)  # type: ignore[attr-defined]
    return mod


def test_decode_clock_event_reasons() -> None:
    assert decode_clock_event_reasons(0) == ()
    assert decode_clock_event_reasons(0x1) == ("gpu_idle",)
    assert decode_clock_event_reasons(0x24) == ("sw_power_cap", "sw_thermal_slowdown")
    assert decode_clock_event_reasons(0x1FF) == (
        "gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
        "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
        "display_clock_setting")
    assert decode_clock_event_reasons(0x40 | 0x1000 | 0x10000) == (
        "hw_thermal_slowdown", "unknown_0x1000", "unknown_0x10000")


def test_read_everything() -> None:
    mod = fake_nvml()
    with NvmlSensors(nvml=mod) as nv:
        assert nv.name == "NVIDIA H200"
        r = nv.read()
        assert r.temperature_c == 41.0  # the versioned call is preferred
        assert (r.power_mw, r.power_limit_mw) == (123456, 700000)
        assert (r.sm_clock_mhz, r.mem_clock_mhz) == (1980, 3201)
        assert (r.gpu_util_pct, r.mem_util_pct) == (87, 12)
        assert r.clock_event_mask == 0x24
        assert r.clock_event_reasons == ("sw_power_cap", "sw_thermal_slowdown")
        assert r.thermal_slowdown is True
        assert r.power_slowdown is True
        assert nv.temperature_c() == 41.0
    assert mod.shutdowns == 1  # type: ignore[attr-defined]
    nv.close()
    assert mod.shutdowns == 1  # type: ignore[attr-defined]
    with pytest.raises(ResourceClosedError):
        nv.read()


def test_unsupported_calls_read_none_and_are_not_asked_again() -> None:
    mod = fake_nvml(unsupported=("util", "reasons", "temp_v"))
    with NvmlSensors(nvml=mod) as nv:
        for _ in range(3):
            r = nv.read()
            assert r.gpu_util_pct is None
            assert r.mem_util_pct is None
            assert r.clock_event_reasons is None
            assert r.thermal_slowdown is None
            assert r.temperature_c == 40.0  # fell back to the older call
        assert mod.calls["util"] == 1
        assert mod.calls["reasons"] == 1
        assert mod.calls["temp_v"] == 1  # type: ignore[attr-defined]


def test_other_errors_read_none_but_are_retried() -> None:
    mod = fake_nvml()

    def flaky(handle: Any) -> int:
        raise NVMLError(15)  # GPU_IS_LOST, say

    mod.nvmlDeviceGetPowerUsage = flaky  # type: ignore[attr-defined]
    with NvmlSensors(nvml=mod) as nv:
        assert nv.read().power_mw is None
        mod.nvmlDeviceGetPowerUsage = lambda h: 5  # type: ignore[attr-defined]
        assert nv.read().power_mw == 5


def test_missing_library_driver_and_device() -> None:
    with pytest.raises(NotSupportedError, match="NVML is not usable"):
        NvmlSensors(nvml=fake_nvml(init_error=12))
    with pytest.raises(NotSupportedError, match="NVML is not usable"):
        NvmlSensors(nvml=fake_nvml(init_error=9))
    mod = fake_nvml(count=1)
    with pytest.raises(InvalidArgumentError, match="index 3"):
        NvmlSensors(3, nvml=mod)
    assert mod.shutdowns == 1  # type: ignore[attr-defined]


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NotSupportedError, match="nvidia-ml-py") as info:
        NvmlSensors()
    assert info.value.hint == "pip install 'edgert[nvml]'"


def _real_nvml_or_skip() -> NvmlSensors:
    pytest.importorskip("pynvml")
    try:
        return NvmlSensors(0)
    except NotSupportedError as err:
        pytest.skip(f"NVML not usable: {err.message}")


@pytest.mark.gpu
def test_real_nvml_reads() -> None:
    with _real_nvml_or_skip() as nv:
        assert nv.name
        r = nv.read()
        assert r.temperature_c is not None
        assert 5.0 < r.temperature_c < 110.0
        assert r.power_mw is not None
        assert r.power_mw > 0
        assert r.sm_clock_mhz is not None
        assert r.sm_clock_mhz > 0
        assert r.mem_clock_mhz is not None
        assert r.mem_clock_mhz > 0
        assert r.gpu_util_pct is not None
        assert 0 <= r.gpu_util_pct <= 100
        assert r.clock_event_reasons is not None
        assert all(not name.startswith("unknown") for name in r.clock_event_reasons)
        assert r.power_limit_mw is not None
        assert r.power_limit_mw >= 1000


@pytest.mark.gpu
def test_real_nvml_close_is_idempotent_and_reopens() -> None:
    nv = _real_nvml_or_skip()
    nv.close()
    nv.close()
    with NvmlSensors(0) as again:
        assert again.temperature_c() is not None
