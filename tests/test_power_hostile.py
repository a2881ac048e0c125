"""Hostile sysfs, procfs and nvpmodel contents (issue 12): readers that never raise do not raise,
numbers are only what the kernel writes, special files never block, bad readings are counted."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from _fuzz import finishes

from edgert.errors import InvalidArgumentError, PermissionDeniedError
from edgert.platform import parse_cpu_list, read_jetson, read_system
from edgert.power import (
    NvpModel,
    PowerRails,
    ThermalGovernor,
    ThermalLevel,
    ThermalZones,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
)
from edgert.realtime._pmqos import DmaLatencyHold
from edgert.testing.jetson import build_jetson_tree

HUGE = "9" * 400


# -- numbers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [HUGE, "-" + HUGE, "--5", "²", "٤٥٠٠٠", "4_5000", "0x10"])
def test_thermal_readings_of_non_kernel_numbers_are_none_everywhere(tmp_path: Path,
                                                                   text: str) -> None:
    with build_jetson_tree(tmp_path) as tree:
        zone = tree.zone_dir("tj")
        (zone / "temp").write_text(text + "\n")
        (zone / "trip_point_0_temp").write_text(text + "\n")
        (zone / "trip_point_0_hyst").write_text(text + "\n")
        zones = ThermalZones(tree.root)
        # read(), temp_c() and zone() agree: no reading, and zone() says why.
        assert zones.read()["tj"] is None
        assert zones.temp_c("tj") is None
        snap = zones.zone("tj")
        assert snap.temp_c is None
        assert snap.error == "not-an-integer"
        assert snap.trips[0].temp_c is None
        assert snap.trips[0].hysteresis_c is None
        zones.zones()
        zones.hwmon()
        zones.cooling_devices()


def test_out_of_range_temperatures_are_none_with_a_reason(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        (tree.zone_dir("tj") / "temp").write_text("9223372036854775807\n")
        zones = ThermalZones(tree.root)
        assert zones.read()["tj"] is None
        assert zones.zone("tj").error == "out-of-range"


def test_governor_construction_survives_a_huge_trip_point(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        for trip in tree.zone_dir("tj").glob("trip_point_*_temp"):
            trip.write_text(HUGE + "\n")
        gov = ThermalGovernor(ThermalZones(tree.root), zones="tj",
                              levels=(ThermalLevel(name="ok"), ThermalLevel(name="hot",
                                                                            enter_c=90.0)))
        assert gov.passive_trip_c is None
        gov.close()


def test_rails_with_huge_numbers_read_none(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        node, n = tree.rails["VDD_IN"]
        (node / f"in{n}_input").write_text(HUGE + "\n")
        (node / f"curr{n}_crit").write_text("--5\n")
        vin = PowerRails(tree.root).read()["VDD_IN"]
        assert vin.voltage_mv is None
        assert vin.power_mw is None
        assert vin.crit_current_ma is None


def test_directory_names_with_unicode_digits_are_not_devices(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        base = tree.root / "sys/class/thermal"
        for name in ("thermal_zone²", "thermal_zone٣", "thermal_zone+1", "cooling_device-1"):
            (base / name).mkdir()
            (base / name / "type").write_text("fake\n")
            (base / name / "temp").write_text("1000\n")
        zones = ThermalZones(tree.root)
        assert "fake" not in zones.names
        assert all(d.type != "fake" for d in zones.cooling_devices())


@pytest.mark.parametrize("ident", ["--5", "²", "٣", HUGE, "70000", "-1"])
def test_nvpmodel_conf_ids_that_are_not_numbers_are_malformed(ident: str) -> None:
    text = f"< POWER_MODEL ID={ident} NAME=X >\nGPU MAX_FREQ -1\n"
    with pytest.raises(InvalidArgumentError, match="numeric ID"):
        parse_nvpmodel_conf(text)
    with pytest.raises(InvalidArgumentError, match="PM_CONFIG DEFAULT"):
        parse_nvpmodel_conf(f"< PM_CONFIG DEFAULT={ident} >\n")


def test_nvpmodel_conf_values_that_are_not_numbers_are_no_cap() -> None:
    cfg = parse_nvpmodel_conf(
        "< POWER_MODEL ID=0 NAME=M >\n"
        f"CPU_ONLINE CORE_² 1\nCPU_ONLINE CORE_0 1\nGPU MAX_FREQ {HUGE}\n"
        "TPC_PG_MASK TPC_PG_MASK --5\nEMC MAX_FREQ ٤\n")
    mode = cfg.by_id(0)
    assert mode is not None
    assert mode.cores_online == 1
    assert mode.gpu_max_freq_hz is None
    assert mode.tpc_pg_mask is None
    assert mode.emc_max_freq_hz is None


@pytest.mark.parametrize("line", ["²", "--5", HUGE, "٣"])
def test_nvpmodel_query_and_status_with_odd_numbers(tmp_path: Path, line: str) -> None:
    assert parse_nvpmodel_query(f"NV Power Mode: MAXN\n{line}\n") == ("MAXN", None)
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as tree:
        tree.path("var/lib/nvpmodel/status").write_text(f"pmode:{line}\n")
        nvp = NvpModel(tree.root, runner=tree.runner())
        assert nvp.saved_mode_id() is None
        assert read_jetson(tree.root).nvpmodel_mode_id is None
        with pytest.raises(InvalidArgumentError, match="no power mode"):
            nvp.set(line)


def test_cpu_lists_with_huge_ranges_are_not_expanded() -> None:
    assert parse_cpu_list("0-99999999999") == ()
    assert parse_cpu_list(f"0-3,{HUGE},²,5") == (0, 1, 2, 3, 5)


# -- special files ------------------------------------------------------------------------------

def test_nvpmodel_conf_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "nvpmodel.conf"
    os.mkfifo(fifo)
    err = finishes(lambda: NvpModel(tmp_path, conf=fifo).modes, fifo)
    assert type(err) is InvalidArgumentError, repr(err)
    assert "not a regular file" in str(err)


def test_nvpmodel_conf_device_and_nul_path_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "nvpmodel.conf"
    link.symlink_to("/dev/zero")
    with pytest.raises(InvalidArgumentError, match="character device"):
        _ = NvpModel(tmp_path, conf=link).modes
    with pytest.raises(InvalidArgumentError, match="NUL byte"):
        _ = NvpModel(tmp_path, conf=Path("etc\0/nvpmodel.conf")).modes


def test_sysfs_and_platform_readers_on_fifos_and_devices(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        temp = tree.zone_dir("tj") / "temp"
        temp.unlink()
        os.mkfifo(temp)
        node, n = tree.rails["VDD_IN"]
        (node / f"in{n}_input").unlink()
        (node / f"in{n}_input").symlink_to("/dev/zero")
        for rel in ("proc/cmdline", "etc/nv_tegra_release", "proc/device-tree/model"):
            path = tree.path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            os.mkfifo(path)
        zones = ThermalZones(tree.root)
        assert finishes(lambda: zones.read()["tj"], temp) is None
        assert zones.zone("tj").error == "not-regular"
        assert PowerRails(tree.root).read()["VDD_IN"].voltage_mv is None
        info = finishes(lambda: read_jetson(tree.root), tree.path("proc/cmdline"))
        assert info.model is None
        system = finishes(lambda: read_system(tree.root), tree.path("proc/cmdline"))
        assert system.cmdline is None


def test_nul_in_root_reads_nothing_and_raises_nothing() -> None:
    root = Path("/tmp/no\0such")
    assert ThermalZones(root).read() == {}
    assert read_jetson(root).model is None
    assert read_system(root).isolated_cpus == ()


# -- the governor counts every bad reading ---------------------------------------------------------

_LEVELS = (ThermalLevel(name="ok"), ThermalLevel(name="hot", enter_c=90.0))


class _Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


@pytest.mark.parametrize("bad", ["45", b"45", 10**400, True, float("nan"), float("inf"), -300.0,
                                 5000.0, [45.0], object()])
def test_governor_counts_bad_readings(bad: Any) -> None:
    values = iter([50.0, bad, 50.0])
    gov = ThermalGovernor(lambda: next(values), levels=_LEVELS, clock=_Clock())
    gov.step()
    assert gov.step() is None
    assert gov.sensor_failures == 1
    assert gov.consecutive_failures == 1
    assert isinstance(gov.last_error, InvalidArgumentError)
    assert gov.temp_c == 50.0
    gov.step()
    assert gov.consecutive_failures == 0
    assert gov.temp_c == 50.0


def test_governor_thread_counts_bad_readings_it_used_to_swallow() -> None:
    done = threading.Event()
    calls = 0

    def sensor() -> object:
        nonlocal calls
        calls += 1
        if calls >= 3:
            done.set()
        return "45"

    gov = ThermalGovernor(sensor, levels=_LEVELS, interval_s=0.001).start()
    try:
        assert done.wait(10)
    finally:
        gov.close()
    assert gov.sensor_failures >= 3
    assert isinstance(gov.last_error, InvalidArgumentError)


def test_governor_logs_a_failing_sensor_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    readings: list[object] = [None, OSError(errno.EIO, "EIO"), "x", None, 50.0]

    def sensor() -> object:
        value = readings.pop(0)
        if isinstance(value, BaseException):
            raise value
        return value

    gov = ThermalGovernor(sensor, levels=_LEVELS, clock=clock)
    with caplog.at_level(logging.INFO, logger="edgert.power"):
        for _ in range(3):
            gov.step()
            clock.ns += 1_000_000_000
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once, then quiet for a minute
        clock.ns += 60 * 1_000_000_000
        gov.step()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "4 in a row" in warnings[-1].getMessage()
        gov.step()
        assert any("reads again" in r.getMessage() for r in caplog.records)
    assert gov.sensor_failures == 4


# -- error messages as documented ----------------------------------------------------------------

def test_cpu_dma_latency_refusal_names_the_errno_once() -> None:
    device = Path("/dev/cpu_dma_latency")
    err = DmaLatencyHold._error(PermissionError(errno.EACCES, "Permission denied"), device)
    assert isinstance(err, PermissionDeniedError)
    assert str(err).count("EACCES") == 1
    assert str(err).count("Permission denied") == 1
    assert err.path == str(device)
    missing = DmaLatencyHold._error(FileNotFoundError(errno.ENOENT, "x"), Path("/nonexistent"))
    assert str(missing).count("ENOENT") == 1


def test_unreadable_nvpmodel_conf_names_its_path(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads mode-000 files, so the OS's refusal is imitated where edgert reads.
    conf = tmp_path / "nvpmodel.conf"
    conf.write_text("< POWER_MODEL ID=0 NAME=M >\n")

    def refuse(where: Any, **_: Any) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(where))

    monkeypatch.setattr("edgert.power._nvpmodel.read_file", refuse)
    with pytest.raises(PermissionDeniedError) as info:
        _ = NvpModel(tmp_path, conf=conf).modes
    assert info.value.path == str(conf)
