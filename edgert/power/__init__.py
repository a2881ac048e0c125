"""Power and thermal: zones, rails, NVML sensors, nvpmodel modes, jetson_clocks and a governor.

Nothing here imports CUDA, so a control process can watch temperatures and power without it.
Every class takes ``root`` (a fake tree in tests, see :mod:`edgert.testing.jetson`) and, where it
runs a command, a ``runner``. Readings never raise: a failed sensor reads ``None``.
"""

from __future__ import annotations

from edgert.power._clocks import (
    ClockDomain,
    ClocksReport,
    ClockState,
    CpuClock,
    JetsonClocks,
    parse_jetson_clocks_show,
)
from edgert.power._command import CommandOutput, CommandResult, CommandRunner, SubprocessRunner
from edgert.power._governor import DEFAULT_LEVELS, LevelChange, ThermalGovernor, ThermalLevel
from edgert.power._nvml import NvmlReading, NvmlSensors, decode_clock_event_reasons
from edgert.power._nvpconf import NvpConfig, PowerMode, PowerModeParam, parse_nvpmodel_conf
from edgert.power._nvpmodel import ModeSwitch, NvpModel, parse_nvpmodel_query
from edgert.power._rails import PowerRails, RailReading, RailTotal, TotalMethod
from edgert.power._thermal import (
    CoolingDevice,
    HwmonTemp,
    TemperatureReadings,
    ThermalZone,
    ThermalZones,
    TripPoint,
    reports_temperature,
    zone_alias,
)

__all__ = [
    "DEFAULT_LEVELS",
    "ClockDomain",
    "ClockState",
    "ClocksReport",
    "CommandOutput",
    "CommandResult",
    "CommandRunner",
    "CoolingDevice",
    "CpuClock",
    "HwmonTemp",
    "JetsonClocks",
    "LevelChange",
    "ModeSwitch",
    "NvmlReading",
    "NvmlSensors",
    "NvpConfig",
    "NvpModel",
    "PowerMode",
    "PowerModeParam",
    "PowerRails",
    "RailReading",
    "RailTotal",
    "SubprocessRunner",
    "TemperatureReadings",
    "ThermalGovernor",
    "ThermalLevel",
    "ThermalZone",
    "ThermalZones",
    "TotalMethod",
    "TripPoint",
    "decode_clock_event_reasons",
    "parse_jetson_clocks_show",
    "parse_nvpmodel_conf",
    "parse_nvpmodel_query",
    "reports_temperature",
    "zone_alias",
]
