"""The doctor's real-time section: what the capability check of edgert.realtime found."""

from __future__ import annotations

from pathlib import Path

from edgert.doctor._report import Section, Verdict

__all__ = ["realtime_section"]


def realtime_section(root: Path) -> Section:
    """SCHED_FIFO (tried for real on a short-lived thread, then gone), RT limits, mlock, isolation.

    With a fake ``root`` the process's own limits are still reported (they are not files), but
    SCHED_FIFO is not tried, and what the tree does not hold (capabilities in
    proc/self/status, the kernel version) reads as info, "not readable in this tree".
    """
    from edgert.realtime import CapabilityVerdict, realtime_capabilities

    verdicts = {
        CapabilityVerdict.OK: Verdict.OK,
        CapabilityVerdict.WARN: Verdict.WARN,
        CapabilityVerdict.FAIL: Verdict.FAIL,
        CapabilityVerdict.UNKNOWN: Verdict.INFO,
    }
    s = Section(name="realtime", title="Real time")
    caps = realtime_capabilities(root=root)
    s.add("checked_priority", caps.priority)
    for c in caps.checks:
        s.add(c.name, c.detail, verdicts[c.verdict])
        if c.hint and c.verdict is not CapabilityVerdict.OK:
            s.hints.append(c.hint)
    return s
