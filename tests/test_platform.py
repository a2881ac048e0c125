"""edgert.platform readers against small fake trees and against this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgert.platform import (
    find_tensorrt,
    parse_cpu_list,
    parse_l4t_release,
    read_jetson,
    read_system,
)


def _write(root: Path, path: str, text: str | bytes) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)),
        ("", ()),
        (None, ()),
        ("nohz,domain,2-3", (2, 3)),
        ("5", (5,)),
        ("garbage", ()),
    ],
)
def test_parse_cpu_list(text: str | None, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


@given(st.sets(st.integers(min_value=0, max_value=255)))
def test_parse_cpu_list_round_trips_any_set(cpus: set[int]) -> None:
    text = ",".join(str(c) for c in sorted(cpus))
    assert parse_cpu_list(text) == tuple(sorted(cpus))


def test_parse_l4t_release() -> None:
    line = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
            "DATE: Wed Jan  8 01:49:37 UTC 2025")
    assert parse_l4t_release(line) == "36.4.3"
    assert parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178") == "35.4.1"
    assert parse_l4t_release("# R38 (release), REVISION: 2.0, GCID: 1") == "38.2.0"
    assert parse_l4t_release("nonsense") is None
    assert parse_l4t_release(None) is None


@pytest.mark.parametrize(
    ("version", "realtime_file", "debugfs", "expected"),
    [
        ("#1 SMP PREEMPT_RT Tue Jan 1", None, None, ("PREEMPT_RT", None)),
        ("#1 SMP PREEMPT Tue Jan 1", "1", None, ("PREEMPT_RT", None)),
        ("#1 SMP PREEMPT_DYNAMIC Tue", None, "none voluntary (full) lazy", ("PREEMPT_DYNAMIC",
                                                                           "full")),
        ("#1 SMP PREEMPT_DYNAMIC Tue", None, None, ("PREEMPT_DYNAMIC", None)),
        ("#1 SMP PREEMPT Tue Jan 1", None, None, ("PREEMPT", None)),
        ("#1 SMP Tue Jan 1", None, None, ("none", None)),
    ],
)
def test_preemption_model(tmp_path: Path, version: str, realtime_file: str | None,
                          debugfs: str | None, expected: tuple[str, str | None]) -> None:
    _write(tmp_path, "/proc/sys/kernel/version", version + "\n")
    _write(tmp_path, "/proc/sys/kernel/osrelease", "6.8.0-test\n")
    if realtime_file is not None:
        _write(tmp_path, "/sys/kernel/realtime", realtime_file + "\n")
    if debugfs is not None:
        _write(tmp_path, "/sys/kernel/debug/sched/preempt", debugfs + "\n")
    info = read_system(tmp_path)
    assert (info.preemption, info.preempt_dynamic_mode) == expected
    assert info.kernel_release == "6.8.0-test"
    assert info.is_realtime_kernel is (expected[0] == "PREEMPT_RT")


def test_isolated_cpus_from_sysfs_then_cmdline(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/cmdline", "root=/dev/sda isolcpus=nohz,domain,2-3 nohz_full=2-3\n")
    _write(tmp_path, "/sys/devices/system/cpu/online", "0-3\n")
    info = read_system(tmp_path)
    assert info.isolated_cpus == (2, 3)
    assert info.nohz_full_cpus == (2, 3)
    assert info.cpus_online == (0, 1, 2, 3)
    _write(tmp_path, "/sys/devices/system/cpu/isolated", "3\n")
    assert read_system(tmp_path).isolated_cpus == (3,)


def test_empty_tree_reads_as_unknown_not_an_error(tmp_path: Path) -> None:
    info = read_system(tmp_path)
    assert info.kernel_release is None
    assert info.preemption is None
    assert info.cpus_online == ()
    jetson = read_jetson(tmp_path)
    assert jetson.is_jetson is False
    assert jetson.model is None


def test_unreadable_and_garbage_files(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/device-tree/model", b"\xff\xfe\x00garbage")
    (tmp_path / "etc/nv_tegra_release").mkdir(parents=True)  # a directory, not a file
    _write(tmp_path, "/var/lib/nvpmodel/status", "pmode:zz\n")
    info = read_jetson(tmp_path)
    assert info.model is None
    assert info.l4t_release is None
    assert info.nvpmodel_mode_id is None


def test_jetson_identity(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/device-tree/model", b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    _write(tmp_path, "/proc/device-tree/compatible",
           b"nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00")
    _write(tmp_path, "/etc/nv_tegra_release",
           "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    _write(tmp_path, "/var/lib/nvpmodel/status", "pmode:0002\n")
    info = read_jetson(tmp_path)
    assert info.is_jetson
    assert info.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert "nvidia,tegra234" in info.compatible
    assert info.l4t_release == "36.4.3"
    assert info.jetpack == "6.2"
    assert info.nvpmodel_mode_id == 2


def test_this_machine() -> None:
    info = read_system()
    assert info.kernel_release == os.uname().release
    assert info.cpus_online
    assert info.python.startswith("CPython")


def test_tensorrt_flavours_never_raise() -> None:
    found = {f.flavour: f for f in find_tensorrt()}
    assert set(found) == {"full", "lean", "dispatch"}
    for f in found.values():
        assert f.version is None or f.error is None
        if not f.installed:
            assert f.version is None
