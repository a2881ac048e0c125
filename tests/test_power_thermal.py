"""ThermalZones and the sysfs readers against fake JetPack 5 and 6 trees."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from edgert._fileio import read_file
from edgert.errors import NotSupportedError
from edgert.power import ThermalZones, _sysfs, zone_alias
from edgert.testing.jetson import Fault, build_bare_tree, build_jetson_tree, raising_reads

JP6_TYPES = ["cpu-thermal", "gpu-thermal", "cv0-thermal", "cv1-thermal", "cv2-thermal",
             "soc0-thermal", "soc1-thermal", "soc2-thermal", "tj-thermal"]
JP5_TYPES = ["CPU-therm", "GPU-therm", "CV0-therm", "CV1-therm", "CV2-therm", "SOC0-therm",
             "SOC1-therm", "SOC2-therm", "tj-therm", "Tboard_tegra", "Tdiode_tegra"]


@pytest.fixture(params=["jp6-orin-nx", "jp5-orin-nx", "jp6-agx-orin", "jp5-agx-orin"])
def tree(request: pytest.FixtureRequest, tmp_path: Path):
    with build_jetson_tree(tmp_path, request.param) as t:
        yield t


def test_discovers_zones_in_index_order_with_release_names(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "6", "jp6-orin-nx") as jp6, \
            build_jetson_tree(tmp_path / "5", "jp5-orin-nx") as jp5:
        assert list(ThermalZones(jp6.root).names) == JP6_TYPES
        assert list(ThermalZones(jp5.root).names) == JP5_TYPES


def test_read_is_keyed_by_type_and_answers_aliases_on_both_releases(tree) -> None:
    readings = ThermalZones(tree.root).read()
    assert readings["tj"] == 46.5
    assert readings["cpu"] == 45.5
    assert readings["gpu"] == 44.0
    assert readings["soc0"] == 43.25
    assert "tj" in readings
    assert readings.get("tj") == 46.5
    assert readings.get("nonexistent") is None
    assert "nonexistent" not in readings
    with pytest.raises(KeyError):
        readings["nonexistent"]
    # Iteration yields the real type names, never the aliases.
    assert "tj" not in list(readings)
    assert ("tj-thermal" in readings) != ("tj-therm" in readings)


def test_failing_cv_zones_read_none_and_say_eagain(tree) -> None:
    zones = ThermalZones(tree.root)
    readings = zones.read()
    for cv in ("cv0", "cv1", "cv2"):
        assert readings[cv] is None
        snap = zones.zone(cv)
        assert snap.temp_c is None
        assert snap.error == "EAGAIN"
    assert zones.zone("tj").error is None


def test_eagain_fixture_is_a_regular_file_whose_reads_fail_with_eagain(tmp_path: Path) -> None:
    # Real sysfs attributes are regular files whose read() fails; the fake keeps that shape
    # (edgert refuses FIFOs) and fails reads made through edgert's reader until it is closed.
    with build_jetson_tree(tmp_path) as tree:
        path = tree.zone_dir("cv0") / "temp"
        assert stat.S_ISREG(path.stat().st_mode)
        with pytest.raises(BlockingIOError) as info:
            read_file(path, max_bytes=64, read=_sysfs._read)
        assert info.value.errno == errno.EAGAIN
    assert _sysfs.probe(path) == (None, "empty")  # no made-up reading once released


@pytest.mark.parametrize(("fault", "reason"), [
    (Fault.EISDIR, "EISDIR"),
    (Fault.MISSING, None),  # a zone without temp is not discovered at all
    (Fault.EMPTY, "empty"),
    (Fault.GARBAGE, "not-an-integer"),
    (Fault.SENTINEL, "sentinel"),
])
def test_each_failure_reads_none_and_never_raises(tmp_path: Path, fault: Fault,
                                                   reason: str | None) -> None:
    with build_jetson_tree(tmp_path, cv_fault=None) as tree:
        tree.set_temp("gpu", fault)
        zones = ThermalZones(tree.root)
        readings = zones.read()
        assert readings["tj"] == 46.5
        if reason is None:
            assert "gpu" not in zones.aliases
            return
        assert readings["gpu"] is None
        assert zones.temp_c("gpu") is None
        assert zones.zone("gpu").error == reason


def test_zone_failing_after_discovery_reads_none(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, cv_fault=None) as tree:
        zones = ThermalZones(tree.root)
        assert zones.read()["cv1"] == 41.0
        tree.set_temp("cv1", Fault.EAGAIN)
        assert zones.read()["cv1"] is None
        (tree.zone_dir("cpu") / "temp").unlink()  # the sensor vanished
        assert zones.read()["cpu"] is None
        tree.set_temp("cv1", 55.0)
        assert zones.read()["cv1"] == 55.0


def test_text_mode_typeerror_quirk_is_survived(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, cv_fault=None) as tree:
        zones = ThermalZones(tree.root)
        targets = [tree.zone_dir(cv) / "temp" for cv in ("cv0", "cv1", "cv2")]
        with raising_reads(targets):
            readings = zones.read()
            snap = zones.zone("cv2")
        assert [readings[cv] for cv in ("cv0", "cv1", "cv2")] == [None, None, None]
        assert snap.error == "TypeError"
        assert readings["tj"] == 46.5
        assert zones.read()["cv0"] == 41.0  # restored afterwards


def test_any_exception_from_the_reader_is_a_none_reading(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, cv_fault=None) as tree:
        zones = ThermalZones(tree.root)
        target = tree.zone_dir("tj") / "temp"
        for exc in (lambda: OSError(errno.EINVAL, "bpmp"), lambda: OSError(errno.ENODATA, "x"),
                    lambda: ValueError("bad")):
            with raising_reads([target], exc):
                assert zones.read()["tj"] is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files anyway")
def test_unreadable_zone_reads_none_for_a_user(tmp_path: Path) -> None:  # pragma: no cover
    with build_jetson_tree(tmp_path, cv_fault=None) as tree:
        tree.set_temp("gpu", Fault.UNREADABLE)
        zones = ThermalZones(tree.root)
        assert zones.read()["gpu"] is None
        assert zones.zone("gpu").error == "EACCES"


def test_trip_points_and_passive_trip(tree) -> None:
    zones = ThermalZones(tree.root)
    tj = zones.zone("tj")
    assert [(t.type, t.temp_c, t.hysteresis_c) for t in tj.trips] == [
        ("critical", 104.5, 0.0), ("passive", 99.0, 0.0)]
    assert tj.passive_trip_c == 99.0
    assert tj.critical_trip_c == 104.5
    assert zones.passive_trip_c("tj") == 99.0
    assert tj.mode == "enabled"
    assert tj.policy == "step_wise"


def test_disabled_trip_reads_none(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        (tree.zone_dir("tj") / "trip_point_1_temp").write_text("-274000\n")
        zone = ThermalZones(tree.root).zone("tj")
        assert zone.trips[1].temp_c is None
        assert zone.passive_trip_c is None


def test_cooling_devices_and_hwmon(tree) -> None:
    zones = ThermalZones(tree.root)
    (fan,) = zones.cooling_devices()
    assert (fan.type, fan.cur_state, fan.max_state) == ("pwm-fan", 3, 10)
    (nvme,) = zones.hwmon()
    assert (nvme.key, nvme.temp_c, nvme.max_c, nvme.crit_c) == (
        "nvme Composite", 38.85, 81.85, 84.85)
    assert zones.read()["nvme Composite"] == 38.85
    assert "nvme Composite" not in ThermalZones(tree.root, hwmon=False).read()


def test_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        zones = ThermalZones(tree.root)
        with pytest.raises(NotSupportedError, match="found: cpu-thermal"):
            zones.temp_c("cv7")
        with pytest.raises(NotSupportedError, match="hwmon"):
            zones.zone("nvme Composite")


def test_bare_tree_and_missing_root_have_no_zones(tmp_path: Path) -> None:
    with build_bare_tree(tmp_path / "bare") as bare:
        zones = ThermalZones(bare.root)
        assert zones.read() == {}
        assert zones.zones() == ()
        assert zones.cooling_devices() == ()
    assert ThermalZones(tmp_path / "nothing-here").read() == {}


def test_rescan_finds_new_zones(tmp_path: Path) -> None:
    zones = ThermalZones(tmp_path)
    assert zones.names == ()
    with build_jetson_tree(tmp_path):
        assert zones.names == ()
        zones.rescan()
        assert "tj-thermal" in zones.names


def test_board_zones_on_jetpack6(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-orin-nx", board_zones=True) as tree:
        readings = ThermalZones(tree.root).read()
        assert readings["tboard"] == 36.0
        assert readings["tdiode"] == 39.5


@pytest.mark.parametrize(("zone_type", "alias"), [
    ("CPU-therm", "cpu"), ("cpu-thermal", "cpu"), ("tj-therm", "tj"), ("tj-thermal", "tj"),
    ("Tboard_tegra", "tboard"), ("tboard-thermal", "tboard"), ("SOC2-therm", "soc2"),
    ("x86_pkg_temp", "x86_pkg_temp"), ("acpitz", "acpitz"),
])
def test_zone_alias(zone_type: str, alias: str) -> None:
    assert zone_alias(zone_type) == alias


def test_duplicate_zone_types_get_unique_keys(tmp_path: Path) -> None:
    base = tmp_path / "sys/class/thermal"
    for n in range(2):
        zone = base / f"thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "type").write_text("acpitz\n")
        (zone / "temp").write_text(f"{27800 + n * 1000}\n")
    readings = ThermalZones(tmp_path).read()
    assert dict(readings) == {"acpitz": 27.8, "acpitz_1": 28.8}


def test_sysfs_readers(tmp_path: Path) -> None:
    f = tmp_path / "value"
    f.write_text("41375\n")
    assert _sysfs.read_int(f) == 41375
    assert _sysfs.milli_c(str(f)) == 41.375
    f.write_bytes(b"ga10b\0")
    assert _sysfs.read_str(f) == "ga10b"
    assert _sysfs.read_int(f) is None
    f.write_bytes(b"\xff\xfe")
    assert _sysfs.read_str(f) is None
    assert _sysfs.probe(f) == (None, "not-text")
    f.write_text("")
    assert _sysfs.read_str(f) is None
    assert _sysfs.probe(f) == (None, "empty")
    assert _sysfs.read_int(tmp_path / "missing") is None
    assert _sysfs.probe(tmp_path / "missing") == (None, "ENOENT")
    assert _sysfs.read_int(tmp_path) is None
    assert _sysfs.probe(tmp_path) == (None, "EISDIR")
    f.write_text("-256000\n")
    assert _sysfs.milli_c(str(f)) is None
    f.write_text("-40000\n")
    assert _sysfs.milli_c(str(f)) == -40.0


def test_pmic_zones_are_not_temperatures() -> None:
    # PMIC-Die (Nano/TX2/Xavier) reads a constant 100 °C; jtop skips names containing PMIC.
    from edgert.power import reports_temperature

    assert not reports_temperature("PMIC-Die")
    assert not reports_temperature("pmic-thermal")
    assert reports_temperature("tj-thermal")
    assert reports_temperature("CPU-therm")
