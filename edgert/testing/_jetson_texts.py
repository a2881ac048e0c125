"""Canned file contents and command outputs for fake Jetson machines.

Formats follow the 'Fixture facts' of the project's jetson-power reference. Where the reference
marks a text as unverified (the error for an unknown ``nvpmodel -m`` id, jetson_clocks' restore
error), the text here is a plausible stand-in and says so in a comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgert._compat import StrEnum

__all__ = [
    "NvpConf",
    "clocks_show_text",
    "default_emc_cap_hz",
    "default_mode_id",
    "nvpmodel_conf_text",
]

NO_CAP_ECHO = 2147483647  # nvpmodel -p --verbose prints -1 as INT_MAX
EMC_MAX_HZ = 3199000000  # Orin's EMC hardware maximum (bpmp clk/emc/max_rate)


class NvpConf(StrEnum):
    """Which nvpmodel.conf a fake tree gets."""

    STANDARD = "standard"
    """The module's own modes. AGX Orin (p3701-0000) has MAXN (0), MODE_15W (1; 4 cores, TPC
    mask 248) and MODE_30W (2; 8 cores, mask 240), DEFAULT=2. Orin NX 16GB (p3767-0000) has
    MAXN (0; 8 cores, TPC mask 240), 10W (1; 4 cores, mask 252, EMC capped at 2133 MHz), 15W
    (2; 4 cores, mask 252) and 25W (3; 8 cores, mask 240), all with FBP mask 2, DEFAULT=2."""
    ID_GAP = "id-gap"
    """The standard modes with a gap in the ids, AGX Orin 0, 1, 3 (no 2; DEFAULT=3 MODE_30W)
    and Orin NX 0, 1, 3, 4 (no 2; DEFAULT=3 15W)."""
    MISSING_DEFAULT = "missing-default"
    """The standard modes, but DEFAULT=7 names no mode."""
    SUPER = "super"
    """An Orin NX 16GB ``_super`` file: MAXN_SUPER, 10W, 15W, 25W, 40W (DEFAULT=4)."""
    MALFORMED = "malformed"
    """A section header that never closes."""


@dataclass(frozen=True, slots=True)
class _Mode:
    id: int
    name: str
    cores: int  # cores 0..cores-1 online, the rest offline
    tpc_mask: int
    cpu_max_khz: int  # -1: no cap
    gpu_max_hz: int
    emc_max_hz: int  # 0: no cap
    fbp_mask: int | None = None  # Orin NX/Nano only


BOARDS = ("agx-orin", "orin-nx")


def _modes(variant: NvpConf, cores: int, board: str) -> tuple[tuple[_Mode, ...], int]:
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; boards: {BOARDS}")
    nx = board == "orin-nx"
    if variant is NvpConf.SUPER:  # an Orin NX 16GB _super file
        return (
            _Mode(0, "MAXN_SUPER", cores, 0, -1, -1, 0, 2),
            _Mode(1, "10W", 4, 0, 1497600, 612000000, 2133000000, 2),
            _Mode(2, "15W", cores, 0, 1498000, 714000000, 3199000000, 2),
            _Mode(3, "25W", cores, 0, 1728000, 918000000, 3199000000, 2),
            _Mode(4, "40W", cores, 0, 1984000, 1173000000, 3199000000, 2),
        ), 4
    gap = variant is NvpConf.ID_GAP
    modes: tuple[_Mode, ...]
    if nx:
        # nvpmodel_p3767_0000.conf (Orin NX 16GB, JetPack 5): ids, names, masks, core counts and
        # EMC caps as on the module; EMC MAX_FREQ 0 is "no cap".
        modes = (
            _Mode(0, "MAXN", cores, 240, -1, -1, 0, 2),
            _Mode(1, "10W", 4, 252, 1190400, 612000000, 2133000000, 2),
            _Mode(3 if gap else 2, "15W", 4, 252, 1651200, 612000000, 0, 2),
            _Mode(4 if gap else 3, "25W", cores, 240, 1497600, 408000000, 0, 2),
        )
        default = 3 if gap else 2
    else:
        modes = (
            _Mode(0, "MAXN", cores, 0, -1, -1, 0),
            _Mode(1, "MODE_15W", 4, 248, 1113600, 408000000, 2133000000),
            _Mode(3 if gap else 2, "MODE_30W", min(cores, 8), 240, 1728000, 624750000,
                  3199000000),
        )
        default = 3 if gap else 2
    if variant is NvpConf.MISSING_DEFAULT:
        default = 7
    return modes, default


def default_mode_id(variant: NvpConf, board: str = "agx-orin") -> int:
    """The mode a fresh fake machine runs: the conf's default, else its last mode."""
    modes, default = _modes(variant, 8, board)
    return default if any(m.id == default for m in modes) else modes[-1].id


def default_emc_cap_hz(variant: NvpConf, board: str = "agx-orin") -> int:
    """The EMC cap (``emc_iso_cap``) a fresh fake machine has: its default mode's, 0 if none."""
    modes, _default = _modes(variant, 8, board)
    ident = default_mode_id(variant, board)
    return next(m.emc_max_hz for m in modes if m.id == ident)


def nvpmodel_conf_text(variant: NvpConf = NvpConf.STANDARD, *, cores: int = 8,
                       board: str = "agx-orin") -> str:
    """An nvpmodel.conf in the layout of ``board``'s module (``agx-orin`` or ``orin-nx``).

    Mode ids, names, core counts, GPU power-gating masks and EMC caps follow the module's own
    file; other frequencies are illustrative. Orin NX files also gate FBPs (``FBP_POWER_GATING``).
    """
    modes, default = _modes(variant, cores, board)
    fbp = any(m.fbp_mask is not None for m in modes)
    clusters = [(f"CPU_A78_{c}", range(c * 4, min(c * 4 + 4, cores)))
                for c in range((cores + 3) // 4)]
    out = [
        "#",
        "# nvpmodel configuration written by edgert.testing.jetson for tests.",
        "# Layout as on an Orin module; frequencies are illustrative.",
        "#",
        "",
        "< PARAM TYPE=FILE NAME=CPU_ONLINE >",
        *(f"CORE_{n} /sys/devices/system/cpu/cpu{n}/online" for n in range(cores)),
        "",
        *(["< PARAM TYPE=FILE NAME=FBP_POWER_GATING >",
            "FBP_PG_MASK /sys/devices/gpu.0/fbp_pg_mask", ""] if fbp else []),
        "< PARAM TYPE=FILE NAME=TPC_POWER_GATING >",
        "TPC_PG_MASK /sys/devices/gpu.0/tpc_pg_mask",
        "",
        "< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_ENABLE >",
        "GPU_PWR_CNTL_EN /sys/devices/gpu.0/power/control",
        "",
        "< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_DISABLE >",
        "GPU_PWR_CNTL_DIS /sys/devices/gpu.0/power/control",
        "",
    ]
    for name, members in clusters:
        first = members[0]
        out += [
            f"< PARAM TYPE=CLOCK NAME={name} >",
            f"FREQ_TABLE /sys/devices/system/cpu/cpu{first}/cpufreq/scaling_available_frequencies",
            f"MAX_FREQ /sys/devices/system/cpu/cpu{first}/cpufreq/scaling_max_freq",
            f"MIN_FREQ /sys/devices/system/cpu/cpu{first}/cpufreq/scaling_min_freq",
            f"FREQ_TABLE_KNEXT /sys/devices/system/cpu/cpufreq/policy{first}/"
            "scaling_available_frequencies",
            f"MAX_FREQ_KNEXT /sys/devices/system/cpu/cpufreq/policy{first}/scaling_max_freq",
            f"MIN_FREQ_KNEXT /sys/devices/system/cpu/cpufreq/policy{first}/scaling_min_freq",
            "",
        ]
    gpu = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    out += [
        "< PARAM TYPE=CLOCK NAME=GPU >",
        f"FREQ_TABLE {gpu}/available_frequencies",
        f"MAX_FREQ {gpu}/max_freq",
        f"MIN_FREQ {gpu}/min_freq",
        "FREQ_TABLE_KNEXT /sys/devices/platform/17000000.gpu/devfreq_dev/available_frequencies",
        "MAX_FREQ_KNEXT /sys/devices/platform/17000000.gpu/devfreq_dev/max_freq",
        "MIN_FREQ_KNEXT /sys/devices/platform/17000000.gpu/devfreq_dev/min_freq",
        "",
        "<PARAM TYPE=CLOCK NAME=EMC >",  # real files have this irregular spacing
        "MAX_FREQ /sys/kernel/nvpmodel_emc_cap/emc_iso_cap",
        "MAX_FREQ_KNEXT /sys/kernel/nvpmodel_clk_cap/emc",
        "",
    ]
    for mode in modes:
        out.append(f"< POWER_MODEL ID={mode.id} NAME={mode.name} >")
        out += [f"CPU_ONLINE CORE_{n} {1 if n < mode.cores else 0}" for n in range(cores)]
        if mode.fbp_mask is not None:
            out.append(f"FBP_POWER_GATING FBP_PG_MASK {mode.fbp_mask}")
        out.append(f"TPC_POWER_GATING TPC_PG_MASK {mode.tpc_mask}")
        out.append("GPU_POWER_CONTROL_ENABLE GPU_PWR_CNTL_EN on")
        for name, _members in clusters:
            out.append(f"{name} MIN_FREQ 729600")
            out.append(f"{name} MAX_FREQ {mode.cpu_max_khz}")
        out += [
            "GPU MIN_FREQ 0",
            f"GPU MAX_FREQ {mode.gpu_max_hz}",
            "GPU_POWER_CONTROL_DISABLE GPU_PWR_CNTL_DIS auto",
            f"EMC MAX_FREQ {mode.emc_max_hz}",
            "",
        ]
    if variant is NvpConf.MALFORMED:
        out.append("< POWER_MODEL ID=9 NAME=BROKEN")
    out.append(f"< PM_CONFIG DEFAULT={default} >")
    return "\n".join(out) + "\n"


def clocks_show_text(
    *,
    dialect: str,
    machine: str,
    cores: int,
    online: Sequence[int],
    pinned: bool,
    power_mode: str,
    cpu_max_khz: int = 1728000,
    gpu_max_hz: int = 624750000,
    emc_cap_hz: int = 0,
) -> str:
    """``jetson_clocks --show`` text in the ``old`` (``Online=1``) or ``new`` dialect.

    EMC ``MaxFreq`` is the hardware maximum (bpmp ``clk/emc/max_rate``); pinned, EMC runs at the
    mode's positive EMC cap (``emc_cap_hz``) where that is lower, as jetson_clocks sets it.
    """
    cpu_min = cpu_max_khz if pinned else 729600
    gpu_min = gpu_max_hz if pinned else 306000000
    emc_top = min(EMC_MAX_HZ, emc_cap_hz) if emc_cap_hz > 0 else EMC_MAX_HZ
    emc_cur = emc_top if pinned else min(665600000, emc_top)
    offline = [n for n in range(cores) if n not in online]
    lines = ["SOC family:tegra234  Machine:" + machine]
    if dialect == "old":
        lines.append(f"Online CPUs: {_ranges(online)}")
        for n in range(cores):
            up = n in online
            lines.append(
                f"cpu{n}: Online={int(up)} Governor=schedutil MinFreq={cpu_min} "
                f"MaxFreq={cpu_max_khz} CurrentFreq={cpu_max_khz if pinned else 1190400} "
                f"IdleStates: WFI={0 if pinned else 1} c7={0 if pinned else 1} ")
        lines += [
            f"GPU MinFreq={gpu_min} MaxFreq={gpu_max_hz} CurrentFreq={gpu_min}",
            f"EMC MinFreq=204000000 MaxFreq={EMC_MAX_HZ} CurrentFreq={emc_cur} "
            f"FreqOverride={int(pinned)}",
            "Fan: PWM=88",
        ]
    else:
        lines.append(f"Online CPUs: {_ranges(online)}, Offline CPUs: {_ranges(offline)}")
        for n in sorted(online, key=str):  # newer releases list cpu0, cpu1, cpu10, cpu11, cpu2...
            lines.append(
                f"cpu{n}:  Governor=schedutil MinFreq={cpu_min} MaxFreq={cpu_max_khz} "
                f"CurrentFreq={cpu_max_khz if pinned else 1190400} "
                f"IdleStates: WFI={0 if pinned else 1} c7={0 if pinned else 1} ")
        lines += [
            f"GPU MinFreq={gpu_min} MaxFreq={gpu_max_hz} CurrentFreq={gpu_min}",
            "Active GPU TPCs: 4",
            f"EMC MinFreq=204000000 MaxFreq={EMC_MAX_HZ} CurrentFreq={emc_cur} "
            f"FreqOverride={int(pinned)}",
            "FAN Dynamic Speed Control=nvfancontrol hwmon1_pwm1=88",
            "FAN hwmon1_pwm1_enable=1",
        ]
    lines.append(f"NV Power Mode: {power_mode}")
    return "\n".join(lines) + "\n"


def _ranges(cpus: Sequence[int]) -> str:
    items = sorted(cpus)
    if not items:
        return ""
    parts, start, prev = [], items[0], items[0]
    for n in [*items[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if n is not None:
            start = prev = n
    return ",".join(parts)
