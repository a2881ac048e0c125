"""JetsonClocks: both --show dialects, enable with a stored baseline, restore, root errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgert.errors import (
    CommandError,
    CommandTimeoutError,
    NotSupportedError,
    PermissionDeniedError,
)
from edgert.power import ClockState, JetsonClocks, parse_jetson_clocks_show
from edgert.testing.jetson import build_jetson_tree

IDLE = "IdleStates: WFI=1 c7=1"
OLD_SHOW = "\n".join([
    "SOC family:tegra234  Machine:NVIDIA Orin Nano Developer Kit",
    "Online CPUs: 0-5",
    f"cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=1510400 {IDLE}",
    f"cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=729600 {IDLE}",
    f"cpu4: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=729600 {IDLE}",
    "GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000",
    "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0",
    "Fan: PWM=88",
    "NV Power Mode: 15W",
]) + "\n"

PINNED = "MinFreq=1728000 MaxFreq=1728000 CurrentFreq=1728000 IdleStates: WFI=0 c7=0 "
NEW_SHOW = "\n".join([
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit "
    "Super",
    "Online CPUs: 0-5, Offline CPUs: ",
    f"cpu0:  Governor=schedutil {PINNED}",
    f"cpu1:  Governor=schedutil {PINNED}",
    "GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000",
    "Active GPU TPCs: 4",
    "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1",
    "FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1=88",
    "FAN hwmon0_pwm1_enable=1",
    "NV Power Mode: MAXN_SUPER",
]) + "\n"


def test_parse_old_dialect() -> None:
    report = parse_jetson_clocks_show(OLD_SHOW)
    assert (report.soc_family, report.machine) == ("tegra234", "NVIDIA Orin Nano Developer Kit")
    assert report.online_cpus == "0-5"
    assert report.offline_cpus is None
    assert [c.index for c in report.cpus] == [0, 1, 4]
    cpu0 = report.cpus[0]
    assert (cpu0.online, cpu0.governor, cpu0.min_khz, cpu0.max_khz, cpu0.cur_khz) == (
        True, "schedutil", 729600, 1510400, 1510400)
    assert dict(cpu0.idle_states) == {"WFI": 1, "c7": 1}
    assert report.cpus[2].online is False
    assert report.gpu is not None
    assert report.gpu.max_hz == 624750000
    assert report.emc is not None
    assert report.emc.cur_hz == 2133000000
    assert report.emc_freq_override is False
    assert dict(report.fan) == {"PWM": "88"}
    assert report.power_mode == "15W"
    assert report.active_gpu_tpcs is None
    assert report.state is ClockState.DYNAMIC


def test_parse_new_dialect() -> None:
    report = parse_jetson_clocks_show(NEW_SHOW)
    assert report.offline_cpus == ""
    assert [c.online for c in report.cpus] == [None, None]
    assert report.active_gpu_tpcs == 4
    assert report.emc_freq_override is True
    assert dict(report.fan) == {"Dynamic Speed Control": "nvfancontrol", "hwmon0_pwm1": "88",
                                "hwmon0_pwm1_enable": "1"}
    assert report.power_mode == "MAXN_SUPER"
    assert report.state is ClockState.PINNED


def test_state_unknown_without_clock_lines() -> None:
    assert parse_jetson_clocks_show("NV Power Mode: 15W\n").state is ClockState.UNKNOWN


@pytest.mark.parametrize("dialect", ["old", "new"])
def test_enable_stores_a_baseline_then_pins_and_restore_undoes_it(tmp_path: Path,
                                                                  dialect: str) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        runner = tree.runner(clocks_dialect=dialect)
        clocks = JetsonClocks(tree.root, runner=runner)
        before = clocks.show()
        assert before.state is ClockState.DYNAMIC
        assert before.machine == "NVIDIA Jetson AGX Orin Developer Kit"
        assert before.power_mode == "MODE_30W"
        assert len([c for c in before.cpus if c.online is not False]) == 8
        assert not clocks.has_baseline
        after = clocks.enable()
        assert after.state is ClockState.PINNED
        assert clocks.state() is ClockState.PINNED
        args = [c.argv[1:] for c in runner.calls]
        store = args.index(("--store", str(clocks.baseline_path)))
        assert args[store + 1] == ()  # the bare run comes after the baseline exists
        assert clocks.has_baseline
        lines = clocks.baseline_path.read_text().splitlines()
        assert lines
        assert all(line.startswith("/sys/") and ":" in line for line in lines)
        assert all(c.stdin == "" for c in runner.calls)
        # Enabling again runs nothing but --show and keeps the first baseline.
        n = len(runner.calls)
        assert clocks.enable().state is ClockState.PINNED
        assert [c.argv[1:] for c in runner.calls[n:]] == [("--show",)]
        restored = clocks.restore()
        assert restored.state is ClockState.DYNAMIC
        assert runner.calls[-2].argv[1:] == ("--restore", str(clocks.baseline_path))


def test_baseline_goes_under_root_by_default(tmp_path: Path) -> None:
    clocks = JetsonClocks(tmp_path)
    assert clocks.baseline_path == tmp_path / "run/edgert/l4t_dfs.conf"


def test_stale_baseline_is_replaced_not_prompted_for(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        runner = tree.runner()
        clocks = JetsonClocks(tree.root, runner=runner)
        clocks.baseline_path.parent.mkdir(parents=True)
        clocks.baseline_path.write_text("/sys/stale:1\n")
        clocks.enable()
        assert "/sys/stale:1" not in clocks.baseline_path.read_text()


def test_restore_without_baseline(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        runner = tree.runner()
        with pytest.raises(CommandError, match="no jetson_clocks baseline"):
            JetsonClocks(tree.root, runner=runner).restore()
        assert runner.calls == []


def test_already_pinned_by_someone_else_stores_no_baseline(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        runner = tree.runner()
        runner.pinned = True
        clocks = JetsonClocks(tree.root, runner=runner)
        assert clocks.enable().state is ClockState.PINNED
        assert not clocks.has_baseline
        with pytest.raises(CommandError, match="no jetson_clocks baseline"):
            clocks.restore()


@pytest.mark.parametrize("call", ["show", "enable", "state"])
def test_root_only_errors_are_explained(tmp_path: Path, call: str) -> None:
    with build_jetson_tree(tmp_path) as tree:
        clocks = JetsonClocks(tree.root, runner=tree.runner(as_root=False))
        with pytest.raises(PermissionDeniedError, match="must run as root") as info:
            getattr(clocks, call)()
        assert info.value.hint is not None
        assert "root" in info.value.hint


def test_missing_and_hanging_jetson_clocks(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        with pytest.raises(NotSupportedError, match="no such program"):
            JetsonClocks(tree.root, runner=tree.runner(missing=["jetson_clocks"])).show()
        runner = tree.runner(hang=["jetson_clocks"])
        with pytest.raises(CommandTimeoutError):
            JetsonClocks(tree.root, runner=runner, timeout_s=1.5).show()
        assert runner.calls[-1].timeout == 1.5


def test_clocks_that_do_not_pin_are_an_error(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        inner = tree.runner()

        def stubborn(argv, *, stdin=None, timeout=None):
            res = inner(argv, stdin=stdin, timeout=timeout)
            inner.pinned = False
            return res

        with pytest.raises(CommandError, match="not pinned"):
            JetsonClocks(tree.root, runner=stubborn).enable()


def test_failed_run_is_a_command_error(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        inner = tree.runner()

        def broken(argv, *, stdin=None, timeout=None):
            if argv[1:] == ["--show"] or argv[1:] == ("--show",):
                return inner(argv, stdin=stdin, timeout=timeout)
            return type("R", (), {"returncode": 2, "stdout": "", "stderr": "boom\n"})()

        with pytest.raises(CommandError, match="exit 2") as info:
            JetsonClocks(tree.root, runner=broken).enable()
        assert info.value.returncode == 2
        assert info.value.stderr == "boom\n"


# -- EMC pinned at the mode's cap (trial r1) --------------------------------------------------

_AGX_15W_PINNED = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-3, Offline CPUs: 4-11
cpu0:  Governor=schedutil MinFreq=1113600 MaxFreq=1113600 CurrentFreq=1113600 IdleStates: WFI=0 c7=0
cpu1:  Governor=schedutil MinFreq=1113600 MaxFreq=1113600 CurrentFreq=1113600 IdleStates: WFI=0 c7=0
GPU MinFreq=408000000 MaxFreq=408000000 CurrentFreq=408000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride={override}
NV Power Mode: MODE_15W
"""


def test_emc_pinned_at_the_mode_cap_reads_pinned() -> None:
    # jetson_clocks prints EMC MaxFreq as the hardware maximum but pins the rate at a positive
    # emc_iso_cap: CurrentFreq = cap < MaxFreq is pinned, not dynamic.
    locked = _AGX_15W_PINNED.format(override=1)
    assert parse_jetson_clocks_show(locked).state is ClockState.PINNED
    with_cap = parse_jetson_clocks_show(locked, emc_cap_hz=2133000000)
    assert with_cap.emc_ceiling_hz == 2133000000
    assert with_cap.state is ClockState.PINNED
    # Without FreqOverride, only the known cap tells that 2133 MHz is the ceiling.
    unlocked = _AGX_15W_PINNED.format(override=0)
    assert parse_jetson_clocks_show(unlocked).state is ClockState.DYNAMIC
    assert parse_jetson_clocks_show(unlocked, emc_cap_hz=2133000000).state is ClockState.PINNED
    # Known to be uncapped (0), or an EMC above the cap: not pinned there.
    assert parse_jetson_clocks_show(unlocked, emc_cap_hz=0).state is ClockState.DYNAMIC
    above = locked.replace("CurrentFreq=2133000000", "CurrentFreq=3199000000")
    assert parse_jetson_clocks_show(above, emc_cap_hz=2133000000).state is ClockState.DYNAMIC
    idle = unlocked.replace("CurrentFreq=2133000000", "CurrentFreq=665600000")
    assert parse_jetson_clocks_show(idle, emc_cap_hz=2133000000).state is ClockState.DYNAMIC


@pytest.mark.parametrize("dialect", ["old", "new"])
def test_enable_in_a_mode_with_an_emc_cap(tmp_path: Path, dialect: str) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        runner = tree.runner(mode_id=1, clocks_dialect=dialect)  # MODE_15W: EMC cap 2133 MHz
        cap = tree.root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap"
        assert cap.read_text().strip() == "2133000000"  # nvpmodel wrote the mode's cap
        clocks = JetsonClocks(tree.root, runner=runner)
        assert clocks.show().state is ClockState.DYNAMIC
        after = clocks.enable()
        assert after.state is ClockState.PINNED
        assert after.emc_cap_hz == 2133000000
        # The fake pins EMC at the cap, as the hardware does, never above it.
        assert after.emc is not None
        assert (after.emc.max_hz, after.emc.cur_hz) == (3199000000, 2133000000)


def test_emc_cap_comes_from_the_conf_when_sysfs_lacks_it(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        (tree.root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap").unlink()
        runner = tree.runner(mode_id=1)
        clocks = JetsonClocks(tree.root, runner=runner)
        assert clocks.enable().emc_cap_hz == 2133000000


def test_a_low_override_under_a_known_cap_is_not_jetson_clocks() -> None:
    """Found by review: with FreqOverride=1 any EMC rate under the ceiling read as pinned, e.g.
    204 MHz under a 2133 MHz cap (another tool's override, not jetson_clocks)."""
    from edgert.power._clocks import parse_jetson_clocks_show

    def state(cur: int, cap: int | None) -> str:
        text = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin\n"
                "Online CPUs: 0-1\n"
                "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 "
                "CurrentFreq=2201600 IdleStates: C1=0 c7=0\n"
                "cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 "
                "CurrentFreq=2201600 IdleStates: C1=0 c7=0\n"
                "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n"
                f"EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq={cur} FreqOverride=1\n"
                "NV Power Mode: MODE_15W\n")
        return str(parse_jetson_clocks_show(text, emc_cap_hz=cap).state)

    assert state(2133000000, 2133000000).endswith("pinned")
    assert state(2099200000, 2133000000).endswith("pinned")  # the table's entry below the cap
    assert not state(204000000, 2133000000).endswith("pinned")
    assert not state(204000000, 0).endswith("pinned")
