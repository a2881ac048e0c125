"""PowerRails against fake INA3221 trees: Orin NX and AGX Orin, hwmon and iio layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgert.power import PowerRails, TotalMethod
from edgert.testing.jetson import Fault, build_bare_tree, build_jetson_tree


@pytest.mark.parametrize("flavour", ["jp6-orin-nx", "jp5-orin-nx"])
def test_orin_nx_rails_and_total_from_vdd_in(tmp_path: Path, flavour: str) -> None:
    with build_jetson_tree(tmp_path, flavour) as tree:
        rails = PowerRails(tree.root)
        # Found through /sys/bus/i2c/devices, the driver dir and /sys/class/hwmon: listed once.
        assert rails.names == ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")
        readings = rails.read()
        vin = readings["VDD_IN"]
        assert (vin.voltage_mv, vin.current_ma) == (5016, 1010)
        assert vin.power_mw == pytest.approx(5016 * 1010 / 1000)
        assert (vin.warn_current_ma, vin.crit_current_ma) == (7784, 7784)
        assert (vin.warn_alarm, vin.crit_alarm) == (False, False)
        soc = readings["VDD_SOC"]
        assert soc.crit_current_ma is None
        assert soc.crit_alarm is None
        total = rails.total(readings)
        assert total.method is TotalMethod.INPUT_RAIL
        assert total.rails == ("VDD_IN",)
        assert total.power_mw == pytest.approx(vin.power_mw)


@pytest.mark.parametrize("flavour", ["jp6-agx-orin", "jp5-agx-orin"])
def test_agx_orin_skips_nc_channels_and_sums(tmp_path: Path, flavour: str) -> None:
    with build_jetson_tree(tmp_path, flavour) as tree:
        rails = PowerRails(tree.root)
        assert rails.names == ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")
        readings = rails.read()
        total = rails.total(readings)
        assert total.method is TotalMethod.SUM
        assert set(total.rails) == set(rails.names)
        assert total.power_mw == pytest.approx(sum(r.power_mw or 0 for r in readings.values()))


def test_shunt_sum_channel_is_ignored(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        node, _n = tree.rails["VDD_IN"]
        assert (node / "in7_label").read_text().strip() == "sum of shunt voltages"
        (node / "curr7_input").write_text("1583\n")  # even if a driver exposed a current
        assert "sum of shunt voltages" not in PowerRails(tree.root).read()


def test_failing_rail_reads_none_and_total_says_what_is_missing(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        node, n = tree.rails["VDD_CPU_CV"]
        tree.fail(node / f"curr{n}_input", Fault.EAGAIN)
        rails = PowerRails(tree.root)
        cpu = rails.read()["VDD_CPU_CV"]
        assert cpu.current_ma is None
        assert cpu.power_mw is None
        assert cpu.voltage_mv == 5016
        total = rails.total()
        assert total.method is TotalMethod.SUM
        assert total.missing == ("VDD_CPU_CV",)
        assert "VDD_CPU_CV" not in total.rails
        # A sum without a rail counts it as 0 W: no total, only a lower bound kept apart.
        assert total.power_mw is None
        assert not total.complete
        readable = [r.power_mw for r in rails.read().values() if r.power_mw is not None]
        assert total.partial_mw == pytest.approx(sum(readable))


def test_failing_input_rail_gives_no_total_rather_than_a_wrong_one(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        node, n = tree.rails["VDD_IN"]
        tree.fail(node / f"in{n}_input", Fault.GARBAGE)
        total = PowerRails(tree.root).total()
        assert total.method is TotalMethod.INPUT_RAIL
        assert total.power_mw is None
        assert total.missing == ("VDD_IN",)


def test_values_and_alarms_follow_the_tree(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        rails = PowerRails(tree.root)
        tree.set_rail("VDD_IN", voltage_mv=5000, current_ma=2000, crit_alarm=True)
        vin = rails.read()["VDD_IN"]
        assert vin.power_mw == 10000.0
        assert vin.crit_alarm is True


def test_iio_layout(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp5-agx-orin", rail_layout="iio") as tree:
        rails = PowerRails(tree.root)
        assert rails.names == ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")
        gpu = rails.read()["VDD_GPU_SOC"]
        assert (gpu.voltage_mv, gpu.current_ma) == (5024, 480)
        assert gpu.power_mw == 5024 * 480 // 1000  # the iio node's own mW reading
        assert gpu.crit_current_ma == 7784
        assert gpu.crit_alarm is None
        tree.set_rail("VDD_GPU_SOC", current_ma=900)
        assert rails.read()["VDD_GPU_SOC"].current_ma == 900


def test_no_rails(tmp_path: Path) -> None:
    with build_bare_tree(tmp_path) as tree:
        rails = PowerRails(tree.root)
        assert rails.read() == {}
        total = rails.total()
        assert total.method is TotalMethod.NONE
        assert total.power_mw is None


def test_nc_matching_is_by_word(tmp_path: Path) -> None:
    node = tmp_path / "sys/bus/i2c/devices/1-0040"
    hw = node / "hwmon/hwmon2"
    hw.mkdir(parents=True)
    (node / "name").write_text("ina3221\n")
    labels = ["VDD_SYNC", "NC", "VDD NC"]
    for n, label in enumerate(labels, 1):
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text("5000\n")
        (hw / f"curr{n}_input").write_text("100\n")
    assert PowerRails(tmp_path).names == ("VDD_SYNC",)
