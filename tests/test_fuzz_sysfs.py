"""Fuzz what edgert reads from sysfs, procfs, nvpmodel.conf and command output.

Contract (tests/_fuzz.py): the readers documented as never raising return, the others raise an
EdgeRTError with a message; never a hang or a foreign exception. A correct answer: a value the
kernel could have written reads as that value, anything else reads ``None``, and ``read()``,
``temp_c()`` and ``zone()`` agree.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fuzz import FUZZ, outcome
from hypothesis import given
from hypothesis import strategies as st

from edgert.errors import EdgeRTError, InvalidArgumentError
from edgert.platform import parse_cpu_list, read_jetson, read_system
from edgert.power import (
    NvpModel,
    PowerRails,
    ThermalZones,
    parse_jetson_clocks_show,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
)
from edgert.testing.jetson import JetsonTree, build_jetson_tree

_KERNEL_INT = re.compile(r"[+-]?[0-9]{1,19}")

NUMBERS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["9" * 400, "--5", "²", "٤٥٠٠٠", "1_000", "0x10", "4.5", "-256000",
                     "-274000", "nan", "", " ", "\0", "45000\0", "+7", "1e3"]),
)
CONTENT = st.one_of(
    NUMBERS.map(lambda s: s + "\n"), NUMBERS, st.text(max_size=24),
    st.binary(max_size=48).map(lambda b: b.decode("latin-1")),
)
# What a sysfs path can be in a broken or hostile tree.
SHAPE = st.sampled_from(["text", "text", "text", "fifo", "zero", "dir", "missing", "link-loop"])


@pytest.fixture(scope="module")
def tree() -> Iterator[JetsonTree]:
    with tempfile.TemporaryDirectory() as tmp, build_jetson_tree(Path(tmp), cv_fault=None) as t:
        yield t


def _put(path: Path, shape: str, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    if shape == "text":
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    elif shape == "fifo":
        os.mkfifo(path)
    elif shape == "zero":
        path.symlink_to("/dev/zero")
    elif shape == "dir":
        path.mkdir()
    elif shape == "link-loop":
        path.symlink_to(path)


def _expected_c(shape: str, text: str) -> float | None:
    stripped = text.strip(" \t\n\r\0")
    if shape != "text" or not _KERNEL_INT.fullmatch(stripped):
        return None
    milli = int(stripped)
    return milli / 1000.0 if -256_000 < milli < 1_000_000 else None


@FUZZ
@given(temp=st.tuples(SHAPE, CONTENT), trip=st.tuples(SHAPE, CONTENT),
       hyst=st.tuples(SHAPE, CONTENT), rail=st.tuples(SHAPE, CONTENT))
def test_thermal_and_rails_readers_never_raise_and_agree(
        tree: JetsonTree, temp: tuple[str, str], trip: tuple[str, str],
        hyst: tuple[str, str], rail: tuple[str, str]) -> None:
    zone = tree.zone_dir("tj")
    _put(zone / "temp", *temp)
    _put(zone / "trip_point_0_temp", *trip)
    _put(zone / "trip_point_0_hyst", *hyst)
    node, n = tree.rails["VDD_IN"]
    _put(node / f"in{n}_input", *rail)
    zones = outcome(lambda: ThermalZones(tree.root))
    assert not isinstance(zones, EdgeRTError)
    if "tj" not in zones.aliases and "tj-thermal" not in zones.names:
        return  # temp is missing or a directory: the zone is not discovered
    readings = outcome(zones.read)
    snap = outcome(lambda: zones.zone("tj"))
    one = outcome(lambda: zones.temp_c("tj"))
    assert not isinstance(readings, EdgeRTError)
    assert not isinstance(snap, EdgeRTError)
    expected = _expected_c(*temp)
    assert readings["tj"] == snap.temp_c == one == expected
    assert (snap.error is None) == (expected is not None)
    for t in snap.trips:
        assert t.temp_c is None or -273.15 <= t.temp_c < 1000
        assert t.hysteresis_c is None or 0 <= t.hysteresis_c < 1000
    outcome(zones.zones)
    outcome(zones.hwmon)
    outcome(zones.cooling_devices)
    rails = outcome(lambda: PowerRails(tree.root))
    assert not isinstance(rails, EdgeRTError)
    vin = outcome(rails.read)
    assert not isinstance(vin, EdgeRTError)
    stripped = rail[1].strip(" \t\n\r\0")
    if "VDD_IN" in vin:
        want = int(stripped) if rail[0] == "text" and _KERNEL_INT.fullmatch(stripped) else None
        assert vin["VDD_IN"].voltage_mv == want
    outcome(rails.total)


@FUZZ
@given(files=st.dictionaries(
    st.sampled_from(["proc/cmdline", "proc/device-tree/model", "proc/device-tree/compatible",
                     "etc/nv_tegra_release", "var/lib/nvpmodel/status",
                     "sys/devices/system/cpu/isolated", "sys/devices/system/cpu/online",
                     "sys/devices/system/cpu/nohz_full", "proc/sys/kernel/osrelease",
                     "sys/kernel/realtime"]),
    st.tuples(SHAPE, CONTENT), max_size=6))
def test_platform_readers_never_raise(tree: JetsonTree, files: dict[str, tuple[str, str]]) -> None:
    for rel, (shape, text) in files.items():
        path = tree.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        _put(path, shape, text)
    jetson = outcome(lambda: read_jetson(tree.root))
    system = outcome(lambda: read_system(tree.root))
    assert not isinstance(jetson, EdgeRTError)
    assert not isinstance(system, EdgeRTError)
    assert jetson.nvpmodel_mode_id is None or 0 <= jetson.nvpmodel_mode_id <= 65536
    assert all(0 <= cpu < 8192 for cpu in system.cpus_online + system.isolated_cpus)
    saved = outcome(NvpModel(tree.root).saved_mode_id)  # runs no command
    assert saved is None or isinstance(saved, int)


_CONF_TOKEN = st.one_of(NUMBERS, st.sampled_from(
    ["<", ">", "POWER_MODEL", "PM_CONFIG", "PARAM", "ID=", "NAME=", "DEFAULT=", "TYPE=",
     "CPU_ONLINE", "CORE_0", "CORE_²", "GPU", "MAX_FREQ", "TPC_PG_MASK", "EMC", "FBP_PG_MASK",
     "\n", "#", "=", " "]))
CONF_TEXT = st.one_of(
    st.lists(_CONF_TOKEN, max_size=40).map(" ".join),
    st.tuples(NUMBERS, NUMBERS, NUMBERS, NUMBERS).map(
        lambda v: f"< POWER_MODEL ID={v[0]} NAME=X >\nCPU_ONLINE CORE_0 {v[1]}\n"
                  f"GPU MAX_FREQ {v[2]}\nTPC_PG_MASK TPC_PG_MASK {v[3]}\n< PM_CONFIG "
                  f"DEFAULT={v[0]} >\n"),
    st.text(max_size=200),
)


@FUZZ
@given(text=CONF_TEXT, shape=SHAPE, query=st.one_of(st.text(max_size=80), NUMBERS.map(
    lambda v: f"NVPM WARN: x\nNV Power Mode: MAXN\n{v}\n")), show=st.text(max_size=200))
def test_nvpmodel_conf_query_and_clocks_output(tree: JetsonTree, text: str, shape: str,
                                               query: str, show: str) -> None:
    parsed = outcome(lambda: parse_nvpmodel_conf(text))
    assert not isinstance(parsed, EdgeRTError) or isinstance(parsed, InvalidArgumentError)
    conf = tree.path("etc/fuzz-nvpmodel.conf")
    _put(conf, shape, text)
    modes = outcome(lambda: NvpModel(tree.root, conf=conf).modes)
    if shape != "text":
        assert isinstance(modes, EdgeRTError), f"{shape} conf gave {modes!r}"
    _name, ident = outcome(lambda: parse_nvpmodel_query(query))  # type: ignore[misc]
    assert ident is None or 0 <= ident <= 65535
    outcome(lambda: parse_jetson_clocks_show(show))


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.lists(st.tuples(NUMBERS, NUMBERS), max_size=4)
                      .map(lambda pairs: ",".join(f"{a}-{b}" for a, b in pairs))))
def test_cpu_lists(text: str) -> None:
    cpus = outcome(lambda: parse_cpu_list(text))
    assert not isinstance(cpus, EdgeRTError)
    assert all(0 <= cpu < 8192 for cpu in cpus)
