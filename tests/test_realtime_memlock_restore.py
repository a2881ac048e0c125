"""Releasing mlockall when memory was already locked must still stop locking new mappings."""

from __future__ import annotations

import subprocess
import sys

_CHILD = r"""
import mmap
from edgert.memory import HostBuffer
from edgert.realtime import lock_memory
from edgert.realtime._sysinfo import proc_status_kib

pre = HostBuffer(1 << 20)            # locked before edgert's mlockall (OS-locked without CUDA)
with lock_memory() as held:
    pass
print("RELEASE", held.release_detail)
before = proc_status_kib("VmLck")
region = mmap.mmap(-1, 16 << 20)    # a new mapping after the release...
region.write(b"x" * (16 << 20))     # ...touched in full
after = proc_status_kib("VmLck")
print("GROWTH_KIB", after - before)
pre.close()
"""


def test_release_drops_mcl_future_when_memory_was_prelocked() -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          check=True, timeout=60)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert "MCL_FUTURE dropped" in lines["RELEASE"]
    # With MCL_FUTURE still on, the new 16 MiB mapping would be locked (and charged to
    # RLIMIT_MEMLOCK); now it is not.
    assert int(lines["GROWTH_KIB"]) < 1024
