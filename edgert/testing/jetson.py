"""Fake Jetson machines for tests: sysfs/procfs trees and a command runner.

Build a tree under a temporary directory and point edgert's power classes at it::

    from edgert.power import NvpModel, PowerRails, ThermalZones
    from edgert.testing.jetson import build_jetson_tree

    with build_jetson_tree(tmp_path, flavour="jp6-orin-nx") as tree:
        zones = ThermalZones(root=tree.root)
        assert zones.read()["tj"] == 46.5
        tree.set_temp("tj", 91.0)                # heat it up
        modes = NvpModel(root=tree.root, runner=tree.runner())

Flavours: ``jp6-orin-nx``, ``jp5-orin-nx``, ``jp6-agx-orin``, ``jp5-agx-orin``;
:func:`build_bare_tree` makes a container-like tree with none of it. The layouts and formats follow
the 'Fixture facts' of the project's jetson-power reference; frequencies and temperatures are
illustrative.

A powered-down cv zone fails with EAGAIN on real hardware. The tree imitates that with a FIFO
whose write end the tree holds open: a non-blocking read (as edgert does) fails with EAGAIN. A
*blocking* read of such a file would wait forever, so read fake trees through edgert, not with
``open().read()``, and close the tree (or use ``with``) when done.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edgert._compat import StrEnum
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError
from edgert.power import _sysfs
from edgert.power._thermal import zone_alias
from edgert.testing._jetson_runner import FakeCall, FakeCommandRunner
from edgert.testing._jetson_texts import NvpConf, default_mode_id, nvpmodel_conf_text

__all__ = [
    "FakeCall",
    "FakeCommandRunner",
    "Fault",
    "Flavour",
    "JetsonTree",
    "NvpConf",
    "build_bare_tree",
    "build_jetson_tree",
    "raising_reads",
]


class Flavour(StrEnum):
    """Which machine :func:`build_jetson_tree` imitates."""

    JP6_ORIN_NX = "jp6-orin-nx"
    JP5_ORIN_NX = "jp5-orin-nx"
    JP6_AGX_ORIN = "jp6-agx-orin"
    JP5_AGX_ORIN = "jp5-agx-orin"


class Fault(StrEnum):
    """How a fake sensor attribute fails."""

    EAGAIN = "eagain"
    """A FIFO with a held writer: non-blocking reads fail with EAGAIN (powered-down cv zones)."""
    EISDIR = "eisdir"
    """The attribute is a directory."""
    MISSING = "missing"
    """The attribute file is absent (ENOENT)."""
    EMPTY = "empty"
    """The file is empty."""
    GARBAGE = "garbage"
    """The file holds text that is not a number."""
    SENTINEL = "sentinel"
    """The file holds -256000, the "offline" sentinel of tegrastats and jtop."""
    UNREADABLE = "unreadable"
    """Mode 000: EACCES for a non-root reader (root still reads it)."""


_JP5_ZONES = ("CPU-therm", "GPU-therm", "CV0-therm", "CV1-therm", "CV2-therm", "SOC0-therm",
              "SOC1-therm", "SOC2-therm", "tj-therm", "Tboard_tegra", "Tdiode_tegra")
_JP6_ZONES = ("cpu-thermal", "gpu-thermal", "cv0-thermal", "cv1-thermal", "cv2-thermal",
              "soc0-thermal", "soc1-thermal", "soc2-thermal", "tj-thermal")
_JP6_BOARD_ZONES = ("tboard-thermal", "tdiode-thermal")
# °C by alias; tj is the hottest on-die sensor, as on the device.
_TEMPS = {"cpu": 45.5, "gpu": 44.0, "soc0": 43.25, "soc1": 44.75, "soc2": 42.5, "tj": 46.5,
          "tboard": 36.0, "tdiode": 39.5, "cv0": 41.0, "cv1": 41.0, "cv2": 41.0}

_NX_RAILS = {"1-0040": ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")}
_AGX_RAILS = {"1-0040": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
              "1-0041": ("NC", "VDDQ_VDD2_1V8AO", "NC")}
_RAIL_VALUES = {  # (mV, mA)
    "VDD_IN": (5016, 1010), "VDD_CPU_GPU_CV": (5008, 242), "VDD_SOC": (5008, 331),
    "VDD_GPU_SOC": (5024, 480), "VDD_CPU_CV": (5016, 160), "VIN_SYS_5V0": (5000, 376),
    "VDDQ_VDD2_1V8AO": (4992, 96), "NC": (0, 0),
}

_MODELS = {
    "orin-nx": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                "nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0", 8),
    "agx-orin": ("NVIDIA Jetson AGX Orin Developer Kit",
                 "nvidia,p3737-0000+p3701-0000\0nvidia,p3701-0000\0nvidia,tegra234\0", 12),
}
_RELEASES = {
    5: "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
       "DATE: Tue Aug  1 19:57:35 UTC 2023\n",
    6: "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
       "DATE: Wed Jan  8 01:49:37 UTC 2025\n",
}


class JetsonTree(Owner):
    """A fake machine's filesystem under :attr:`root`, with helpers to change it.

    Holds the write ends of the EAGAIN FIFOs; :meth:`close` releases them (after which those
    attributes read as empty).

    Attributes:
        root: Pass as ``root=`` to edgert's classes.
        flavour: The flavour built (``"bare"`` for :func:`build_bare_tree`).
        jetpack: 5, 6, or ``None`` for a bare tree.
        zones: Zone type → its directory.
        rails: Rail label → its hwmon (or iio) directory and channel number.
    """

    def __init__(self, root: Path, flavour: str, jetpack: int | None) -> None:
        self.root = root
        self.flavour = flavour
        self.jetpack = jetpack
        self.zones: dict[str, Path] = {}
        self.rails: dict[str, tuple[Path, int]] = {}
        self._fds: list[int] = []
        self._own(_closer(self._fds), "JetsonTree FIFO writers")

    def path(self, rel: str) -> Path:
        """``rel`` (an absolute path on a real machine) inside this tree."""
        return _sysfs.under(self.root, rel)

    def zone_dir(self, name: str) -> Path:
        """The directory of a zone, by type or alias (``"tj"``).

        Raises:
            InvalidArgumentError: No such zone.
        """
        if name in self.zones:
            return self.zones[name]
        for ztype, path in self.zones.items():
            if zone_alias(ztype) == zone_alias(name):
                return path
        raise InvalidArgumentError(f"the fake tree has no zone {name!r}: {list(self.zones)}")

    def set_temp(self, zone: str, temp_c: float | Fault) -> None:
        """Write a zone's temperature (atomically), or make it fail with ``fault``.

        Raises:
            InvalidArgumentError: No such zone.
        """
        path = self.zone_dir(zone) / "temp"
        if isinstance(temp_c, Fault):
            self._fault(path, temp_c)
        else:
            _replace(path, f"{round(temp_c * 1000)}\n")

    def set_rail(self, name: str, *, voltage_mv: int | None = None,
                 current_ma: int | None = None, crit_alarm: bool | None = None) -> None:
        """Change a rail's voltage, current or critical-current alarm.

        Raises:
            InvalidArgumentError: No such rail.
        """
        if name not in self.rails:
            raise InvalidArgumentError(f"the fake tree has no rail {name!r}: {list(self.rails)}")
        node, n = self.rails[name]
        iio = node.name.startswith("iio:")
        if voltage_mv is not None:
            _replace(node / (f"in_voltage{n}_input" if iio else f"in{n}_input"), f"{voltage_mv}\n")
        if current_ma is not None:
            _replace(node / (f"in_current{n}_input" if iio else f"curr{n}_input"),
                     f"{current_ma}\n")
        if crit_alarm is not None and not iio:
            _replace(node / f"curr{n}_crit_alarm", f"{int(crit_alarm)}\n")

    def fail(self, rel_or_path: str | Path, fault: Fault) -> None:
        """Make any attribute fail: ``tree.fail("sys/class/thermal/thermal_zone8/temp", ...)``."""
        path = Path(rel_or_path)
        self._fault(path if path.is_absolute() else self.root / path, fault)

    def _fault(self, path: Path, fault: Fault) -> None:
        self._check_open()
        _remove(path)
        if fault is Fault.EAGAIN:
            os.mkfifo(path)
            # O_RDWR opens a FIFO without waiting for a reader; holding it makes readers see a
            # live writer with no data, which is EAGAIN for a non-blocking read.
            self._fds.append(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
        elif fault is Fault.EISDIR:
            path.mkdir()
        elif fault is Fault.EMPTY:
            path.write_text("")
        elif fault is Fault.GARBAGE:
            path.write_text("n/a\n")
        elif fault is Fault.SENTINEL:
            path.write_text("-256000\n")
        elif fault is Fault.UNREADABLE:
            path.write_text("45000\n")
            path.chmod(0)

    def runner(self, **options: Any) -> FakeCommandRunner:
        """A :class:`FakeCommandRunner` that answers for this tree (options as its own)."""
        return FakeCommandRunner(self.root, **options)

    def __repr__(self) -> str:
        return f"JetsonTree({self.flavour!r}, root={self.root!s})"


def build_jetson_tree(
    root: Path,
    flavour: Flavour | str = Flavour.JP6_ORIN_NX,
    *,
    cv_fault: Fault | None = Fault.EAGAIN,
    board_zones: bool | None = None,
    nvpmodel_conf: NvpConf | str = NvpConf.STANDARD,
    rail_layout: str = "hwmon",
    temps: Mapping[str, float] | None = None,
) -> JetsonTree:
    """Write a fake Jetson under ``root`` and return it.

    Args:
        root: An empty (or missing) directory, e.g. pytest's ``tmp_path``.
        flavour: JetPack 5 or 6, Orin NX or AGX Orin.
        cv_fault: How the cv0–cv2 zones fail (``None``: they read normally).
        board_zones: JetPack 6: also add ``tboard-thermal`` and ``tdiode-thermal`` (default
            no); JetPack 5 always has ``Tboard_tegra`` and ``Tdiode_tegra``.
        nvpmodel_conf: Which nvpmodel.conf to install (:class:`NvpConf`).
        rail_layout: ``"hwmon"`` (JetPack 5+) or ``"iio"`` (the JetPack 4 layout).
        temps: °C by alias, overriding the defaults (``{"tj": 80.0}``).

    Raises:
        InvalidArgumentError: Unknown flavour or option.
    """
    try:
        flav = Flavour(flavour)
        conf = NvpConf(nvpmodel_conf)
    except ValueError as err:
        raise InvalidArgumentError(str(err), hint=f"flavours: {[f.value for f in Flavour]}; "
                                   f"confs: {[c.value for c in NvpConf]}") from err
    if rail_layout not in ("hwmon", "iio"):
        raise InvalidArgumentError(f"rail_layout must be 'hwmon' or 'iio', got {rail_layout!r}")
    jetpack = 5 if flav.value.startswith("jp5") else 6
    board = "agx-orin" if "agx" in flav.value else "orin-nx"
    model, compatible, cores = _MODELS[board]
    tree = JetsonTree(Path(root), flav.value, jetpack)
    w = _Writer(tree.root)
    # Identity.
    w.file("sys/firmware/devicetree/base/model", model + "\0")
    w.file("sys/firmware/devicetree/base/compatible", compatible)
    w.link("proc/device-tree", "sys/firmware/devicetree/base")
    w.file("etc/nv_tegra_release", _RELEASES[jetpack])
    w.file("etc/os-release", f'NAME="Ubuntu"\nVERSION_ID="{"22.04" if jetpack == 6 else "20.04"}"'
                             "\nID=ubuntu\n")
    # Thermal.
    types = list(_JP5_ZONES if jetpack == 5 else _JP6_ZONES)
    if jetpack == 6 and board_zones:
        types += _JP6_BOARD_ZONES
    values = {**_TEMPS, **(temps or {})}
    for n, ztype in enumerate(types):
        real = f"sys/devices/virtual/thermal/thermal_zone{n}"
        w.file(f"{real}/type", ztype)
        w.file(f"{real}/temp", f"{round(values.get(zone_alias(ztype), 40.0) * 1000)}")
        w.file(f"{real}/mode", "enabled")
        w.file(f"{real}/policy", "step_wise")
        w.file(f"{real}/available_policies", "step_wise power_allocator user_space")
        for i, (kind, milli) in enumerate((("critical", 104500), ("passive", 99000))):
            w.file(f"{real}/trip_point_{i}_type", kind)
            w.file(f"{real}/trip_point_{i}_temp", str(milli))
            w.file(f"{real}/trip_point_{i}_hyst", "0")
        w.link(f"sys/class/thermal/thermal_zone{n}", real)
        tree.zones[ztype] = tree.root / real
        if cv_fault is not None and zone_alias(ztype).startswith("cv"):
            tree.set_temp(ztype, cv_fault)
    cdev = "sys/devices/virtual/thermal/cooling_device0"
    w.file(f"{cdev}/type", "pwm-fan")
    w.file(f"{cdev}/max_state", "10")
    w.file(f"{cdev}/cur_state", "3")
    w.link("sys/class/thermal/cooling_device0", cdev)
    # Fan and an NVMe drive's temperature, as hwmon nodes.
    tach = "sys/devices/platform/39c0000.tachometer/hwmon/hwmon0"
    w.file(f"{tach}/name", "pwm_tach")
    w.file(f"{tach}/rpm", "1850")
    w.link("sys/class/hwmon/hwmon0", tach)
    fan = "sys/devices/platform/pwm-fan/hwmon/hwmon1"
    w.file(f"{fan}/name", "pwmfan")
    w.file(f"{fan}/pwm1", "88")
    w.file(f"{fan}/pwm1_enable", "1")
    w.link("sys/class/hwmon/hwmon1", fan)
    nvme = "sys/devices/platform/bus@0/14160000.pcie/nvme/nvme0/hwmon5"
    for key, value in (("name", "nvme"), ("temp1_input", "38850"), ("temp1_label", "Composite"),
                       ("temp1_max", "81850"), ("temp1_crit", "84850")):
        w.file(f"{nvme}/{key}", value)
    w.link("sys/class/hwmon/hwmon5", nvme)
    # Power rails.
    _write_rails(tree, w, _AGX_RAILS if board == "agx-orin" else _NX_RAILS, rail_layout)
    # GPU, CPU, EMC.
    _write_gpu(w, jetpack)
    _write_cpus(w, cores)
    debug = "sys/kernel/debug"
    for key, value in (("rate", "665600000"), ("min_rate", "204000000"),
                       ("max_rate", "3199000000"), ("mrq_rate_locked", "0")):
        w.file(f"{debug}/bpmp/debug/clk/emc/{key}", value)
    w.file(f"{debug}/cactmon/mc_all", "0")
    w.file("sys/kernel/nvpmodel_emc_cap/emc_iso_cap", "0")
    (tree.root / debug).chmod(0o700)  # debugfs is root-only
    # nvpmodel.
    sku = "p3701_0000" if board == "agx-orin" else "p3767_0000"
    conf_name = f"nvpmodel_{sku}{'_super' if conf is NvpConf.SUPER else ''}.conf"
    w.file(f"etc/nvpmodel/{conf_name}", nvpmodel_conf_text(conf, cores=cores), newline=False)
    w.link("etc/nvpmodel.conf", f"etc/nvpmodel/{conf_name}")
    w.file("var/lib/nvpmodel/status", f"pmode:{default_mode_id(conf):04d}")
    return tree


def build_bare_tree(root: Path) -> JetsonTree:
    """A container-like tree: no device tree, no L4T release, no thermal zones, no rails."""
    tree = JetsonTree(Path(root), "bare", None)
    w = _Writer(tree.root)
    w.file("etc/os-release", 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\n')
    for rel in ("sys/class/thermal", "sys/class/hwmon", "sys/bus/i2c/devices", "proc"):
        (tree.root / rel).mkdir(parents=True, exist_ok=True)
    _write_cpus(w, 2, cpufreq=False)
    return tree


@contextlib.contextmanager
def raising_reads(paths: Iterable[Path], exc: Callable[[], BaseException] | None = None
                  ) -> Iterator[None]:
    """While active, edgert's sysfs reads of ``paths`` raise ``exc()``.

    The default imitates CPython's text-mode read of an attribute that returned EAGAIN:
    ``TypeError: can't concat NoneType to bytes``. Use it to check that your code (or edgert)
    survives a reader that raises instead of returning an error code.
    """
    targets = {os.path.realpath(p) for p in paths}
    make = exc or (lambda: TypeError("can't concat NoneType to bytes"))
    original = _sysfs._read

    def read(fd: int, size: int) -> bytes:
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where in targets:
            raise make()
        return original(fd, size)

    _sysfs._read = read
    try:
        yield
    finally:
        _sysfs._read = original


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, rel: str, text: str, *, newline: bool = True) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("\n" if newline and not text.endswith("\0") else ""))
        return path

    def link(self, rel: str, target_rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Relative links keep the tree valid wherever it is copied or moved.
        os.symlink(os.path.relpath(self.root / target_rel, path.parent), path)


def _write_rails(tree: JetsonTree, w: _Writer, chips: Mapping[str, tuple[str, ...]],
                 layout: str) -> None:
    for k, (addr, labels) in enumerate(chips.items()):
        dev = f"sys/devices/platform/bus@0/c240000.i2c/i2c-1/{addr}"
        w.link(f"sys/bus/i2c/devices/{addr}", dev)
        w.link(f"sys/bus/i2c/drivers/ina3221/{addr}", dev)
        if layout == "iio":
            w.file(f"{dev}/name", "ina3221x")
            node = f"{dev}/iio:device{k}"
            for n, label in enumerate(labels):
                mv, ma = _RAIL_VALUES[label]
                w.file(f"{node}/rail_name_{n}", label)
                w.file(f"{node}/in_voltage{n}_input", str(mv))
                w.file(f"{node}/in_current{n}_input", str(ma))
                w.file(f"{node}/in_power{n}_input", str(mv * ma // 1000))
                w.file(f"{node}/crit_current_limit_{n}", "7784")
                w.file(f"{node}/warn_current_limit_{n}", "7784")
                if label != "NC":
                    tree.rails[label] = (tree.root / node, n)
            continue
        w.file(f"{dev}/name", "ina3221")
        number = 3 + k
        node = f"{dev}/hwmon/hwmon{number}"
        w.file(f"{node}/name", "ina3221")
        w.link(f"sys/class/hwmon/hwmon{number}", node)
        for n, label in enumerate(labels, 1):
            mv, ma = _RAIL_VALUES[label]
            w.file(f"{node}/in{n}_label", label)
            w.file(f"{node}/in{n}_input", str(mv))
            w.file(f"{node}/curr{n}_input", str(ma))
            w.file(f"{node}/in{n + 3}_input", str(ma // 10))  # shunt voltage channels
            if n == 1:
                for key in ("curr1_crit", "curr1_max"):
                    w.file(f"{node}/{key}", "7784")
                w.file(f"{node}/curr1_crit_alarm", "0")
                w.file(f"{node}/curr1_max_alarm", "0")
            if label != "NC":
                tree.rails[label] = (tree.root / node, n)
        w.file(f"{node}/in7_label", "sum of shunt voltages")
        w.file(f"{node}/in7_input", "61")
        w.file(f"{node}/curr4_input", "1583")


def _write_gpu(w: _Writer, jetpack: int) -> None:
    if jetpack == 5:
        dev, node_name, of_name = "sys/devices/17000000.ga10b", "17000000.ga10b", "ga10b"
        load = f"{dev}/load"
    else:
        dev, node_name, of_name = "sys/devices/platform/bus@0/17000000.gpu", "17000000.gpu", "gpu"
        load = f"{dev}/load"
    devfreq = f"{dev}/devfreq/{node_name}"
    for key, value in (("cur_freq", "306000000"), ("min_freq", "306000000"),
                       ("max_freq", "918000000"), ("governor", "nvhost_podgov"),
                       ("available_frequencies", "306000000 408000000 510000000 612000000 "
                                                 "714000000 816000000 918000000")):
        w.file(f"{devfreq}/{key}", value)
    w.link(f"{devfreq}/device", dev)
    w.file(f"{dev}/of_node/name", of_name + "\0")
    w.file(load, "0")
    w.file(f"{dev}/railgate_enable", "1")
    w.file(f"{dev}/tpc_pg_mask", "0")
    w.link(f"sys/class/devfreq/{node_name}", devfreq)


def _write_cpus(w: _Writer, cores: int, *, cpufreq: bool = True) -> None:
    base = "sys/devices/system/cpu"
    w.file(f"{base}/online", f"0-{cores - 1}")
    w.file(f"{base}/present", f"0-{cores - 1}")
    stat = ["cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0"]
    for n in range(cores):
        w.file(f"{base}/cpu{n}/online", "1")
        if cpufreq:
            for key, value in (("scaling_min_freq", "729600"), ("scaling_max_freq", "1728000"),
                               ("scaling_cur_freq", "1728000"), ("cpuinfo_max_freq", "2201600"),
                               ("cpuinfo_min_freq", "115200"), ("scaling_governor", "schedutil")):
                w.file(f"{base}/cpu{n}/cpufreq/{key}", value)
        stat.append(f"cpu{n} 1393280 32966 572056 13343292 6130 0 17875 0 0 0")
    w.file("proc/stat", "\n".join(stat))


def _closer(fds: list[int]) -> Callable[[], None]:
    def close_all() -> None:
        while fds:
            with contextlib.suppress(OSError):
                os.close(fds.pop())
    return close_all


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:  # pragma: no cover - unusual filesystems
            if err.errno != errno.ENOENT:
                raise


def _replace(path: Path, text: str) -> None:
    # Readers in another thread must see the old or the new value, never a half-written one.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if path.is_dir() and not path.is_symlink():
        path.rmdir()  # an EISDIR fault
    os.replace(tmp, path)
