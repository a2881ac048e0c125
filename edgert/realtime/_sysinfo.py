"""Read what the kernel allows this process: capabilities, RT cgroup budget, locked memory.

Every reader takes ``root`` (default ``/``) so tests can point it at a fake procfs/sysfs tree,
and returns ``None`` for a value it cannot read instead of guessing.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import resource
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgert._fileio import MAX_CONFIG_BYTES, parse_int, read_file
from edgert.platform import parse_cpu_list as _platform_cpu_list
from edgert.platform import read_system, read_text

__all__ = [
    "CAP_IPC_LOCK",
    "CAP_SYS_NICE",
    "CgroupRt",
    "format_limit",
    "has_capability",
    "isolated_cpus",
    "kernel_is_preempt_rt",
    "map_span",
    "mapped_spans",
    "online_cpus",
    "parse_cpu_list",
    "proc_status_kib",
    "rlimit",
    "rt_cgroup",
    "rt_group_sched",
    "user_name",
]

CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23

_ROOT = Path("/")
# CapEff is 16 hex digits (64 capability bits).
_HEX_MASK = re.compile(r"[0-9a-fA-F]{1,16}")
# A kernel .config is ~300 KB; 8 MiB leaves room and stops a gzip bomb.
_MAX_CONFIG_TEXT = 8 << 20


def _gunzip(data: bytes) -> str:
    """A gzip member, decompressed to at most _MAX_CONFIG_TEXT bytes (no gzip bomb)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = inflate.decompress(data, _MAX_CONFIG_TEXT)
    if inflate.unconsumed_tail or not inflate.eof:
        raise ValueError("not a complete kernel config of sane size")
    return text.decode(errors="replace")


def _read(path: Path) -> str | None:
    # One reader for the whole package: never raises, strips NULs and whitespace.
    return read_text(_ROOT, str(path))


def _status_field(name: str, root: Path) -> str | None:
    text = _read(root / "proc/self/status")
    if text is None:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def has_capability(cap: int, root: Path = _ROOT) -> bool | None:
    """Whether ``cap`` is in this process's effective set; ``None`` if unreadable."""
    value = _status_field("CapEff", root)
    if value is None:
        return None
    if _HEX_MASK.fullmatch(value) is None:
        return None
    return bool(int(value, 16) >> cap & 1)


def proc_status_kib(name: str, root: Path = _ROOT) -> int | None:
    """A ``kB`` field of /proc/self/status (VmLck, VmSize, VmRSS...), in KiB."""
    value = _status_field(name, root)
    if value is None:
        return None
    words = value.split()
    return parse_int(words[0], lo=0) if words else None


def map_span(line: str) -> tuple[int, int] | None:
    """``(start, end)`` of a ``/proc/<pid>/maps`` (or smaps header) line, else None."""
    start, dash, end = line.partition(" ")[0].partition("-")
    if not dash:
        return None
    try:
        return int(start, 16), int(end, 16)
    except ValueError:
        return None


def mapped_spans() -> list[tuple[int, int]] | None:
    """Every mapping of this process, ``(start, end)`` in address order, or None if
    ``/proc/self/maps`` cannot be read (a big process has megabytes of it: up to 64 MiB)."""
    text = read_text(_ROOT, "/proc/self/maps", max_bytes=64 << 20)
    if text is None:
        return None
    return [span for line in text.splitlines() if (span := map_span(line)) is not None]


def rlimit(which: int) -> tuple[int, int]:
    """``(soft, hard)`` of a resource limit; ``resource.RLIM_INFINITY`` for unlimited."""
    return resource.getrlimit(which)


def format_limit(value: int, *, unit: str = "") -> str:
    """Render an rlimit value the way ``ulimit`` does."""
    if value == resource.RLIM_INFINITY:
        return "unlimited"
    if unit == "bytes":
        if value >= 1 << 20 and value % (1 << 20) == 0:
            return f"{value >> 20} MiB"
        if value >= 1 << 10 and value % (1 << 10) == 0:
            return f"{value >> 10} KiB"
        return f"{value} bytes"
    return str(value)


def user_name() -> str:
    """The effective user's login name (for limits.conf lines), or its numeric id."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse a kernel CPU list (``0-3,6,8-9``), as :func:`edgert.platform.parse_cpu_list` does."""
    return frozenset(_platform_cpu_list(text))


def _cpu_list_file(path: Path) -> frozenset[int] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_cpu_list(text)
    except ValueError:
        return None


def online_cpus(root: Path = _ROOT) -> frozenset[int] | None:
    """CPUs the kernel has online."""
    return _cpu_list_file(root / "sys/devices/system/cpu/online")


def isolated_cpus(root: Path = _ROOT) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """``(isolcpus, nohz_full)`` sets; a file that does not exist reads as ``None``."""
    base = root / "sys/devices/system/cpu"
    return _cpu_list_file(base / "isolated"), _cpu_list_file(base / "nohz_full")


def kernel_is_preempt_rt(root: Path = _ROOT) -> tuple[bool | None, str]:
    """Whether the kernel is PREEMPT_RT, and how that was decided (see :mod:`edgert.platform`).

    ``None`` when neither the kernel version nor /sys/kernel/realtime can be read (a fake
    ``root`` without them); the reason then says so.
    """
    info = read_system(root)
    version = (info.kernel_version or "").strip()
    if info.is_realtime_kernel:
        if "PREEMPT_RT" in version:
            return True, f"kernel version says {version!r}"
        return True, "/sys/kernel/realtime is 1"
    if not version:
        where = "" if root == _ROOT else " in this tree"
        return None, (f"not readable{where} (no {root / 'proc/sys/kernel/version'}): "
                      "PREEMPT_RT cannot be told")
    return False, f"kernel version is {version!r} (no PREEMPT_RT)"


def rt_group_sched(root: Path = _ROOT) -> bool | None:
    """Whether the kernel applies RT group scheduling; ``None`` when it cannot be told.

    Read from the kernel config (/proc/config.gz, else /boot/config-<release>) and the
    ``rt_group_sched=`` boot parameter (kernels with CONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED).
    """
    config: str | None = None
    try:
        config = _gunzip(read_file(root / "proc/config.gz", max_bytes=MAX_CONFIG_BYTES))
    except (OSError, EOFError, ValueError, zlib.error):
        release = _read(root / "proc/sys/kernel/osrelease")
        if release is None and root == _ROOT:
            release = platform.release()
        if release:
            config = _read(root / "boot" / f"config-{release.strip()}")
    if config is None:
        return None
    options = set(config.split())
    if "CONFIG_RT_GROUP_SCHED=y" not in options:
        return False
    cmdline = (_read(root / "proc/cmdline") or "").split()
    if "rt_group_sched=0" in cmdline:
        return False
    if "CONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y" in options:
        return "rt_group_sched=1" in cmdline
    return True


@dataclass(frozen=True, kw_only=True, slots=True)
class CgroupRt:
    """The RT budget of this process's cpu cgroup under RT group scheduling.

    Attributes:
        group: The cpu cgroup that applies to the process (cgroup paths as /proc/self/cgroup
            names them).
        version: 1 or 2.
        file: The ``cpu.rt_runtime_us`` that was read, or ``None`` on cgroup v2, which has none:
            there a non-root cpu group simply has no RT runtime.
        runtime_us: RT runtime per period; 0 means no task in the group may be SCHED_FIFO/RR,
            even as root.
    """

    group: str
    version: int
    file: Path | None
    runtime_us: int


def _cgroup_mounts(root: Path) -> list[tuple[int, str, Path]]:
    """``(version, root inside the hierarchy, mount point)`` of the cpu v1 and the v2 mounts."""
    text = _read(root / "proc/self/mountinfo")
    mounts: list[tuple[int, str, Path]] = []
    if text is None:
        return mounts
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, options = rfields[0], rfields[2].split(",")
        if fstype == "cgroup" and "cpu" in options:
            mounts.append((1, fields[3], root / fields[4].lstrip("/")))
        elif fstype == "cgroup2":
            mounts.append((2, fields[3], root / fields[4].lstrip("/")))
    return mounts


def _relative(group: str, mount_root: str) -> str:
    if mount_root != "/" and group.startswith(mount_root):
        group = group[len(mount_root):]
    return group.strip("/")


def _v2_cpu_group(mount_point: Path, group: str) -> str | None:
    """The group whose cpu controller governs ``group`` ("" = the root), None if unreadable."""
    parts = [p for p in group.split("/") if p]
    while parts:
        parent = mount_point.joinpath(*parts[:-1]) / "cgroup.subtree_control"
        control = _read(parent)
        if control is None:
            return None
        if "cpu" in control.split():
            return "/".join(parts)
        parts.pop()
    return ""


def rt_cgroup(root: Path = _ROOT) -> CgroupRt | None:
    """The RT budget of this process's cpu cgroup, or ``None`` when none applies.

    None applies when the kernel has no RT group scheduling, the process sits in the root cpu
    group, or the cgroup filesystem is not mounted here.

    * cgroup v1: the group's ``cpu.rt_runtime_us`` (new groups start at 0).
    * cgroup v2 with RT group scheduling: v2 has no ``cpu.rt_runtime_us`` to give a group a
      budget, so any cpu group other than the root one has none (``runtime_us=0``).
    """
    text = _read(root / "proc/self/cgroup")
    if text is None:
        return None
    groups: list[tuple[int, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if "cpu" in controllers.split(","):
            groups.append((1, path))
        elif hierarchy == "0" and controllers == "":
            groups.append((2, path))
    mounts = _cgroup_mounts(root)
    for version, group in groups:
        for mount_version, mount_root, mount_point in mounts:
            if mount_version != version:
                continue
            rel = _relative(group, mount_root)
            if version == 1:
                file = mount_point / rel / "cpu.rt_runtime_us"
                value = _read(file)
                if value is None:
                    continue
                runtime_us = parse_int(value, lo=-1)
                if runtime_us is None:
                    continue
                return CgroupRt(group=group, version=1, file=file, runtime_us=runtime_us)
            cpu_group = _v2_cpu_group(mount_point, rel)
            if cpu_group is None or cpu_group == "" or rt_group_sched(root) is not True:
                continue
            file = mount_point / cpu_group / "cpu.rt_runtime_us"
            value = _read(file)
            runtime = parse_int(value, lo=0) or 0
            return CgroupRt(group="/" + cpu_group, version=2,
                            file=file if value is not None else None, runtime_us=runtime)
    return None
