"""The one bounded reader (edgert._fileio) and the one integer parser, on hostile files."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgert._fileio import FileRefusedError, check_path, parse_index, parse_int, read_file


def finishes(fn: Callable[[], object], *, unblock: Callable[[], None] | None = None,
             timeout_s: float = 10.0) -> object:
    """``fn()``'s result (or exception) if it returns within ``timeout_s``; else the test fails.

    ``unblock`` frees a call stuck in the OS (e.g. opens a FIFO's other end) so that the test
    process does not keep a hung thread.
    """
    box: list[object] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as err:  # handed to the test below
            box.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        thread.join(timeout_s)
        pytest.fail(f"still blocked after {timeout_s} s")
    return box[0]


def fifo_unblocker(path: Path) -> Callable[[], None]:
    def unblock() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    return unblock


def test_regular_file_read_once_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(300_000)
    path.write_bytes(data)
    assert read_file(path, max_bytes=len(data)) == data
    calls: list[int] = []

    def counting(fd: int, size: int) -> bytes:
        calls.append(size)
        return os.read(fd, size)

    assert read_file(path, max_bytes=1 << 20, read=counting) == data
    # One read asking for size + 1: getting size bytes proves the end was reached.
    assert calls == [len(data) + 1]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = finishes(lambda: read_file(fifo, max_bytes=100), unblock=fifo_unblocker(fifo))
    assert isinstance(result, FileRefusedError)
    assert result.reason == "not-regular"
    assert "FIFO" in str(result)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused(tmp_path: Path, device: str) -> None:
    link = tmp_path / "model.plan"
    link.symlink_to(device)
    with pytest.raises(FileRefusedError) as info:
        read_file(link, max_bytes=1 << 20)
    assert info.value.reason == "not-regular"
    assert "character device" in str(info.value)


def test_directory_is_eisdir(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_file(tmp_path, max_bytes=10)


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(FileRefusedError, match="1,000 bytes, over the limit of 999") as info:
        read_file(path, max_bytes=999)
    assert info.value.reason == "too-large"
    assert info.value.errno == errno.EFBIG


def test_procfs_files_report_size_zero_and_are_read_in_chunks() -> None:
    assert os.stat("/proc/self/status").st_size == 0
    text = read_file("/proc/self/status", max_bytes=1 << 20).decode()
    assert text.startswith("Name:")
    assert "VmRSS" in text
    with pytest.raises(FileRefusedError) as info:
        read_file("/proc/self/status", max_bytes=64)
    assert info.value.reason == "too-large"


def test_a_file_that_grows_while_read_is_refused(tmp_path: Path) -> None:
    # The reproducer: a model being appended to was read to 2.56 GB.
    path = tmp_path / "growing.plan"
    path.write_bytes(b"a" * 10_000)

    def read_and_grow(fd: int, size: int) -> bytes:
        with open(path, "ab") as f:
            f.write(b"b" * 50_000)
        return os.read(fd, size)

    with pytest.raises(FileRefusedError, match="grew beyond its 10,000 bytes") as info:
        read_file(path, max_bytes=1 << 30, read=read_and_grow)
    assert info.value.reason == "changed"


def test_nul_in_path(tmp_path: Path) -> None:
    with pytest.raises(FileRefusedError) as info:
        read_file(str(tmp_path / "a\0b"), max_bytes=10)
    assert info.value.reason == "nul-in-path"
    assert "\\x00" in str(info.value)
    assert check_path(tmp_path / "ok") == str(tmp_path / "ok")


@pytest.mark.parametrize(("text", "value"), [
    ("45000\n", 45000), ("-256000", -256000), ("+7", 7), (b" 12 \n", 12), ("0\0", 0),
    ("9223372036854775807", 2**63 - 1),
])
def test_parse_int_accepts_what_the_kernel_writes(text: str | bytes, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", [
    None, "", "-", "--5", "+-5", "²", "4²", "٤٥٠٠٠", "1_000", "0x10", "1e3", "4.5", "12 34",
    "9" * 400, "9223372036854775808", b"\xff45", "\u2007" + "45",
])
def test_parse_int_refuses_everything_else(text: str | bytes | None) -> None:
    assert parse_int(text) is None


def test_parse_int_range_and_index() -> None:
    assert parse_int("70000", hi=65535) is None
    assert parse_int("-1", lo=0) is None
    assert parse_index("12") == 12
    for bad in ("", "+1", "-1", "²", "١", "1 ", "9" * 10):
        assert parse_index(bad) is None
