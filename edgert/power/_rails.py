"""INA3221 power rails: per-rail voltage, current, power, limits and alarms, read from sysfs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgert._compat import StrEnum
from edgert._fileio import parse_index
from edgert.power import _sysfs

__all__ = ["PowerRails", "RailReading", "RailTotal", "TotalMethod"]

# The input rail is the board's total; VIN_SYS_5V0 on AGX Orin is an I/O rail, not the total.
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
_NC = re.compile(r"(^|[\s_])NC($|[\s_])")
_SHUNT_SUM_CHANNEL = 7


class TotalMethod(StrEnum):
    """How :class:`RailTotal` was obtained."""

    INPUT_RAIL = "input_rail"
    """The board's input rail (``VDD_IN``, or ``POM_5V_IN`` on Nano) measures the total."""
    SUM = "sum"
    """No input rail, so the sum of the rails (``None`` unless every rail was read)."""
    NONE = "none"
    """No rail could be read."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RailReading:
    """One rail at one instant. Missing or failed values are ``None``.

    Attributes:
        name: The channel label, e.g. ``VDD_CPU_GPU_CV``.
        voltage_mv: Bus voltage.
        current_ma: Current through the shunt.
        power_mw: ``voltage_mv * current_ma / 1000`` (or the driver's own power reading).
        warn_current_ma: ``currN_max``: the warning limit.
        crit_current_ma: ``currN_crit``: the critical limit (on Orin NX wired to SoC throttling).
        warn_alarm: ``currN_max_alarm`` is set.
        crit_alarm: ``currN_crit_alarm`` is set.
    """

    name: str
    voltage_mv: int | None
    current_ma: int | None
    power_mw: float | None
    warn_current_ma: int | None = None
    crit_current_ma: int | None = None
    warn_alarm: bool | None = None
    crit_alarm: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RailTotal:
    """The board's power draw and where the figure comes from.

    Attributes:
        power_mw: Total power; ``None`` when it is not known: the input rail failed, or (summing)
            any rail failed. A sum without a rail would silently count that rail as 0 W.
        method: Input rail, sum of rails, or none.
        rails: The rails that were read (what a complete figure is made of).
        missing: Rails that exist but could not be read; when not empty, ``power_mw`` is None.
        partial_mw: The sum of the rails that were read when some were missing: a lower bound
            of the board's draw, never a total. ``None`` when nothing is missing.
    """

    power_mw: float | None
    method: TotalMethod
    rails: tuple[str, ...]
    missing: tuple[str, ...] = ()
    partial_mw: float | None = None

    @property
    def complete(self) -> bool:
        """Whether ``power_mw`` is a real total (known, with no rail missing)."""
        return self.power_mw is not None and not self.missing


@dataclass(frozen=True, slots=True)
class _Channel:
    name: str
    voltage: str
    current: str
    power: str | None
    power_scale: float  # to mW
    warn: str | None
    crit: str | None
    warn_alarm: str | None
    crit_alarm: str | None


class PowerRails:
    """The INA3221 power monitors of a Jetson.

    Finds every ``ina3221`` chip under ``/sys/bus/i2c/devices`` (and its driver directory, and
    ``/sys/class/hwmon``), through its hwmon node on JetPack 5 and later or the older iio node
    (``rail_name_N``) on JetPack 4. Channels labelled ``NC`` (not connected) and the
    "sum of shunt voltages" channel are skipped. Reading needs no root; each rail costs a few
    I2C transactions in the kernel (about 0.5 ms on real hardware), so sample rails more slowly
    than temperatures.

    Args:
        root: Filesystem root to read under (a fake tree in tests).
    """

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = Path(root)
        self._channels: tuple[_Channel, ...] = ()
        self.rescan()

    def rescan(self) -> None:
        """Discover the chips and channels again."""
        chips: list[Path] = []
        seen: set[str] = set()

        def add(path: Path) -> None:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                chips.append(path)

        for where in ("sys/bus/i2c/devices", "sys/bus/i2c/drivers/ina3221"):
            base = _sysfs.under(self.root, where)
            try:
                entries = sorted(os.listdir(base))
            except OSError:
                continue
            for name in entries:
                dev = base / name
                if "ina3221" in (_sysfs.read_str(dev / "name") or ""):
                    add(dev)
        for _i, hw in _sysfs.list_dir(_sysfs.under(self.root, "sys/class/hwmon"), "hwmon"):
            if "ina3221" in (_sysfs.read_str(hw / "name") or ""):
                add(hw)
        channels: list[_Channel] = []
        names: set[str] = set()
        hwmon_seen: set[str] = set()
        for chip in chips:
            for node in _hwmon_nodes(chip):
                real = os.path.realpath(node)
                if real in hwmon_seen:
                    continue
                hwmon_seen.add(real)
                channels.extend(_hwmon_channels(node, names))
            for node in _iio_nodes(chip):
                channels.extend(_iio_channels(node, names))
        self._channels = tuple(channels)

    @property
    def names(self) -> tuple[str, ...]:
        """The rail labels found, in discovery order."""
        return tuple(c.name for c in self._channels)

    def read(self) -> dict[str, RailReading]:
        """Every rail now, keyed by label. Never raises; unreadable values are ``None``."""
        out: dict[str, RailReading] = {}
        read_int = _sysfs.read_int
        for ch in self._channels:
            mv = read_int(ch.voltage)
            ma = read_int(ch.current)
            power: float | None = None
            if ch.power is not None:
                raw = read_int(ch.power)
                power = None if raw is None else raw * ch.power_scale
            if power is None and mv is not None and ma is not None:
                power = mv * ma / 1000.0
            out[ch.name] = RailReading(
                name=ch.name, voltage_mv=mv, current_ma=ma, power_mw=power,
                warn_current_ma=None if ch.warn is None else read_int(ch.warn),
                crit_current_ma=None if ch.crit is None else read_int(ch.crit),
                warn_alarm=_flag(ch.warn_alarm), crit_alarm=_flag(ch.crit_alarm),
            )
        return out

    def total(self, readings: Mapping[str, RailReading] | None = None) -> RailTotal:
        """The board's power: the input rail where there is one, else the sum of the rails.

        A sum is only given when every rail was read: with one missing, ``power_mw`` is
        ``None`` and the readable rails' sum is kept apart as ``partial_mw`` (a lower bound).

        Args:
            readings: A result of :meth:`read` to total; ``None`` reads now.
        """
        rails = self.read() if readings is None else readings
        for name in _INPUT_RAILS:
            if name in rails:
                power = rails[name].power_mw
                return RailTotal(power_mw=power, method=TotalMethod.INPUT_RAIL, rails=(name,),
                                 missing=() if power is not None else (name,))
        have = tuple(n for n, r in rails.items() if r.power_mw is not None)
        missing = tuple(n for n, r in rails.items() if r.power_mw is None)
        if not have:
            return RailTotal(power_mw=None, method=TotalMethod.NONE, rails=(), missing=missing)
        total = sum(rails[n].power_mw or 0.0 for n in have)
        if missing:
            return RailTotal(power_mw=None, method=TotalMethod.SUM, rails=have, missing=missing,
                             partial_mw=total)
        return RailTotal(power_mw=total, method=TotalMethod.SUM, rails=have)

    def __repr__(self) -> str:
        return f"PowerRails(root={self.root!s}, rails={list(self.names)})"


def _flag(path: str | None) -> bool | None:
    if path is None:
        return None
    value = _sysfs.read_int(path)
    return None if value is None else value != 0


def _hwmon_nodes(chip: Path) -> list[Path]:
    if (chip / "name").exists() and chip.parent.name == "hwmon":
        return [chip]  # found through /sys/class/hwmon: already the hwmon node
    return [path for _i, path in _sysfs.list_dir(chip / "hwmon", "hwmon")]


def _iio_nodes(chip: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(chip))
    except OSError:
        return []
    return [chip / n for n in names if n.startswith("iio:device")]


def _skip(label: str, hwmon_channel: int | None) -> bool:
    return (hwmon_channel == _SHUNT_SUM_CHANNEL or "sum of shunt" in label.lower()
            or _NC.search(label.upper()) is not None)


def _opt(path: Path) -> str | None:
    return os.fspath(path) if os.path.lexists(path) else None


def _hwmon_channels(node: Path, names: set[str]) -> list[_Channel]:
    out = []
    for n, label_path in _numbered(node, "in", "_label"):
        label = _sysfs.read_str(label_path)
        if label is None or _skip(label, n) or not os.path.lexists(node / f"curr{n}_input"):
            continue
        out.append(_Channel(
            name=_unique(label, names),
            voltage=os.fspath(node / f"in{n}_input"),
            current=os.fspath(node / f"curr{n}_input"),
            power=_opt(node / f"power{n}_input"), power_scale=1e-3,  # hwmon power is µW
            warn=_opt(node / f"curr{n}_max"), crit=_opt(node / f"curr{n}_crit"),
            warn_alarm=_opt(node / f"curr{n}_max_alarm"),
            crit_alarm=_opt(node / f"curr{n}_crit_alarm"),
        ))
    return out


def _iio_channels(node: Path, names: set[str]) -> list[_Channel]:
    out = []
    for n, label_path in _numbered(node, "rail_name_", ""):
        label = _sysfs.read_str(label_path)
        if label is None or _skip(label, None):
            continue
        out.append(_Channel(
            name=_unique(label, names),
            voltage=os.fspath(node / f"in_voltage{n}_input"),
            current=os.fspath(node / f"in_current{n}_input"),
            power=_opt(node / f"in_power{n}_input"), power_scale=1.0,  # iio power is mW
            warn=_opt(node / f"warn_current_limit_{n}"),
            crit=_opt(node / f"crit_current_limit_{n}"),
            warn_alarm=None, crit_alarm=None,
        ))
    return out


def _numbered(node: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(node)
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix):
            index = parse_index(name[len(prefix):len(name) - len(suffix)])
            if index is not None:
                found.append((index, node / name))
    found.sort(key=lambda item: item[0])
    return found


def _unique(label: str, names: set[str]) -> str:
    name, n = label, 1
    while name in names:
        n += 1
        name = f"{label}_{n}"
    names.add(name)
    return name
