"""GPU sensors through NVML (``nvidia-ml-py``, imported as ``pynvml``): read only.

NVML exists on desktop and datacenter GPUs and on Jetson from JetPack 7; on Orin several calls
answer NotSupported. A call that answers NotSupported once is not asked again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgert._owner import Owner
from edgert.errors import InvalidArgumentError, NotSupportedError, PermissionDeniedError

__all__ = ["CLOCK_EVENT_REASONS", "NvmlReading", "NvmlSensors", "decode_clock_event_reasons"]

# nvmlClocksEventReason* bits (the older ...ThrottleReason* names are aliases of these).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
_THERMAL = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})
_POWER = frozenset({"sw_power_cap", "hw_slowdown", "hw_power_brake_slowdown"})

# NVML return codes used here (stable across releases).
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_FUNCTION_NOT_FOUND = 13
_TEMPERATURE_GPU = 0
_CLOCK_SM = 1
_CLOCK_MEM = 2


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """Names of the bits set in an NVML clock-event (throttle) reason mask, lowest bit first.

    Unknown bits appear as ``"unknown_0x..."`` rather than being dropped.
    """
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _name in CLOCK_EVENT_REASONS:
        known |= bit
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


@dataclass(frozen=True, kw_only=True, slots=True)
class NvmlReading:
    """One GPU at one instant. Values NVML cannot give are ``None``.

    Attributes:
        temperature_c: GPU core temperature.
        power_mw: Board power draw.
        power_limit_mw: The enforced power limit.
        sm_clock_mhz: Current SM clock.
        mem_clock_mhz: Current memory clock.
        gpu_util_pct: Percent of the last sample period a kernel was running.
        mem_util_pct: Percent of that period device memory was read or written.
        clock_event_mask: The raw clock-event (throttle) reason bitmask.
        clock_event_reasons: Its bits as names, e.g. ``("sw_thermal_slowdown",)``.
    """

    temperature_c: float | None
    power_mw: int | None
    power_limit_mw: int | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    gpu_util_pct: int | None
    mem_util_pct: int | None
    clock_event_mask: int | None
    clock_event_reasons: tuple[str, ...] | None

    @property
    def thermal_slowdown(self) -> bool | None:
        """Clocks are reduced for temperature right now (``None``: unknown)."""
        if self.clock_event_reasons is None:
            return None
        return not _THERMAL.isdisjoint(self.clock_event_reasons)

    @property
    def power_slowdown(self) -> bool | None:
        """Clocks are reduced for power right now (``None``: unknown)."""
        if self.clock_event_reasons is None:
            return None
        return not _POWER.isdisjoint(self.clock_event_reasons)


class NvmlSensors(Owner):
    """Read-only NVML sensors of one GPU. Holds an NVML session until :meth:`close`.

    Args:
        index: The NVML device index.
        nvml: The ``pynvml`` module to use (tests inject a fake); ``None`` imports it.

    Raises:
        NotSupportedError: ``nvidia-ml-py`` is not installed, or NVML/the driver is absent.
        PermissionDeniedError: NVML refused access.
        InvalidArgumentError: No GPU has that index.
    """

    def __init__(self, index: int = 0, *, nvml: ModuleType | None = None) -> None:
        mod = nvml if nvml is not None else _import_pynvml()
        self._nvml: Any = mod
        try:
            mod.nvmlInit()
        except Exception as err:
            raise _init_error(mod, err) from err
        self._own(mod.nvmlShutdown, "NVML session")
        try:
            count = int(mod.nvmlDeviceGetCount())
            if not 0 <= index < count:
                raise InvalidArgumentError(
                    f"no GPU with NVML index {index}: this machine has {count}",
                    hint=f"use an index from 0 to {count - 1}" if count else "no GPU is visible",
                )
            self._handle = mod.nvmlDeviceGetHandleByIndex(index)
            name = mod.nvmlDeviceGetName(self._handle)
        except BaseException:
            self.close()
            raise
        self.index = index
        self.name: str = name.decode() if isinstance(name, bytes) else str(name)
        self._disabled: set[str] = set()
        temp_v = getattr(mod, "nvmlDeviceGetTemperatureV", None)
        self._temp_fn: Callable[[Any, int], Any] = (
            temp_v if temp_v is not None else mod.nvmlDeviceGetTemperature
        )
        self._reasons_fn: Callable[[Any], Any] | None = getattr(
            mod, "nvmlDeviceGetCurrentClocksEventReasons",
            getattr(mod, "nvmlDeviceGetCurrentClocksThrottleReasons", None),
        )

    def _call(self, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        if field in self._disabled:
            return None
        try:
            return fn(self._handle, *args)
        except Exception as err:
            code = getattr(err, "value", None)
            if code in (_NOT_SUPPORTED, _NO_PERMISSION, _FUNCTION_NOT_FOUND):
                if field == "temperature" and fn is not self._nvml.nvmlDeviceGetTemperature:
                    # The versioned call is missing from older drivers: fall back once.
                    self._temp_fn = self._nvml.nvmlDeviceGetTemperature
                    return self._call(field, self._temp_fn, *args)
                self._disabled.add(field)
            return None

    def read(self) -> NvmlReading:
        """Every sensor now. Never raises for a failing sensor; it reads ``None``.

        Raises:
            ResourceClosedError: After :meth:`close`.
        """
        self._check_open()
        nv = self._nvml
        temp = self._call("temperature", self._temp_fn, _TEMPERATURE_GPU)
        util = self._call("utilization", nv.nvmlDeviceGetUtilizationRates)
        mask = (None if self._reasons_fn is None
                else self._call("clock_events", self._reasons_fn))
        return NvmlReading(
            temperature_c=None if temp is None else float(temp),
            power_mw=_int(self._call("power", nv.nvmlDeviceGetPowerUsage)),
            power_limit_mw=_int(self._call("power_limit", nv.nvmlDeviceGetEnforcedPowerLimit)),
            sm_clock_mhz=_int(self._call("sm_clock", nv.nvmlDeviceGetClockInfo, _CLOCK_SM)),
            mem_clock_mhz=_int(self._call("mem_clock", nv.nvmlDeviceGetClockInfo, _CLOCK_MEM)),
            gpu_util_pct=None if util is None else _int(getattr(util, "gpu", None)),
            mem_util_pct=None if util is None else _int(getattr(util, "memory", None)),
            clock_event_mask=_int(mask),
            clock_event_reasons=None if mask is None else decode_clock_event_reasons(int(mask)),
        )

    def temperature_c(self) -> float | None:
        """Only the GPU temperature (one NVML call).

        Raises:
            ResourceClosedError: After :meth:`close`.
        """
        self._check_open()
        temp = self._call("temperature", self._temp_fn, _TEMPERATURE_GPU)
        return None if temp is None else float(temp)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        index, name = getattr(self, "index", "?"), getattr(self, "name", "?")
        return f"NvmlSensors(index={index}, name={name!r}, {state})"


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as err:
        raise NotSupportedError(
            "NVML sensors need the nvidia-ml-py package (import name pynvml)",
            hint="pip install 'edgert[nvml]'",
        ) from err


def _init_error(mod: Any, err: BaseException) -> Exception:
    code = getattr(err, "value", None)
    if code == _NO_PERMISSION:
        return PermissionDeniedError(
            f"NVML refused access: {err}",
            hint="check the permissions of /dev/nvidia* (containers need the GPU passed through)",
        )
    return NotSupportedError(
        f"NVML is not usable here: {err}",
        hint="NVML needs the NVIDIA driver (libnvidia-ml.so.1); on Jetson it exists from "
        "JetPack 7 — use ThermalZones and PowerRails there instead",
    )
