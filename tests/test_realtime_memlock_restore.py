"""Releasing mlockall when memory was already locked must still stop locking new mappings."""

from __future__ import annotations

import subprocess
import sys

_CHILD = r"""
import mmap, sys
import edgert.realtime._memlock as ml
from edgert.memory import HostBuffer
from edgert.realtime import lock_memory
from edgert.realtime._sysinfo import proc_status_kib

if sys.argv[1] == "no-smaps":
    ml.locked_mappings = lambda: None
pre = HostBuffer(1 << 20)            # locked before edgert's mlockall (OS-locked without CUDA)
print("PRE_KIB", proc_status_kib("VmLck"))
with lock_memory() as held:
    big = bytearray(64 << 20)        # locked while held (MCL_CURRENT | MCL_FUTURE)
    print("HELD_KIB", proc_status_kib("VmLck"))
print("RELEASE", held.release_detail)
print("AFTER_KIB", proc_status_kib("VmLck"))
before = proc_status_kib("VmLck")
region = mmap.mmap(-1, 16 << 20)    # a new mapping after the release...
region.write(b"x" * (16 << 20))     # ...touched in full
after = proc_status_kib("VmLck")
print("GROWTH_KIB", after - before)
pre.close()
"""


def _child(mode: str) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                          check=True, timeout=60)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def test_release_unlocks_what_edgert_locked_and_keeps_what_was_locked_before() -> None:
    """Found by a new user's trial: one 4 KiB pool block locked before a run kept the whole
    process (450 MB) locked after it. Now munlockall runs and the mappings locked before are
    locked again."""
    lines = _child("smaps")
    pre = int(lines["PRE_KIB"])
    assert pre >= 1024
    assert int(lines["HELD_KIB"]) > pre + 60 * 1024
    assert "locked before edgert locked again" in lines["RELEASE"]
    assert pre <= int(lines["AFTER_KIB"]) < pre + 1024  # the HostBuffer stays locked, no more
    assert int(lines["GROWTH_KIB"]) < 1024


def test_release_drops_mcl_future_when_smaps_cannot_say_what_was_locked() -> None:
    lines = _child("no-smaps")
    assert lines["RELEASE"].startswith("left locked: MCL_FUTURE dropped")
    # With MCL_FUTURE still on, the new 16 MiB mapping would be locked (and charged to
    # RLIMIT_MEMLOCK); now it is not.
    assert int(lines["GROWTH_KIB"]) < 1024


_INTERRUPTED = r"""
import edgert.realtime._memlock as ml
from edgert.realtime import PeriodicLoop, RealtimePolicy, lock_memory
from edgert.realtime._sysinfo import proc_status_kib

real_mlockall = ml._mlockall
real_acquire = getattr(ml, "LockHold", None) and ml.LockHold.acquire


armed = []


def mlockall_then_interrupt(flags):
    code = real_mlockall(flags)
    if armed:
        armed.clear()  # once: the roll-back's own mlockall must run
        raise KeyboardInterrupt  # Ctrl-C delivered as the ctypes call returns
    return code


def acquire_then_interrupt(self):
    real_acquire(self)
    raise KeyboardInterrupt  # ...or just after the lock was taken


def report(name, fn):
    armed.append(1)
    try:
        fn()
        print(name, "NOT-INTERRUPTED")
    except KeyboardInterrupt:
        print(name, proc_status_kib("VmLck"), ml._STATE.holders, ml._STATE.flags)


def loop():
    PeriodicLoop(0.001, policy=RealtimePolicy(lock_memory=True)).run(iterations=3)


ml._mlockall = mlockall_then_interrupt
report("LOOP_IN_MLOCKALL", loop)
report("LOCK_MEMORY_IN_MLOCKALL", lock_memory)
ml._mlockall = real_mlockall
if real_acquire is not None:
    ml.LockHold.acquire = acquire_then_interrupt
    report("LOOP_AFTER_ACQUIRE", loop)
    report("LOCK_MEMORY_AFTER_ACQUIRE", lock_memory)
    ml.LockHold.acquire = real_acquire
with lock_memory(onfault=True) as first:  # a second holder changing the flags is rolled back
    ml._mlockall = mlockall_then_interrupt
    report("SECOND_HOLDER", lock_memory)
    ml._mlockall = real_mlockall
with lock_memory() as held:
    pass
print("RELEASE", held.release_detail, proc_status_kib("VmLck"))
"""


def test_an_interrupt_while_locking_leaves_nothing_locked() -> None:
    # A KeyboardInterrupt as mlockall returned (before the undo was registered and the holder
    # count raised) left all memory locked, and the next lock_memory() took the leak for a lock
    # made before edgert and never unlocked.
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED], capture_output=True, text=True,
                          check=True, timeout=120)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    for name in ("LOOP_IN_MLOCKALL", "LOCK_MEMORY_IN_MLOCKALL", "LOOP_AFTER_ACQUIRE",
                 "LOCK_MEMORY_AFTER_ACQUIRE"):
        assert lines.get(name) == "0 0 0", (name, proc.stdout)  # VmLck kB, holders, flags
    # Back to the first holder's MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, still one holder.
    assert lines["SECOND_HOLDER"].split()[1:] == ["1", "7"], proc.stdout
    assert lines["RELEASE"] == "munlockall 0", proc.stdout


_ONFAULT_CHILD = r"""
import ctypes, mmap
from edgert.realtime import lock_memory
from edgert.realtime._memlock import locked_mappings

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
size = 256 << 20
region = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                   mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert libc.mlock2(ctypes.c_void_p(region), ctypes.c_size_t(size), 1) == 0  # MLOCK_ONFAULT
ctypes.memset(region, 1, 4096)
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
print("ONFAULT", [m.onfault for m in locked_mappings() or () if m.start == region])
before = rss()
with lock_memory(onfault=True) as held:
    pass
print("RELEASE", held.release_detail)
print("GROWTH_KIB", rss() - before)
"""


def test_release_relocks_an_on_fault_lock_on_fault() -> None:
    """Found by review: the relock used plain mlock, which faulted in the whole range (+1 GiB
    resident for a 1 GiB region locked on fault with 4 KiB touched)."""
    proc = subprocess.run([sys.executable, "-c", _ONFAULT_CHILD], capture_output=True,
                          text=True, check=True, timeout=60)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["ONFAULT"] == "[True]"
    assert "locked before edgert locked again" in lines["RELEASE"]
    assert int(lines["GROWTH_KIB"]) < 64 * 1024  # not the 256 MiB region


def test_ranges_edgert_unmapped_during_the_hold_are_not_relocked() -> None:
    """Found by review: a pool block freed during the hold, its address reused by a new mapping,
    was locked for good at release."""
    from edgert import _unmaps
    from edgert.realtime._memlock import Locked, _still_there

    kept = Locked(0x1000_0000_0000, 0x1000_0010_0000, False)  # nothing mapped there now
    freed = Locked(0x7000_0000_0000, 0x7000_0010_0000, False)
    _unmaps.watch(True)
    try:
        _unmaps.record(freed.start, freed.end)
        plan = _still_there((kept, freed))
    finally:
        _unmaps.watch(False)
    assert freed not in plan
    assert kept not in plan  # nothing is mapped there now
