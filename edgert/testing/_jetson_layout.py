"""What a fake Jetson's filesystem contains: the writers behind edgert.testing.jetson.

Paths, names and formats follow the 'Fixture facts' of the project's jetson-power reference;
frequencies, temperatures and currents are illustrative.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edgert.power._thermal import zone_alias
from edgert.testing._jetson_texts import (
    NvpConf,
    default_emc_cap_hz,
    default_mode_id,
    nvpmodel_conf_text,
)

__all__ = ["Writer", "write_bare", "write_board"]

JP5_ZONES = ("CPU-therm", "GPU-therm", "CV0-therm", "CV1-therm", "CV2-therm", "SOC0-therm",
             "SOC1-therm", "SOC2-therm", "tj-therm", "Tboard_tegra", "Tdiode_tegra")
JP6_ZONES = ("cpu-thermal", "gpu-thermal", "cv0-thermal", "cv1-thermal", "cv2-thermal",
             "soc0-thermal", "soc1-thermal", "soc2-thermal", "tj-thermal")
JP6_BOARD_ZONES = ("tboard-thermal", "tdiode-thermal")
# °C by alias; tj is the hottest on-die sensor, as on the device.
TEMPS = {"cpu": 45.5, "gpu": 44.0, "soc0": 43.25, "soc1": 44.75, "soc2": 42.5, "tj": 46.5,
         "tboard": 36.0, "tdiode": 39.5, "cv0": 41.0, "cv1": 41.0, "cv2": 41.0}

NX_RAILS = {"1-0040": ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")}
AGX_RAILS = {"1-0040": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
             "1-0041": ("NC", "VDDQ_VDD2_1V8AO", "NC")}
RAIL_VALUES = {  # (mV, mA)
    "VDD_IN": (5016, 1010), "VDD_CPU_GPU_CV": (5008, 242), "VDD_SOC": (5008, 331),
    "VDD_GPU_SOC": (5024, 480), "VDD_CPU_CV": (5016, 160), "VIN_SYS_5V0": (5000, 376),
    "VDDQ_VDD2_1V8AO": (4992, 96), "NC": (0, 0),
}

MODELS = {
    "orin-nx": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                "nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0", 8),
    "agx-orin": ("NVIDIA Jetson AGX Orin Developer Kit",
                 "nvidia,p3737-0000+p3701-0000\0nvidia,p3701-0000\0nvidia,tegra234\0", 12),
}
RELEASES = {
    5: "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
       "DATE: Tue Aug  1 19:57:35 UTC 2023\n",
    6: "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
       "DATE: Wed Jan  8 01:49:37 UTC 2025\n",
}


class Writer:
    """Writes sysfs-style files (newline-terminated) and relative links under a root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, rel: str, text: str, *, newline: bool = True) -> Path:
        """Write ``text`` at ``rel``, newline-terminated unless it ends in NUL or newline=False."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("\n" if newline and not text.endswith("\0") else ""))
        return path

    def link(self, rel: str, target_rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Relative links keep the tree valid wherever it is copied or moved.
        os.symlink(os.path.relpath(self.root / target_rel, path.parent), path)


def _write_rails(w: Writer, chips: Mapping[str, tuple[str, ...]], layout: str,
                 rails: dict[str, tuple[Path, int]]) -> None:
    for k, (addr, labels) in enumerate(chips.items()):
        dev = f"sys/devices/platform/bus@0/c240000.i2c/i2c-1/{addr}"
        w.link(f"sys/bus/i2c/devices/{addr}", dev)
        w.link(f"sys/bus/i2c/drivers/ina3221/{addr}", dev)
        if layout == "iio":
            w.file(f"{dev}/name", "ina3221x")
            node = f"{dev}/iio:device{k}"
            for n, label in enumerate(labels):
                mv, ma = RAIL_VALUES[label]
                w.file(f"{node}/rail_name_{n}", label)
                w.file(f"{node}/in_voltage{n}_input", str(mv))
                w.file(f"{node}/in_current{n}_input", str(ma))
                w.file(f"{node}/in_power{n}_input", str(mv * ma // 1000))
                w.file(f"{node}/crit_current_limit_{n}", "7784")
                w.file(f"{node}/warn_current_limit_{n}", "7784")
                if label != "NC":
                    rails[label] = (w.root / node, n)
            continue
        w.file(f"{dev}/name", "ina3221")
        number = 3 + k
        node = f"{dev}/hwmon/hwmon{number}"
        w.file(f"{node}/name", "ina3221")
        w.link(f"sys/class/hwmon/hwmon{number}", node)
        for n, label in enumerate(labels, 1):
            mv, ma = RAIL_VALUES[label]
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
                rails[label] = (w.root / node, n)
        w.file(f"{node}/in7_label", "sum of shunt voltages")
        w.file(f"{node}/in7_input", "61")
        w.file(f"{node}/curr4_input", "1583")


def _write_gpu(w: Writer, jetpack: int) -> None:
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


def _write_cpus(w: Writer, cores: int, *, cpufreq: bool = True) -> None:
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
    # Every Linux procfs has it (the kernel's default, 950000 us of RT time per second); the
    # realtime check reads it, and a tree without it made that check fail on fake trees only.
    w.file("proc/sys/kernel/sched_rt_runtime_us", "950000")
    w.file("proc/sys/kernel/sched_rt_period_us", "1000000")


def write_board(
    w: Writer, *, board: str, jetpack: int, board_zones: bool, conf: NvpConf, rail_layout: str,
    temps: Mapping[str, float],
) -> tuple[dict[str, Path], dict[str, tuple[Path, int]]]:
    """Write one board; return its zones (type → dir) and rails (label → node, channel)."""
    model, compatible, cores = MODELS[board]
    zones: dict[str, Path] = {}
    rails: dict[str, tuple[Path, int]] = {}
    # Identity.
    w.file("sys/firmware/devicetree/base/model", model + "\0")
    w.file("sys/firmware/devicetree/base/compatible", compatible)
    w.link("proc/device-tree", "sys/firmware/devicetree/base")
    w.file("etc/nv_tegra_release", RELEASES[jetpack])
    w.file("etc/os-release", f'NAME="Ubuntu"\nVERSION_ID="{"22.04" if jetpack == 6 else "20.04"}"'
                             "\nID=ubuntu\n")
    # Thermal.
    types = list(JP5_ZONES if jetpack == 5 else JP6_ZONES)
    if jetpack == 6 and board_zones:
        types += JP6_BOARD_ZONES
    values = {**TEMPS, **temps}
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
        zones[ztype] = w.root / real
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
    _write_rails(w, AGX_RAILS if board == "agx-orin" else NX_RAILS, rail_layout, rails)
    # GPU, CPU, EMC.
    _write_gpu(w, jetpack)
    _write_cpus(w, cores)
    debug = "sys/kernel/debug"
    for key, value in (("rate", "665600000"), ("min_rate", "204000000"),
                       ("max_rate", "3199000000"), ("mrq_rate_locked", "0")):
        w.file(f"{debug}/bpmp/debug/clk/emc/{key}", value)
    w.file(f"{debug}/cactmon/mc_all", "0")
    # nvpmodel writes the mode's EMC cap here (0: none); jetson_clocks pins EMC at a positive one.
    w.file("sys/kernel/nvpmodel_emc_cap/emc_iso_cap", str(default_emc_cap_hz(conf, board)))
    (w.root / debug).chmod(0o700)  # debugfs is root-only
    # nvpmodel.
    sku = "p3701_0000" if board == "agx-orin" else "p3767_0000"
    conf_name = f"nvpmodel_{sku}{'_super' if conf is NvpConf.SUPER else ''}.conf"
    w.file(f"etc/nvpmodel/{conf_name}", nvpmodel_conf_text(conf, cores=cores, board=board),
           newline=False)
    w.link("etc/nvpmodel.conf", f"etc/nvpmodel/{conf_name}")
    w.file("var/lib/nvpmodel/status", f"pmode:{default_mode_id(conf, board):04d}")
    return zones, rails


def write_bare(w: Writer) -> None:
    """A container-like tree: no device tree, no L4T release, no thermal zones, no rails."""
    w.file("etc/os-release", 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\n')
    for rel in ("sys/class/thermal", "sys/class/hwmon", "sys/bus/i2c/devices", "proc"):
        (w.root / rel).mkdir(parents=True, exist_ok=True)
    _write_cpus(w, 2, cpufreq=False)
