"""Thermal zones, their trip points, cooling devices and hwmon temperatures, read from sysfs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from edgert._fileio import parse_index
from edgert.errors import NotSupportedError
from edgert.power import _sysfs

__all__ = [
    "CoolingDevice",
    "HwmonTemp",
    "TemperatureReadings",
    "ThermalZone",
    "ThermalZones",
    "TripPoint",
    "reports_temperature",
    "zone_alias",
]

# JetPack 5 names zones CPU-therm/tj-therm/Tboard_tegra, JetPack 6 cpu-thermal/tj-thermal/
# tboard-thermal; the alias is what is left once case and these suffixes are gone.
_ALIAS_SUFFIX = re.compile(r"[-_](thermal|therm|tegra)$")


def reports_temperature(name: str) -> bool:
    """Whether a zone's (or sensor's) reading is a temperature to summarise.

    PMIC zones (``PMIC-Die`` on Nano, TX2 and Xavier) read a constant 100 °C whatever the
    temperature; tegrastats prints ``PMIC@100C`` and jtop skips every zone whose name contains
    PMIC. edgert leaves them out of the hottest sensor, throttle checks and the doctor's margins.
    """
    return "pmic" not in name.lower()


def zone_alias(zone_type: str) -> str:
    """The release-independent short name of a zone type: ``CPU-therm`` → ``cpu``."""
    return _ALIAS_SUFFIX.sub("", zone_type.strip().lower())


@dataclass(frozen=True, kw_only=True, slots=True)
class TripPoint:
    """One trip point of a thermal zone.

    Attributes:
        index: N in ``trip_point_N_*``.
        type: ``passive``, ``active``, ``hot`` or ``critical`` (what the kernel reports).
        temp_c: Trip temperature; ``None`` when unreadable or disabled (-274 °C).
        hysteresis_c: ``trip_point_N_hyst``; ``None`` when the kernel does not expose it.
    """

    index: int
    type: str | None
    temp_c: float | None
    hysteresis_c: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ThermalZone:
    """A snapshot of one thermal zone.

    Attributes:
        index: N in ``thermal_zoneN`` (not stable across releases; use ``type`` or ``alias``).
        type: The zone's type string, e.g. ``tj-thermal``.
        key: Its key in :meth:`ThermalZones.read`: the type, with ``_1``, ``_2``... appended
            when several zones share a type.
        alias: Release-independent short name, e.g. ``tj``.
        path: The zone's directory.
        temp_c: The temperature when the snapshot was taken; ``None`` if the sensor failed.
        error: Why ``temp_c`` is ``None`` (``EAGAIN``, ``EINVAL``, ``sentinel``...), else ``None``.
        mode: ``enabled``/``disabled`` (``kernel``/``user`` on old kernels), if readable.
        policy: The kernel thermal governor, e.g. ``step_wise``.
        trips: Trip points in index order.
    """

    index: int
    type: str
    key: str
    alias: str
    path: Path
    temp_c: float | None
    error: str | None
    mode: str | None
    policy: str | None
    trips: tuple[TripPoint, ...]

    def trip_c(self, trip_type: str) -> float | None:
        """The lowest readable trip of ``trip_type`` (e.g. ``"passive"``) in °C, or ``None``."""
        temps = [t.temp_c for t in self.trips if t.type == trip_type and t.temp_c is not None]
        return min(temps) if temps else None

    @property
    def is_temperature(self) -> bool:
        """``False`` for a PMIC zone, whose constant reading is no temperature
        (see :func:`reports_temperature`)."""
        return reports_temperature(self.type)

    @property
    def passive_trip_c(self) -> float | None:
        """Where the kernel starts throttling (the lowest passive trip), if known."""
        return self.trip_c("passive")

    @property
    def critical_trip_c(self) -> float | None:
        """Where the kernel shuts the board down (the lowest critical trip), if known."""
        return self.trip_c("critical")


@dataclass(frozen=True, kw_only=True, slots=True)
class CoolingDevice:
    """A snapshot of one ``cooling_deviceN`` (a fan, or a CPU/GPU frequency cap).

    Attributes:
        index: N in ``cooling_deviceN``.
        type: e.g. ``pwm-fan``; ``None`` if unreadable.
        cur_state: Current state, 0 (no cooling) to ``max_state``.
        max_state: Highest state.
    """

    index: int
    type: str | None
    cur_state: int | None
    max_state: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class HwmonTemp:
    """A snapshot of one hwmon temperature channel (``tempN_*``).

    Attributes:
        key: Its key in :meth:`ThermalZones.read`: ``"<hwmon name> <label>"``.
        chip: The hwmon ``name``, e.g. ``nvme``.
        label: ``tempN_label``, or ``tempN`` when there is none.
        temp_c: ``tempN_input``; ``None`` if unreadable.
        max_c: ``tempN_max``, if present.
        crit_c: ``tempN_crit``, if present.
    """

    key: str
    chip: str
    label: str
    temp_c: float | None
    max_c: float | None
    crit_c: float | None


class TemperatureReadings(dict[str, float | None]):
    """What :meth:`ThermalZones.read` returns: °C (or ``None``) keyed by zone type.

    Lookups also accept aliases, so ``readings["tj"]`` finds ``tj-therm`` on JetPack 5 and
    ``tj-thermal`` on JetPack 6; iteration yields the real type names only.
    """

    __slots__ = ("_aliases",)

    def __init__(self, aliases: Mapping[str, str]) -> None:
        super().__init__()
        self._aliases = aliases

    def __missing__(self, key: str) -> float | None:
        real = self._aliases.get(key)
        if real is None or real not in self:
            raise KeyError(key)
        return dict.__getitem__(self, real)

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        real = self._aliases.get(key) if isinstance(key, str) else None
        return real is not None and dict.__contains__(self, real)

    def get(self, key: str, default: float | None = None) -> float | None:  # type: ignore[override]
        """The reading for a type or alias, else ``default``."""
        if key in self:
            return self[key]
        return default


@dataclass(frozen=True, slots=True)
class _Sensor:
    key: str
    temp_path: str


class ThermalZones:
    """The thermal zones and hwmon temperature sensors of this machine.

    Discovery runs once, at construction (call :meth:`rescan` after hotplug). Reading is cheap:
    one non-blocking ``read`` per sensor, no allocation beyond the result dict. Nothing here
    needs root. A machine without thermal zones (a container, a VM) simply has none.

    Args:
        root: Filesystem root to read under (a fake tree in tests).
        hwmon: Also read ``/sys/class/hwmon/*/tempN_input`` channels.
    """

    def __init__(self, root: Path = Path("/"), *, hwmon: bool = True) -> None:
        self.root = Path(root)
        self._hwmon = hwmon
        self._zone_dirs: tuple[tuple[int, str, Path], ...] = ()
        self._sensors: tuple[_Sensor, ...] = ()
        self._paths: dict[str, str] = {}
        self._aliases: Mapping[str, str] = MappingProxyType({})
        self.rescan()

    def rescan(self) -> None:
        """Discover zones and hwmon channels again."""
        zones: list[tuple[int, str, Path]] = []
        sensors: list[_Sensor] = []
        seen: dict[str, int] = {}
        for index, path in _sysfs.list_dir(_sysfs.under(self.root, "sys/class/thermal"),
                                           "thermal_zone"):
            ztype = _sysfs.read_str(path / "type")
            if ztype is None or not os.path.lexists(path / "temp"):
                continue
            key = _unique(ztype, seen)
            zones.append((index, key, path))
            sensors.append(_Sensor(key, os.fspath(path / "temp")))
        if self._hwmon:
            for chip, label, _n, base in self._hwmon_channels():
                key = _unique(f"{chip} {label}", seen)
                sensors.append(_Sensor(key, f"{base}_input"))
        aliases: dict[str, str] = {}
        for _index, key, _path in zones:
            aliases.setdefault(zone_alias(key), key)
        self._zone_dirs = tuple(zones)
        self._sensors = tuple(sensors)
        self._paths = {s.key: s.temp_path for s in sensors}
        self._aliases = MappingProxyType(aliases)

    def _hwmon_channels(self) -> Iterable[tuple[str, str, int, str]]:
        for _i, hw in _sysfs.list_dir(_sysfs.under(self.root, "sys/class/hwmon"), "hwmon"):
            chip = _sysfs.read_str(hw / "name") or hw.name
            try:
                names = os.listdir(hw)
            except OSError:
                continue
            channels = sorted(
                i for n in names
                if n.startswith("temp") and n.endswith("_input")
                and (i := parse_index(n[4:-6])) is not None
            )
            for n in channels:
                base = os.fspath(hw / f"temp{n}")
                label = _sysfs.read_str(f"{base}_label") or f"temp{n}"
                yield chip, label, n, base

    @property
    def names(self) -> tuple[str, ...]:
        """The zone type names, in zone index order (hwmon channels not included)."""
        return tuple(key for _i, key, _p in self._zone_dirs)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Alias → zone type, e.g. ``{"tj": "tj-thermal", "cpu": "cpu-thermal", ...}``."""
        return self._aliases

    def resolve(self, name: str) -> str:
        """The zone type (or hwmon key) that ``name`` (a type, alias or hwmon key) refers to.

        Raises:
            NotSupportedError: No zone or sensor has that name on this machine.
        """
        if name in self._paths:
            return name
        real = self._aliases.get(name) or self._aliases.get(zone_alias(name))
        if real is not None:
            return real
        known = ", ".join(s.key for s in self._sensors) or "none"
        raise NotSupportedError(
            f"no thermal sensor named {name!r} under {self.root / 'sys/class/thermal'}; "
            f"found: {known}",
            hint="use one of the names found (aliases like 'tj', 'cpu', 'gpu' work on JetPack 5 "
            "and 6); a container needs /sys mounted from the host",
        )

    def read(self) -> TemperatureReadings:
        """Every sensor's temperature in °C, keyed by zone type (hwmon: ``"<chip> <label>"``).

        A sensor that is off or fails reads ``None``. Never raises.
        """
        out = TemperatureReadings(self._aliases)
        read = _sysfs.milli_c
        for sensor in self._sensors:
            out[sensor.key] = read(sensor.temp_path)
        return out

    def temp_c(self, name: str) -> float | None:
        """One sensor's temperature in °C, or ``None`` if it failed.

        Raises:
            NotSupportedError: No sensor has that name (see :meth:`resolve`).
        """
        return _sysfs.milli_c(self._paths[self.resolve(name)])

    def zones(self) -> tuple[ThermalZone, ...]:
        """Full snapshots of every zone: temperature (with the failure reason), mode, trips."""
        return tuple(_snapshot(index, key, path) for index, key, path in self._zone_dirs)

    def zone(self, name: str) -> ThermalZone:
        """A snapshot of one zone, by type or alias.

        Raises:
            NotSupportedError: No zone has that name.
        """
        key = self.resolve(name)
        for index, zkey, path in self._zone_dirs:
            if zkey == key:
                return _snapshot(index, zkey, path)
        raise NotSupportedError(f"{name!r} is a hwmon sensor, not a thermal zone",
                                hint="use hwmon() for hwmon channels")

    def passive_trip_c(self, name: str = "tj") -> float | None:
        """The lowest passive trip of zone ``name`` in °C, where the kernel starts throttling.

        Raises:
            NotSupportedError: No zone has that name.
        """
        return self.zone(name).passive_trip_c

    def hwmon(self) -> tuple[HwmonTemp, ...]:
        """Snapshots of every hwmon temperature channel (empty if ``hwmon=False``)."""
        if not self._hwmon:
            return ()
        out = []
        seen: dict[str, int] = {key: 1 for _i, key, _p in self._zone_dirs}
        for chip, label, _n, base in self._hwmon_channels():
            out.append(HwmonTemp(
                key=_unique(f"{chip} {label}", seen), chip=chip, label=label,
                temp_c=_sysfs.milli_c(f"{base}_input"), max_c=_sysfs.milli_c(f"{base}_max"),
                crit_c=_sysfs.milli_c(f"{base}_crit"),
            ))
        return tuple(out)

    def cooling_devices(self) -> tuple[CoolingDevice, ...]:
        """Snapshots of ``/sys/class/thermal/cooling_deviceN``."""
        base = _sysfs.under(self.root, "sys/class/thermal")
        return tuple(
            CoolingDevice(index=index, type=_sysfs.read_str(path / "type"),
                          cur_state=_sysfs.read_int(path / "cur_state"),
                          max_state=_sysfs.read_int(path / "max_state"))
            for index, path in _sysfs.list_dir(base, "cooling_device")
        )

    def __repr__(self) -> str:
        return f"ThermalZones(root={self.root!s}, zones={list(self.names)})"


def _unique(key: str, seen: dict[str, int]) -> str:
    count = seen.get(key, 0)
    seen[key] = count + 1
    return key if count == 0 else f"{key}_{count}"


def _snapshot(index: int, key: str, path: Path) -> ThermalZone:
    ztype = _sysfs.read_str(path / "type") or key
    text, error = _sysfs.probe(path / "temp")
    temp_c: float | None = None
    if text is not None:
        # The same parse as read(): a zone's snapshot and a reading never disagree.
        temp_c, error = _sysfs.parse_milli_c(text)
    trips = []
    for n in sorted(_trip_indices(path)):
        trip_temp = _sysfs.read_int(path / f"trip_point_{n}_temp")
        hyst = _sysfs.read_int(path / f"trip_point_{n}_hyst")
        trips.append(TripPoint(
            index=n,
            type=_sysfs.read_str(path / f"trip_point_{n}_type"),
            # Disabled trips read -274000 on some kernels.
            temp_c=None if trip_temp is None or not -273_150 <= trip_temp < _sysfs.MAX_MILLI_C
            else trip_temp / 1000.0,
            hysteresis_c=None if hyst is None or not 0 <= hyst < _sysfs.MAX_MILLI_C
            else hyst / 1000.0,
        ))
    return ThermalZone(
        index=index, type=ztype, key=key, alias=zone_alias(key),
        path=path, temp_c=temp_c, error=error, mode=_sysfs.read_str(path / "mode"),
        policy=_sysfs.read_str(path / "policy"), trips=tuple(trips),
    )


def _trip_indices(path: Path) -> set[int]:
    found: set[int] = set()
    try:
        names = os.listdir(path)
    except OSError:
        return found
    for name in names:
        if name.startswith("trip_point_") and name.endswith("_temp"):
            index = parse_index(name[len("trip_point_"):-len("_temp")])
            if index is not None:
                found.add(index)
    return found
