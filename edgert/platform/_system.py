"""What kernel and CPU set this machine has, read from /proc and /sys under a root."""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgert._fileio import parse_int
from edgert.platform._files import read_text

# The kernel's CONFIG_NR_CPUS is at most 8192 (arch/x86/Kconfig, MAXSMP); a bigger number in a
# CPU list is garbage, and a range up to it must not become a huge set.
_MAX_CPUS = 8192

__all__ = ["SystemInfo", "parse_cpu_list", "read_system"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemInfo:
    """The kernel, its preemption model, and the CPUs.

    Attributes:
        kernel_release: e.g. ``5.15.148-tegra``; None if unreadable.
        kernel_version: The ``uname -v`` string (build flags and date).
        preemption: ``PREEMPT_RT``, ``PREEMPT_DYNAMIC``, ``PREEMPT``, ``voluntary``, ``none``
            or None when it cannot be told.
        preempt_dynamic_mode: With PREEMPT_DYNAMIC, the active mode (``full``, ``voluntary``,
            ``none``, ``lazy``) where debugfs is readable, else None.
        machine: CPU architecture (``aarch64``, ``x86_64``).
        python: Interpreter version and implementation.
        cpus_online: Online CPU ids.
        isolated_cpus: CPUs removed from the scheduler (``isolcpus=``), from sysfs or cmdline.
        nohz_full_cpus: CPUs with the tick stopped (``nohz_full=``).
        cmdline: The kernel command line, or None.
    """

    kernel_release: str | None
    kernel_version: str | None
    preemption: str | None
    preempt_dynamic_mode: str | None
    machine: str
    python: str
    cpus_online: tuple[int, ...]
    isolated_cpus: tuple[int, ...]
    nohz_full_cpus: tuple[int, ...]
    cmdline: str | None

    @property
    def is_realtime_kernel(self) -> bool:
        """True on a PREEMPT_RT kernel."""
        return self.preemption == "PREEMPT_RT"


def parse_cpu_list(text: str | None) -> tuple[int, ...]:
    """Parse a kernel CPU list such as ``0-3,8,10-11`` (flags like ``domain,`` are skipped)."""
    if not text:
        return ()
    cpus: set[int] = set()
    for raw in text.replace("\n", ",").split(","):
        part = raw.strip()
        if not part:
            continue
        m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?(?::[0-9]+/[0-9]+)?", part)
        if not m:
            continue  # isolcpus flags such as "nohz" or "domain"
        lo = parse_int(m.group(1), lo=0, hi=_MAX_CPUS - 1)
        hi = parse_int(m.group(2), lo=0, hi=_MAX_CPUS - 1) if m.group(2) else lo
        if lo is None or hi is None:
            continue  # not a CPU number this kernel can have; never a huge range
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def _cmdline_value(cmdline: str | None, key: str) -> str | None:
    if not cmdline:
        return None
    for token in cmdline.split():
        if token.startswith(key + "="):
            return token.split("=", 1)[1]
    return None


def _preemption(root: Path, version: str | None) -> tuple[str | None, str | None]:
    mode_text = read_text(root, "/sys/kernel/debug/sched/preempt")
    mode = None
    if mode_text:
        m = re.search(r"\((\w+)\)", mode_text)
        mode = m.group(1) if m else None
    # /sys/kernel/realtime comes only from the RT patch queue; mainline PREEMPT_RT kernels lack
    # it, so uname -v is checked as well.
    if read_text(root, "/sys/kernel/realtime") == "1" or (version and "PREEMPT_RT" in version):
        return "PREEMPT_RT", None
    if version and "PREEMPT_DYNAMIC" in version:
        return "PREEMPT_DYNAMIC", mode
    if mode is not None:
        return "PREEMPT_DYNAMIC", mode
    if version and re.search(r"\bPREEMPT\b", version):
        return "PREEMPT", None
    if version and "PREEMPT_VOLUNTARY" in version:
        return "voluntary", None
    if version:
        return "none", None
    return None, None


def read_system(root: Path = Path("/")) -> SystemInfo:
    """Read the kernel and CPU facts under ``root``. Never raises."""
    live = root == Path("/")
    release = read_text(root, "/proc/sys/kernel/osrelease")
    version = read_text(root, "/proc/sys/kernel/version")
    if live:
        uname = os.uname()
        release = release or uname.release
        version = version or uname.version
    preemption, mode = _preemption(root, version)
    cmdline = read_text(root, "/proc/cmdline")
    isolated = parse_cpu_list(read_text(root, "/sys/devices/system/cpu/isolated"))
    if not isolated:
        isolated = parse_cpu_list(_cmdline_value(cmdline, "isolcpus"))
    nohz = parse_cpu_list(read_text(root, "/sys/devices/system/cpu/nohz_full"))
    if not nohz:
        nohz = parse_cpu_list(_cmdline_value(cmdline, "nohz_full"))
    online = parse_cpu_list(read_text(root, "/sys/devices/system/cpu/online"))
    if not online and live:
        online = tuple(sorted(os.sched_getaffinity(0)))
    return SystemInfo(
        kernel_release=release,
        kernel_version=version,
        preemption=preemption,
        preempt_dynamic_mode=mode,
        machine=platform.machine() if live else (_machine_from_tree(root) or "unknown"),
        python=f"{platform.python_implementation()} {sys.version.split()[0]}",
        cpus_online=online,
        isolated_cpus=isolated,
        nohz_full_cpus=nohz,
        cmdline=cmdline,
    )


def _machine_from_tree(root: Path) -> str | None:
    # A fake tree describes another machine; a device tree means an Arm board.
    return "aarch64" if read_text(root, "/proc/device-tree/model") else None
