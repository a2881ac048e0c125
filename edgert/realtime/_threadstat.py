"""Page-fault and context-switch counters of one thread, read from any thread of the process.

``getrusage(RUSAGE_THREAD)`` only describes the *calling* thread, so a report taken from a
monitoring thread must read the loop thread's counters from procfs instead:
``/proc/self/task/<tid>/stat`` (fields 10 ``minflt`` and 12 ``majflt``, proc(5):
https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html) and ``/proc/self/task/<tid>/status``
(``nonvoluntary_ctxt_switches``, https://man7.org/linux/man-pages/man5/proc_pid_status.5.html).
Both come from the same per-task counters as ``getrusage(RUSAGE_THREAD)`` (``min_flt``,
``maj_flt``, ``nivcsw``), so readings from the two sources can be subtracted from each other.
"""

from __future__ import annotations

import resource
import threading
from pathlib import Path
from typing import NamedTuple

from edgert.platform import read_text

__all__ = ["ThreadCounters", "thread_counters"]

_ROOT = Path("/")
# Fields of /proc/<pid>/task/<tid>/stat, numbered from 1 as in proc(5); the split starts after the
# "(comm)" field (2), whose name may itself hold spaces and parentheses, so field 3 is index 0.
_MINFLT_FIELD = 10
_MAJFLT_FIELD = 12
_FIRST_FIELD_AFTER_COMM = 3


class ThreadCounters(NamedTuple):
    """Cumulative counters of one thread since it started."""

    minor_faults: int
    major_faults: int
    involuntary_switches: int


def thread_counters(tid: int) -> ThreadCounters | None:
    """The counters of thread ``tid`` (a native id) of this process, or ``None`` when unknown.

    The calling thread is read with ``getrusage(RUSAGE_THREAD)``; any other with procfs. ``None``
    when the thread has exited, procfs is not mounted, or the platform has neither.
    """
    if tid == threading.get_native_id():
        who = getattr(resource, "RUSAGE_THREAD", None)
        if who is not None:
            ru = resource.getrusage(who)
            return ThreadCounters(ru.ru_minflt, ru.ru_majflt, ru.ru_nivcsw)
    return _proc_counters(tid)


def _proc_counters(tid: int) -> ThreadCounters | None:
    stat = read_text(_ROOT, f"/proc/self/task/{tid}/stat")
    status = read_text(_ROOT, f"/proc/self/task/{tid}/status")
    if stat is None or status is None:
        return None
    fields = stat[stat.rfind(")") + 1:].split()
    nivcsw: int | None = None
    for line in status.splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            nivcsw = int(line.split()[1])
    try:
        minflt = int(fields[_MINFLT_FIELD - _FIRST_FIELD_AFTER_COMM])
        majflt = int(fields[_MAJFLT_FIELD - _FIRST_FIELD_AFTER_COMM])
    except (IndexError, ValueError):
        return None
    if nivcsw is None:
        return None
    return ThreadCounters(minflt, majflt, nivcsw)
