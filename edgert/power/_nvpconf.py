"""Parsing nvpmodel.conf: parameters, power models (modes) and the default mode.

The format is a sequence of sections opened by bracketed headers (``< PARAM TYPE=CLOCK NAME=GPU >``,
``< POWER_MODEL ID=0 NAME=MAXN >``, ``< PM_CONFIG DEFAULT=2 >``) followed by whitespace-separated
lines. Real files are loosely formatted (``<PARAM TYPE=CLOCK NAME=EMC >``), so spacing inside the
brackets is free. Only sentinels mean "no cap": ``-1`` (nvpmodel uses INT_MAX and echoes it as
``2147483647``), ``9223372036854775807`` (LLONG_MAX, JetPack 6 super builds) and, for EMC, ``0``.
Any other value is a cap, however large: ``EMC MAX_FREQ 3199000000`` caps EMC at 3199 MHz.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from edgert._fileio import parse_index, parse_int
from edgert.errors import InvalidArgumentError

__all__ = ["NvpConfig", "PowerMode", "PowerModeParam", "is_no_cap", "parse_nvpmodel_conf"]

_HEADER = re.compile(r"^<\s*(\w+)\b(.*?)>\s*$")
_ATTR = re.compile(r"(\w+)\s*=\s*([^\s>]+)")
# The values that mean "no cap": -1, its INT_MAX echo and, on JetPack 6 super builds, LLONG_MAX.
# Anything else is a real cap: EMC caps above INT_MAX Hz (3199000000) are common.
_NO_CAP = frozenset({-1, 2**31 - 1, 2**63 - 1})
# nvpmodel ids are small integers; a bigger number in an ID field is not a mode id.
_MAX_MODE_ID = 65535


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerModeParam:
    """One ``PARAM`` section: a knob nvpmodel can set.

    Attributes:
        name: e.g. ``CPU_ONLINE``, ``GPU``, ``TPC_POWER_GATING``.
        type: ``FILE`` or ``CLOCK``.
        args: Argument → sysfs path, e.g. ``{"MAX_FREQ": "/sys/.../max_freq"}``.
    """

    name: str
    type: str
    args: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerMode:
    """One nvpmodel power mode and the caps it sets.

    Caps are ``None`` when the mode leaves them uncapped (``-1``) or does not mention them.

    Attributes:
        id: The mode number passed to ``nvpmodel -m``.
        name: e.g. ``MAXN``, ``MODE_30W``, ``15W``.
        online_cores: CPU cores this mode keeps online (``CPU_ONLINE CORE_n 1``); ``None`` if the
            mode does not set CPU_ONLINE.
        cpu_max_freq_khz: Highest CPU frequency cap over all clusters; ``None`` if any cluster
            is uncapped or none is named.
        cpu_max_freq_khz_by_cluster: Cap per CPU clock parameter (``CPU_A78_0`` ...).
        gpu_max_freq_hz: GPU frequency cap.
        emc_max_freq_hz: Memory controller frequency cap.
        tpc_pg_mask: GPU TPC power-gating mask (changing it needs a reboot).
        fbp_pg_mask: GPU FBP power-gating mask (Orin NX/Nano; changing it needs a reboot).
        settings: Every ``PARAM ARG VALUE`` line of the mode, in file order.
    """

    id: int
    name: str
    online_cores: frozenset[int] | None = None
    cpu_max_freq_khz: int | None = None
    cpu_max_freq_khz_by_cluster: Mapping[str, int | None] = field(
        default_factory=lambda: MappingProxyType({}))
    gpu_max_freq_hz: int | None = None
    emc_max_freq_hz: int | None = None
    tpc_pg_mask: int | None = None
    fbp_pg_mask: int | None = None
    settings: tuple[tuple[str, str, str], ...] = ()

    @property
    def cores_online(self) -> int | None:
        """How many CPU cores this mode keeps online."""
        return None if self.online_cores is None else len(self.online_cores)

    def reboot_reasons(self, other: PowerMode) -> tuple[str, ...]:
        """Why switching between this mode and ``other`` needs a reboot (empty: it does not).

        Orin applies GPU power-gating masks and CPU hotplug only at boot once the GPU's golden
        context exists; nvpmodel then asks for a reboot.
        """
        # A knob the target mode does not name is left alone by nvpmodel.
        reasons = []
        if other.tpc_pg_mask is not None and self.tpc_pg_mask != other.tpc_pg_mask:
            reasons.append(f"TPC power-gating mask {self.tpc_pg_mask} → {other.tpc_pg_mask}")
        if other.fbp_pg_mask is not None and self.fbp_pg_mask != other.fbp_pg_mask:
            reasons.append(f"FBP power-gating mask {self.fbp_pg_mask} → {other.fbp_pg_mask}")
        if other.online_cores is not None and self.online_cores != other.online_cores:
            reasons.append(f"online CPU cores {self.cores_online} → {other.cores_online}")
        return tuple(reasons)

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


@dataclass(frozen=True, kw_only=True, slots=True)
class NvpConfig:
    """A parsed nvpmodel.conf.

    Attributes:
        path: Where it was read from (``None`` for text).
        params: The ``PARAM`` sections by name.
        modes: The power modes in file order.
        default_id: ``PM_CONFIG DEFAULT``; ``None`` if the file has no PM_CONFIG.
        problems: Things that are wrong but not fatal (DEFAULT naming a missing mode, ...).
    """

    path: Path | None
    params: Mapping[str, PowerModeParam]
    modes: tuple[PowerMode, ...]
    default_id: int | None
    problems: tuple[str, ...]

    @property
    def default(self) -> PowerMode | None:
        """The default mode, or ``None`` when DEFAULT is absent or names no mode."""
        return self.by_id(self.default_id) if self.default_id is not None else None

    def by_id(self, mode_id: int) -> PowerMode | None:
        """The mode with this id, if any."""
        for mode in self.modes:
            if mode.id == mode_id:
                return mode
        return None

    def by_name(self, name: str) -> PowerMode | None:
        """The mode with this name (case-insensitive), if any."""
        wanted = name.strip().upper()
        for mode in self.modes:
            if mode.name.upper() == wanted:
                return mode
        return None


def parse_nvpmodel_conf(text: str, *, path: Path | None = None) -> NvpConfig:
    """Parse the text of an nvpmodel.conf.

    Raises:
        InvalidArgumentError: The text is malformed: a header that does not close, a POWER_MODEL
            without a numeric ID, a duplicate ID, a mode line outside a mode, no mode at all.
    """
    where = str(path) if path is not None else "nvpmodel.conf"
    params: dict[str, PowerModeParam] = {}
    raw_modes: list[tuple[int, str, list[tuple[str, str, str]]]] = []
    default_id: int | None = None
    problems: list[str] = []
    section: str | None = None
    param: tuple[str, str, dict[str, str]] | None = None

    def fail(lineno: int, why: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{where}:{lineno}: {why}",
            hint="compare the file with the one JetPack installed under /etc/nvpmodel/",
        )

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        if stripped.startswith("<"):
            match = _HEADER.match(stripped)
            if match is None:
                raise fail(lineno, f"malformed section header {stripped!r}")
            section = match.group(1).upper()
            attrs = {k.upper(): v for k, v in _ATTR.findall(match.group(2))}
            if section == "PARAM":
                name = attrs.get("NAME")
                if not name:
                    raise fail(lineno, "PARAM without NAME")
                param = (name, attrs.get("TYPE", "").upper(), {})
                params[name] = PowerModeParam(name=name, type=param[1], args=param[2])
            elif section == "POWER_MODEL":
                ident = attrs.get("ID", "")
                mode_id = _mode_id(ident)
                if mode_id is None:
                    raise fail(lineno, f"POWER_MODEL needs a numeric ID, got {ident!r}")
                if any(m[0] == mode_id for m in raw_modes):
                    raise fail(lineno, f"POWER_MODEL ID={ident} appears twice")
                raw_modes.append((mode_id, attrs.get("NAME", f"MODE_{ident}"), []))
            elif section == "PM_CONFIG":
                value = attrs.get("DEFAULT", "")
                default_id = _mode_id(value)
                if default_id is None:
                    raise fail(lineno, f"PM_CONFIG DEFAULT must be a mode id, got {value!r}")
            continue
        tokens = stripped.split()
        if section == "PARAM" and param is not None:
            if len(tokens) >= 2:
                param[2][tokens[0].upper()] = tokens[1]
        elif section == "POWER_MODEL":
            if len(tokens) < 3:
                raise fail(lineno, f"expected 'PARAM ARG VALUE', got {stripped!r}")
            raw_modes[-1][2].append((tokens[0], tokens[1], tokens[2]))
        elif section is None:
            raise fail(lineno, f"line outside any section: {stripped!r}")
        # Lines of sections we do not know (FAN, future ones) are ignored on purpose.
    if not raw_modes:
        raise fail(0, "no POWER_MODEL section")
    modes = tuple(_mode(ident, name, settings, params) for ident, name, settings in raw_modes)
    if default_id is None:
        problems.append("no PM_CONFIG DEFAULT")
    elif not any(m.id == default_id for m in modes):
        problems.append(f"PM_CONFIG DEFAULT={default_id} names no POWER_MODEL "
                        f"(ids: {', '.join(str(m.id) for m in modes)})")
    frozen = {k: PowerModeParam(name=v.name, type=v.type, args=MappingProxyType(dict(v.args)))
              for k, v in params.items()}
    return NvpConfig(path=path, params=MappingProxyType(frozen), modes=modes,
                     default_id=default_id, problems=tuple(problems))


def is_no_cap(value: int) -> bool:
    """Whether a cap value read from sysfs or the conf means "no cap" (-1, INT_MAX, LLONG_MAX)."""
    return value in _NO_CAP


def _mode_id(text: str) -> int | None:
    """A mode id: decimal, 0..65535 (nvpmodel ids are small; anything else is not an id)."""
    return parse_int(text, lo=0, hi=_MAX_MODE_ID)


def _cap(value: str, *, zero_is_none: bool = False) -> int | None:
    """A cap in the file's unit, or ``None`` for a no-cap sentinel (or a value that is no cap)."""
    number = parse_int(value)
    if number is None or number in _NO_CAP or number < 0 or (zero_is_none and number == 0):
        return None
    return number


def _mode(ident: int, name: str, settings: list[tuple[str, str, str]],
          params: Mapping[str, PowerModeParam]) -> PowerMode:
    online: set[int] | None = None
    cpu: dict[str, int | None] = {}
    gpu = emc = tpc = fbp = None
    for pname, arg, value in settings:
        upper, uarg = pname.upper(), arg.upper()
        core = parse_index(uarg[5:]) if uarg.startswith("CORE_") else None
        if upper == "CPU_ONLINE" and core is not None:
            online = set() if online is None else online
            if value.strip() == "1":
                online.add(core)
        elif upper.startswith("CPU_") and uarg == "MAX_FREQ":
            cpu[pname] = _cap(value)
        elif upper == "GPU" and uarg == "MAX_FREQ":
            gpu = _cap(value)
        elif upper == "EMC" and uarg == "MAX_FREQ":
            emc = _cap(value, zero_is_none=True)
        elif uarg == "TPC_PG_MASK" and (mask := parse_int(value, lo=0)) is not None:
            tpc = mask
        elif uarg == "FBP_PG_MASK" and (mask := parse_int(value, lo=0)) is not None:
            fbp = mask
    cpu_max = None if not cpu or any(v is None for v in cpu.values()) else max(
        v for v in cpu.values() if v is not None)
    return PowerMode(
        id=ident, name=name, online_cores=None if online is None else frozenset(online),
        cpu_max_freq_khz=cpu_max, cpu_max_freq_khz_by_cluster=MappingProxyType(cpu),
        gpu_max_freq_hz=gpu, emc_max_freq_hz=emc, tpc_pg_mask=tpc, fbp_pg_mask=fbp,
        settings=tuple(settings),
    )
