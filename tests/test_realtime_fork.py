"""A process forked while another thread holds a process-wide real-time setting.

A forked child has only the thread that forked; a policy applied by any other thread will never
be released there. A trial forked children while a loop thread applied
``RealtimePolicy(freeze_gc=True, cpu_dma_latency_us=0)``: 12 of 80 kept the garbage collector
off for good, and one kept the system-wide CPU latency target (``O_CLOEXEC`` does not close a
descriptor across a fork without exec).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgert.realtime import _pmqos
from edgert.realtime._gc import hold_gc_frozen, release_gc
from edgert.realtime._pmqos import DmaLatencyHold

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(check: str, fd: int = -1) -> str:
    """Fork; the child reports what it inherited: GC on/frozen and whether ``fd`` is open."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        os.close(r)
        try:
            if check == "gc":
                out = f"{int(gc.isenabled())}{int(gc.get_freeze_count() > 0)}"
            else:
                try:
                    os.fstat(fd)
                    out = "open"
                except OSError:
                    out = "closed"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 16).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


def _held_by_another_thread(take: Callable[[], object], release: Callable[[], object]
                            ) -> tuple[threading.Event, threading.Thread]:
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        take()
        taken.set()
        done.wait(10)
        release()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    return done, thread


def test_a_child_gets_the_collector_back_from_another_threads_hold() -> None:
    assert gc.isenabled()
    done, thread = _held_by_another_thread(hold_gc_frozen, release_gc)
    try:
        assert not gc.isenabled()
        assert _in_child("gc") == "10"  # enabled, nothing frozen
        assert not gc.isenabled()  # the parent's hold is untouched
    finally:
        done.set()
        thread.join()
    assert gc.isenabled()


def test_a_childs_own_hold_stays() -> None:
    hold_gc_frozen()
    try:
        assert _in_child("gc") == "01"  # the forking thread still holds it there
    finally:
        release_gc()
    assert gc.isenabled()


def test_a_child_closes_another_threads_latency_target(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"  # a plain file stands in for the device
    device.write_bytes(b"")
    holds: list[DmaLatencyHold] = []

    def close() -> None:
        holds[0].close()

    done, thread = _held_by_another_thread(
        lambda: holds.append(DmaLatencyHold(0, device=device)), close)
    try:
        (fd,) = _pmqos._HELD  # the descriptor the other thread holds
        assert _in_child("fd", fd) == "closed"
        os.fstat(fd)  # still open in the parent
    finally:
        done.set()
        thread.join()
