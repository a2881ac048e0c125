"""The fake Jetson trees and runner checked against the 'Fixture facts' of jetson-power.md.

Each test names the fact (by its number in that section) that it checks. The literal strings the
fixtures copy from the reference are also checked to still appear in it, when the reference is
present (it lives in the project's shared/ folder, outside this repository).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from edgert.power import _sysfs
from edgert.testing.jetson import NvpConf, build_bare_tree, build_jetson_tree

JP5_TYPES = ["CPU-therm", "GPU-therm", "CV0-therm", "CV1-therm", "CV2-therm", "SOC0-therm",
             "SOC1-therm", "SOC2-therm", "tj-therm", "Tboard_tegra", "Tdiode_tegra"]
JP6_TYPES = ["cpu-thermal", "gpu-thermal", "cv0-thermal", "cv1-thermal", "cv2-thermal",
             "soc0-thermal", "soc1-thermal", "soc2-thermal", "tj-thermal"]

# Strings the fixtures reproduce verbatim from the reference.
QUOTED = [
    "sys/devices/virtual/thermal/thermal_zone", "cooling_device0", "pwm-fan",
    "trip_point_0_type", "trip_point_0_temp", "104500", "99000", "step_wise",
    *JP5_TYPES, "cpu-thermal", "tj-thermal",
    "17000000.ga10b", "nvhost_podgov", "railgate_enable", "tpc_pg_mask",
    "/sys/devices/platform/bus@0/17000000.gpu/load", "scaling_governor", "schedutil",
    "cpuinfo_max_freq", "729600", "1728000", "2201600",
    "1-0040", "1-0041", "ina3221", "VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC", "VDD_GPU_SOC",
    "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO", "7784", "sum of shunt voltages",
    "pwmfan", "pwm1_enable", "/sys/kernel/debug/bpmp/debug/clk/emc/",
    "mrq_rate_locked", "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", "cactmon/mc_all",
    "<PARAM TYPE=CLOCK NAME=EMC >", "< PM_CONFIG DEFAULT=2 >", "TPC_PG_MASK",
    "NVPM WARN: fan mode is not set!", "NVPM VERB: Current mode: NV Power Mode: 40W",
    "NVPM VERB: PM_CONFIG: DEFAULT=MODE_30W(2)", "NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN",
    "NVPM WARN: Golden image context is already created",
    "NVPM WARN: Reboot required for changing to this power mode: N",
    "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:",
    "NVPM ERROR: bad input!", "NVPM ERROR: optMask is 1, no request for power mode",
    "NVPM WARN: rebooting", "pmode:0002", "2147483647",
    "Error: Run this script(/usr/bin/jetson_clocks) as a root user",
    "SOC family:tegra234  Machine:", "Active GPU TPCs: 4", "FreqOverride=0|1",
    "FAN Dynamic Speed Control=", "hwmon0_pwm1_enable=1", ", Offline CPUs: ",
]


def _reference() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    env = os.environ.get("EDGERT_REFERENCE_DIR")
    for base in ([Path(env)] if env else []) + [repo / "shared/reference",
                                                repo.parent / "shared/reference"]:
        path = base / "jetson-power.md"
        if path.is_file():
            return path.read_text()
    return None


def test_quoted_strings_still_match_the_reference() -> None:
    text = _reference()
    if text is None:
        pytest.skip("reference/jetson-power.md is not in this checkout")
    flat = " ".join(text.split())
    missing = [s for s in QUOTED if s not in text and " ".join(s.split()) not in flat]
    # The reference writes the reboot prompt's mode as N, and the JP5 Tboard/Tdiode names inline.
    assert missing == []


@pytest.fixture(params=["jp5", "jp6"])
def orin(request: pytest.FixtureRequest, tmp_path: Path):
    flavour = f"{request.param}-orin-nx"
    with build_jetson_tree(tmp_path, flavour) as tree:
        yield tree


def test_fact1_thermal_zone_layout(orin) -> None:
    root = orin.root
    types = JP5_TYPES if orin.jetpack == 5 else JP6_TYPES
    for n, ztype in enumerate(types):
        real = root / f"sys/devices/virtual/thermal/thermal_zone{n}"
        link = root / f"sys/class/thermal/thermal_zone{n}"
        assert real.is_dir()
        assert not real.is_symlink()
        assert link.is_symlink()
        assert link.resolve() == real.resolve()
        assert (real / "type").read_text() == ztype + "\n"
        assert (real / "mode").read_text() == "enabled\n"
        assert (real / "policy").read_text() == "step_wise\n"
        assert (real / "trip_point_0_type").read_text() == "critical\n"
        assert (real / "trip_point_0_temp").read_text() == "104500\n"
        assert (real / "trip_point_1_type").read_text() == "passive\n"
        assert (real / "trip_point_1_temp").read_text() == "99000\n"
        temp = real / "temp"
        if ztype.lower().startswith("cv"):
            # Like real sysfs: a regular file whose read (through edgert) fails with EAGAIN.
            assert stat.S_ISREG(temp.stat().st_mode)
            assert _sysfs.probe(temp) == (None, "EAGAIN")
        else:
            assert re.fullmatch(r"-?\d+\n", temp.read_text())
    assert not (root / f"sys/class/thermal/thermal_zone{len(types)}").exists()
    cdev = root / "sys/class/thermal/cooling_device0"
    assert (cdev / "type").read_text() == "pwm-fan\n"
    assert int((cdev / "cur_state").read_text()) <= int((cdev / "max_state").read_text())


def test_fact1_jp6_optional_board_zones(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin", board_zones=True) as tree:
        base = tree.root / "sys/class/thermal"
        assert (base / "thermal_zone9/type").read_text() == "tboard-thermal\n"
        assert (base / "thermal_zone10/type").read_text() == "tdiode-thermal\n"


def test_fact2_gpu_devfreq(orin) -> None:
    root = orin.root
    if orin.jetpack == 5:
        dev = root / "sys/devices/17000000.ga10b"
        node = dev / "devfreq/17000000.ga10b"
        link = root / "sys/class/devfreq/17000000.ga10b"
        of_name = b"ga10b\0"
    else:
        dev = root / "sys/devices/platform/bus@0/17000000.gpu"
        link = root / "sys/class/devfreq/17000000.gpu"
        node = dev / "devfreq/17000000.gpu"
        of_name = b"gpu\0"
    assert link.resolve() == node.resolve()
    for name in ("cur_freq", "min_freq", "max_freq", "available_frequencies"):
        assert (node / name).read_text().split()[0].isdigit()
    assert (node / "governor").read_text() == "nvhost_podgov\n"
    assert (link / "device/of_node/name").read_bytes() == of_name
    assert 0 <= int((dev / "load").read_text()) <= 1000
    assert (dev / "railgate_enable").is_file()
    assert (dev / "tpc_pg_mask").is_file()


def test_fact3_cpu(orin) -> None:
    root = orin.root
    assert (root / "sys/devices/system/cpu/online").read_text() == "0-7\n"
    cpu = root / "sys/devices/system/cpu/cpu3"
    assert (cpu / "online").read_text() == "1\n"
    freq = cpu / "cpufreq"
    assert (freq / "scaling_governor").read_text() == "schedutil\n"
    for name in ("scaling_min_freq", "scaling_max_freq", "scaling_cur_freq", "cpuinfo_max_freq"):
        assert (freq / name).read_text().strip() in {"729600", "1728000", "2201600"}
    stat_lines = (root / "proc/stat").read_text().splitlines()
    assert [line.split()[0] for line in stat_lines[1:]] == [f"cpu{n}" for n in range(8)]


def test_fact4_ina3221_orin_nx(orin) -> None:
    root = orin.root
    dev = root / "sys/bus/i2c/devices/1-0040"
    assert (dev / "name").read_text() == "ina3221\n"
    hw = dev / "hwmon/hwmon3"
    labels = [(hw / f"in{n}_label").read_text().strip() for n in (1, 2, 3)]
    assert labels == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert (hw / "in1_input").read_text() == "5016\n"
    assert (hw / "curr1_input").read_text() == "1010\n"
    assert (hw / "curr1_crit").read_text() == (hw / "curr1_max").read_text() == "7784\n"
    assert (hw / "curr1_crit_alarm").read_text() == "0\n"
    assert (hw / "in7_label").read_text() == "sum of shunt voltages\n"
    driver = root / "sys/bus/i2c/drivers/ina3221/1-0040"
    assert driver.resolve() == dev.resolve()


def test_fact4_ina3221_agx_orin(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp5-agx-orin") as tree:
        devices = tree.root / "sys/bus/i2c/devices"
        found = {}
        for addr in ("1-0040", "1-0041"):
            (hw,) = (devices / addr / "hwmon").iterdir()
            found[addr] = [(hw / f"in{n}_label").read_text().strip() for n in (1, 2, 3)]
        assert found == {"1-0040": ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
                         "1-0041": ["NC", "VDDQ_VDD2_1V8AO", "NC"]}


def test_fact5_fan(orin) -> None:
    hwmon = orin.root / "sys/class/hwmon"
    names = {p.name: (p / "name").read_text().strip() for p in hwmon.iterdir()}
    fan = next(hwmon / k for k, v in names.items() if v == "pwmfan")
    assert 0 <= int((fan / "pwm1").read_text()) <= 255
    assert (fan / "pwm1_enable").is_file()
    tach = next(hwmon / k for k, v in names.items() if v == "pwm_tach")
    assert int((tach / "rpm").read_text()) >= 0


def test_fact6_emc_is_root_only(orin) -> None:
    root = orin.root
    emc = root / "sys/kernel/debug/bpmp/debug/clk/emc"
    assert (emc / "rate").read_text() == "665600000\n"
    assert (emc / "min_rate").read_text() == "204000000\n"
    assert (emc / "max_rate").read_text() == "3199000000\n"
    assert (emc / "mrq_rate_locked").read_text() == "0\n"
    assert (root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap").read_text() == "0\n"
    assert (root / "sys/kernel/debug/cactmon/mc_all").is_file()
    assert stat.S_IMODE((root / "sys/kernel/debug").stat().st_mode) == 0o700


def test_fact7_nvpmodel_conf(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        text = (tree.root / "etc/nvpmodel.conf").read_text()
    assert text.startswith("#")
    assert "< PARAM TYPE=FILE NAME=CPU_ONLINE >\nCORE_0 /sys/devices/system/cpu/cpu0/online\n" \
        in text
    assert "< PARAM TYPE=FILE NAME=TPC_POWER_GATING >" in text
    assert "< PARAM TYPE=CLOCK NAME=CPU_A78_0 >" in text
    assert "< PARAM TYPE=CLOCK NAME=GPU >" in text
    assert re.search(r"^MAX_FREQ_KNEXT /sys/devices/platform/17000000.gpu/devfreq_dev/max_freq$",
                     text, re.M)
    assert "\n<PARAM TYPE=CLOCK NAME=EMC >\n" in text
    maxn = _section(text, "< POWER_MODEL ID=0 NAME=MAXN >")
    assert "CPU_A78_0 MAX_FREQ -1" in maxn
    assert "TPC_POWER_GATING TPC_PG_MASK 0" in maxn
    m15 = _section(text, "< POWER_MODEL ID=1 NAME=MODE_15W >")
    assert all(f"CPU_ONLINE CORE_{n} 0" in m15 for n in range(4, 12))
    assert all(f"CPU_ONLINE CORE_{n} 1" in m15 for n in range(4))
    assert "TPC_POWER_GATING TPC_PG_MASK 248" in m15
    m30 = _section(text, "< POWER_MODEL ID=2 NAME=MODE_30W >")
    assert "TPC_POWER_GATING TPC_PG_MASK 240" in m30
    assert text.rstrip().endswith("< PM_CONFIG DEFAULT=2 >")


def test_fact7_conf_variants(tmp_path: Path) -> None:
    texts = {}
    for variant in (NvpConf.ID_GAP, NvpConf.MISSING_DEFAULT, NvpConf.SUPER):
        with build_jetson_tree(tmp_path / variant.value, nvpmodel_conf=variant) as tree:
            texts[variant] = (tree.root / "etc/nvpmodel.conf").read_text()
            if variant is NvpConf.SUPER:
                conf = (tree.root / "etc/nvpmodel.conf").resolve()
                assert conf.name.endswith("_super.conf")
    ids = [int(i) for i in re.findall(r"POWER_MODEL ID=(\d+)", texts[NvpConf.ID_GAP])]
    assert ids == [0, 1, 3, 4]  # the default flavour is an Orin NX: MAXN, 10W, 15W, 25W
    assert "< PM_CONFIG DEFAULT=7 >" in texts[NvpConf.MISSING_DEFAULT]
    assert "NAME=MAXN_SUPER" in texts[NvpConf.SUPER]


def _section(text: str, header: str) -> str:
    return text.split(header, 1)[1].split("<", 1)[0]


def test_fact8_nvpmodel_outputs(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        assert (tree.root / "var/lib/nvpmodel/status").read_text() == "pmode:0002\n"
        run = tree.runner()
        assert run(["nvpmodel", "-q"]).stdout == "NV Power Mode: MODE_30W\n2\n"
        warn = tree.runner(fan_warning=True)(["nvpmodel", "-q"]).stdout
        assert warn.splitlines()[0] == "NVPM WARN: fan mode is not set!"
        user = tree.runner(as_root=False)(["nvpmodel", "-q"])
        assert "NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13" \
            in user.stderr
        verbose = run(["nvpmodel", "-q", "--verbose"]).stdout.splitlines()
        i = verbose.index("NVPM VERB: Current mode: NV Power Mode: MODE_30W")
        assert verbose[i + 1] == "2"
        assert re.fullmatch(r"NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH \S+: "
                            r"REAL_VAL: 1 CONF_VAL: 1", verbose[i + 2])
        parsed = run(["nvpmodel", "-p", "--verbose"]).stdout
        assert "NVPM VERB: PM_CONFIG: DEFAULT=MODE_30W(2)" in parsed
        assert "NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN" in parsed
        assert "NVPM VERB: CPU_A78_0 MAX_FREQ 2147483647" in parsed  # -1 echoed as INT_MAX
        prompt = ["NVPM WARN: Golden image context is already created",
                  "NVPM WARN: Reboot required for changing to this power mode: 1",
                  "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:"]
        declined = run(["nvpmodel", "-m", "1"], stdin="")
        assert declined.stdout.splitlines() == prompt
        assert declined.stderr.splitlines() == [
            "NVPM ERROR: bad input!", "NVPM ERROR: optMask is 1, no request for power mode"]
        assert run(["nvpmodel", "-q"]).stdout == "NV Power Mode: MODE_30W\n2\n"
        accepted = run(["nvpmodel", "-m", "1"], stdin="yes\n")
        assert accepted.stdout.splitlines() == [*prompt, "NVPM WARN: rebooting"]
        assert (tree.root / "var/lib/nvpmodel/status").read_text() == "pmode:0001\n"
        bad = run(["nvpmodel", "-m", "5"])
        assert bad.returncode != 0
        assert "NVPM ERROR" in bad.stderr


@pytest.mark.parametrize("dialect", ["old", "new"])
def test_fact9_jetson_clocks(tmp_path: Path, dialect: str) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        run = tree.runner(clocks_dialect=dialect)
        lines = run(["jetson_clocks", "--show"]).stdout.splitlines()
        assert lines[0] == "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit"
        assert lines[-1] == "NV Power Mode: MODE_30W"
        cpu_lines = [line for line in lines if line.startswith("cpu")]
        if dialect == "old":
            assert lines[1] == "Online CPUs: 0-7"
            assert all(re.match(r"cpu\d+: Online=[01] Governor=", c) for c in cpu_lines)
            assert len(cpu_lines) == 12
        else:
            assert lines[1] == "Online CPUs: 0-7, Offline CPUs: 8-11"
            assert all(re.match(r"cpu\d+:  Governor=", c) for c in cpu_lines)
            assert [c.split(":")[0] for c in cpu_lines][:3] == ["cpu0", "cpu1", "cpu2"]
            assert "Active GPU TPCs: 4" in lines
            assert any(line.startswith("FAN Dynamic Speed Control=") for line in lines)
        assert any(re.match(r"GPU MinFreq=\d+ MaxFreq=\d+ CurrentFreq=\d+$", x) for x in lines)
        assert any(re.match(r"EMC MinFreq=\d+ MaxFreq=\d+ CurrentFreq=\d+ FreqOverride=[01]$", x)
                   for x in lines)
        denied = tree.runner(as_root=False)(["jetson_clocks"])
        assert (denied.returncode, denied.stdout) == (
            1, "Error: Run this script(/usr/bin/jetson_clocks) as a root user\n")
        store = tmp_path / "l4t_dfs.conf"
        run(["jetson_clocks", "--store", str(store)])
        assert all(re.fullmatch(r"/sys/\S+:\S+", line) for line in store.read_text().splitlines())


def test_new_dialect_lists_cpus_in_lexical_order(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        lines = tree.runner(mode_id=0)(["jetson_clocks", "--show"]).stdout.splitlines()
        order = [line.split(":")[0] for line in lines if line.startswith("cpu")]
        assert order[:4] == ["cpu0", "cpu1", "cpu10", "cpu11"]


def test_doctor_flavours_identify_themselves(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "6", "jp6-orin-nx") as jp6, \
            build_jetson_tree(tmp_path / "5", "jp5-agx-orin") as jp5, \
            build_bare_tree(tmp_path / "bare") as bare:
        model = jp6.root / "proc/device-tree/model"
        assert model.read_bytes() == b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0"
        assert (jp6.root / "proc/device-tree").is_symlink()
        assert b"nvidia,tegra234" in (jp6.root / "proc/device-tree/compatible").read_bytes()
        assert (jp6.root / "etc/nv_tegra_release").read_text().startswith(
            "# R36 (release), REVISION: 4.3")
        assert (jp5.root / "etc/nv_tegra_release").read_text().startswith(
            "# R35 (release), REVISION: 4.1")
        assert (jp5.root / "proc/device-tree/model").read_bytes().startswith(
            b"NVIDIA Jetson AGX Orin")
        assert not (bare.root / "proc/device-tree").exists()
        assert not (bare.root / "etc/nv_tegra_release").exists()
        assert not (bare.root / "etc/nvpmodel.conf").exists()
        assert list((bare.root / "sys/class/thermal").iterdir()) == []


def test_trees_have_the_rt_throttling_knob(tmp_path: Path) -> None:
    # Every Linux procfs has it; without it the doctor's realtime check failed on fakes only.
    with build_jetson_tree(tmp_path / "j") as tree, build_bare_tree(tmp_path / "b") as bare:
        for root in (tree.root, bare.root):
            assert (root / "proc/sys/kernel/sched_rt_runtime_us").read_text() == "950000\n"
