"""jetson_clocks: show the clock state, pin clocks at the mode's maximum, and restore them.

jetson_clocks pins CPU, GPU and EMC clocks at the current nvpmodel ceiling: it buys latency
consistency, not throughput. Enabling stores a baseline first (``--store``) so that
:meth:`JetsonClocks.restore` can undo it; every change is confirmed with ``--show``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

from edgert._compat import StrEnum
from edgert._fileio import parse_index, parse_int
from edgert.errors import CommandError, EdgeRTError, InvalidArgumentError, PermissionDeniedError
from edgert.power import _sysfs
from edgert.power._command import CommandResult, CommandRunner, SubprocessRunner, run_command
from edgert.power._nvpconf import is_no_cap
from edgert.power._nvpmodel import NvpModel

__all__ = [
    "ClockDomain",
    "ClockState",
    "ClocksReport",
    "CpuClock",
    "JetsonClocks",
    "parse_jetson_clocks_show",
]

_KV = re.compile(r"(\w+)=(\S*)")
# jetson_clocks pins EMC at a positive emc_iso_cap (the newer kernel's path second).
# How far below a cap the EMC table's nearest entry may sit (its steps are a few percent apart).
_EMC_TABLE_SLACK = 0.05
_EMC_CAP_FILES = ("sys/kernel/nvpmodel_emc_cap/emc_iso_cap", "sys/kernel/nvpmodel_clk_cap/emc")
_ROOT_ONLY = re.compile(r"as a root user|must be run as root|permission denied", re.IGNORECASE)


class ClockState(StrEnum):
    """Whether jetson_clocks' pinning is in force."""

    PINNED = "pinned"
    """CPU and GPU run at min == max and EMC at its ceiling (its maximum, or the nvpmodel mode's
    EMC cap where one is in force), as jetson_clocks sets them."""
    DYNAMIC = "dynamic"
    """Clocks scale with load (jetson_clocks is off, or was restored)."""
    UNKNOWN = "unknown"
    """The report lacks what is needed to tell."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuClock:
    """One CPU line of ``jetson_clocks --show`` (frequencies in kHz)."""

    index: int
    online: bool | None
    governor: str | None
    min_khz: int | None
    max_khz: int | None
    cur_khz: int | None
    idle_states: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True, slots=True)
class ClockDomain:
    """The GPU or EMC line of ``jetson_clocks --show`` (frequencies in Hz)."""

    min_hz: int | None
    max_hz: int | None
    cur_hz: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ClocksReport:
    """A parsed ``jetson_clocks --show``. Fields the output lacked are ``None``.

    Attributes:
        soc_family: e.g. ``tegra234``.
        machine: The board's model string.
        online_cpus: e.g. ``0-11``.
        offline_cpus: Printed by newer releases only (often empty).
        cpus: One entry per CPU line, in printed order.
        gpu: GPU clock limits and current frequency.
        active_gpu_tpcs: GPU TPCs not power-gated (newer releases).
        emc: Memory controller clock.
        emc_freq_override: EMC ``FreqOverride`` (1 while jetson_clocks is on).
        fan: ``key → value`` of the fan lines, as printed.
        power_mode: The nvpmodel mode name.
        emc_cap_hz: The nvpmodel EMC cap in force (``emc_iso_cap``), which is not part of the
            printed text: a positive cap in Hz; ``0`` when EMC is known to be uncapped; ``None``
            when unknown. jetson_clocks pins EMC at a positive cap, not at ``MaxFreq`` (which
            stays the hardware maximum), so :attr:`state` compares against it.
            :meth:`JetsonClocks.show` fills it in from sysfs or the nvpmodel.conf.
    """

    soc_family: str | None = None
    machine: str | None = None
    online_cpus: str | None = None
    offline_cpus: str | None = None
    cpus: tuple[CpuClock, ...] = ()
    gpu: ClockDomain | None = None
    active_gpu_tpcs: int | None = None
    emc: ClockDomain | None = None
    emc_freq_override: bool | None = None
    fan: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    power_mode: str | None = None
    emc_cap_hz: int | None = None

    @property
    def emc_ceiling_hz(self) -> int | None:
        """The EMC rate jetson_clocks pins, ``MaxFreq`` or the mode's EMC cap when lower."""
        top = self.emc.max_hz if self.emc is not None else None
        cap = self.emc_cap_hz
        if cap is None or cap <= 0:
            return top
        return cap if top is None else min(top, cap)

    @property
    def state(self) -> ClockState:
        """Pinned when every online CPU and the GPU run at min == max and EMC at its ceiling.

        The EMC ceiling is :attr:`emc_ceiling_hz`: ``MaxFreq``, lowered to the mode's EMC cap
        where one is in force (as jtop does). With ``FreqOverride=1`` (the rate is locked, which
        only jetson_clocks does) EMC also counts as pinned at a rate below the ceiling: when the
        cap is unknown, or is not an entry of the EMC frequency table and the rate rounds down.
        """
        cpus = [c for c in self.cpus if c.online is not False]
        if not cpus or self.gpu is None or self.emc is None:
            return ClockState.UNKNOWN
        pinned = (
            all(c.min_khz is not None and c.min_khz == c.max_khz for c in cpus)
            and self.gpu.min_hz is not None and self.gpu.min_hz == self.gpu.max_hz
            and self._emc_pinned()
        )
        return ClockState.PINNED if pinned else ClockState.DYNAMIC

    def _emc_pinned(self) -> bool:
        cur = self.emc.cur_hz if self.emc is not None else None
        ceiling = self.emc_ceiling_hz
        if cur is None:
            return False
        if ceiling is not None and cur == ceiling:
            return True
        if self.emc_freq_override is not True:
            return False
        # Locked: pinned where the ceiling is unknown, or just below it (a cap that is not an
        # entry of the EMC table rounds down). A rate well below it is another tool's override,
        # not jetson_clocks (found by review: 204 MHz under a 2133 MHz cap read as pinned).
        if self.emc_cap_hz is None or ceiling is None:  # the mode's cap is unknown here
            return ceiling is None or cur <= ceiling
        return ceiling * (1 - _EMC_TABLE_SLACK) <= cur <= ceiling


def parse_jetson_clocks_show(text: str, *, emc_cap_hz: int | None = None) -> ClocksReport:
    """Parse ``jetson_clocks --show`` in either dialect.

    Older releases print ``cpuN: Online=1 Governor=...``; newer ones drop ``Online=``, pad with
    two spaces, add ``Offline CPUs`` and ``Active GPU TPCs`` and print fans as
    ``FAN Dynamic Speed Control=...``.

    Args:
        text: The output.
        emc_cap_hz: The nvpmodel EMC cap in force, if known (see
            :attr:`ClocksReport.emc_cap_hz`); the output does not print it.
    """
    soc = machine = online_cpus = offline_cpus = power_mode = None
    gpu = emc = None
    tpcs: int | None = None
    override: bool | None = None
    cpus: list[CpuClock] = []
    fan: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := re.match(r"SOC family:\s*(\S+)\s+Machine:\s*(.*)$", line):
            soc, machine = match.group(1), match.group(2).strip()
        elif match := re.match(r"Online CPUs:\s*([^,]*)(?:,\s*Offline CPUs:\s*(.*))?$", line):
            online_cpus = match.group(1).strip()
            if match.group(2) is not None:
                offline_cpus = match.group(2).strip()
        elif (match := re.match(r"cpu([0-9]+):\s*(.*)$", line)) and \
                (index := parse_index(match.group(1))) is not None:
            cpus.append(_cpu_line(index, match.group(2)))
        elif match := re.match(r"Active GPU TPCs:\s*([0-9]+)", line):
            tpcs = parse_int(match.group(1), lo=0)
        elif line.startswith(("GPU ", "EMC ")):
            kv = dict(_KV.findall(line))
            domain = ClockDomain(min_hz=_int(kv.get("MinFreq")), max_hz=_int(kv.get("MaxFreq")),
                                 cur_hz=_int(kv.get("CurrentFreq")))
            if line.startswith("GPU"):
                gpu = domain
            else:
                emc = domain
                if "FreqOverride" in kv:
                    override = kv["FreqOverride"] == "1"
        elif line.upper().startswith("FAN"):
            fan.update(_fan_pairs(re.sub(r"^fan:?\s*", "", line, flags=re.IGNORECASE)))
        elif match := re.match(r"NV Power Mode:\s*(.*)$", line):
            power_mode = match.group(1).strip()
    return ClocksReport(
        soc_family=soc, machine=machine, online_cpus=online_cpus, offline_cpus=offline_cpus,
        cpus=tuple(cpus), gpu=gpu, active_gpu_tpcs=tpcs, emc=emc, emc_freq_override=override,
        fan=MappingProxyType(fan), power_mode=power_mode, emc_cap_hz=emc_cap_hz,
    )


def _cpu_line(index: int, rest: str) -> CpuClock:
    main, _, idle = rest.partition("IdleStates:")
    kv = dict(_KV.findall(main))
    online = kv.get("Online")
    return CpuClock(
        index=index, online=None if online is None else online == "1",
        governor=kv.get("Governor"), min_khz=_int(kv.get("MinFreq")),
        max_khz=_int(kv.get("MaxFreq")), cur_khz=_int(kv.get("CurrentFreq")),
        idle_states=MappingProxyType(
            {k: v for k, s in _KV.findall(idle) if (v := _int(s)) is not None}),
    )


def _fan_pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    words: list[str] = []
    for token in text.split():
        if "=" in token:
            key, _, value = token.partition("=")
            out[" ".join([*words, key])] = value
            words = []
        else:
            words.append(token)
    return out


def _int(text: str | None) -> int | None:
    return parse_int(text)


class JetsonClocks:
    """Drives ``jetson_clocks``: show, enable (storing a baseline first) and restore.

    Everything here needs root, ``show()`` included: jetson_clocks refuses to run otherwise.

    Args:
        root: Filesystem root under which the default baseline file lives.
        runner: Runs jetson_clocks; :class:`SubprocessRunner` when ``None``.
        executable: The jetson_clocks program.
        baseline_path: Where ``--store`` writes the clocks to restore; default
            ``<root>/run/edgert/l4t_dfs.conf`` (``/run`` empties at boot, as clocks reset then).
        timeout_s: Limit for each run.
    """

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        runner: CommandRunner | None = None,
        executable: str = "/usr/bin/jetson_clocks",
        baseline_path: Path | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if not timeout_s > 0:
            raise InvalidArgumentError(f"timeout_s must be positive, got {timeout_s!r}")
        self.root = Path(root)
        self.runner: CommandRunner = runner if runner is not None else SubprocessRunner()
        self.executable = executable
        self.baseline_path = Path(baseline_path) if baseline_path is not None else \
            _sysfs.under(self.root, "run/edgert/l4t_dfs.conf")
        self.timeout_s = timeout_s

    @property
    def has_baseline(self) -> bool:
        """Whether a stored baseline exists for :meth:`restore`."""
        return self.baseline_path.is_file()

    def show(self) -> ClocksReport:
        """The current clock configuration (``jetson_clocks --show``).

        Raises:
            PermissionDeniedError: Not running as root.
            NotSupportedError: jetson_clocks is not installed (not a Jetson).
            CommandTimeoutError: It did not finish in time.
            CommandError: It failed or printed nothing recognisable.
        """
        res = self._run("--show")
        report = parse_jetson_clocks_show(res.stdout)
        if not report.cpus and report.gpu is None and report.emc is None:
            self._fail(res, "jetson_clocks --show printed no clock lines")
        return dataclasses.replace(report, emc_cap_hz=self._emc_cap(report.power_mode))

    def _emc_cap(self, power_mode: str | None) -> int | None:
        """The EMC cap in force: what jetson_clocks reads, else the conf's cap for the mode."""
        for rel in _EMC_CAP_FILES:
            value = _sysfs.read_int(_sysfs.under(self.root, rel))
            if value is not None:
                return value if value > 0 and not is_no_cap(value) else 0
        if power_mode is None:
            return None
        try:
            mode = NvpModel(self.root).config.by_name(power_mode)
        except EdgeRTError:  # no conf, unreadable or malformed: the cap is unknown
            return None
        if mode is None:
            return None
        return mode.emc_max_freq_hz or 0

    def state(self) -> ClockState:
        """Pinned, dynamic or unknown, from :meth:`show` (same errors)."""
        return self.show().state

    def enable(self, *, fan: bool = False) -> ClocksReport:
        """Pin clocks at the current mode's maximum, storing a baseline first.

        If the clocks are already pinned, nothing runs (and no baseline is stored, since one
        taken now would record the pinned clocks).

        Args:
            fan: Also run the fan at full speed (``--fan``).

        Returns:
            The clock report after the change.

        Raises:
            PermissionDeniedError: Not running as root, or the baseline directory is not writable.
            NotSupportedError: jetson_clocks is not installed.
            CommandTimeoutError: It did not finish in time.
            CommandError: It failed, or the clocks are still not pinned afterwards.
        """
        before = self.show()
        if before.state is ClockState.PINNED:
            return before
        self._store_baseline()
        res = self._run(*(["--fan"] if fan else []))
        after = self.show()
        if after.state is not ClockState.PINNED:
            self._fail(res, "jetson_clocks ran but the clocks are not pinned", always=True)
        return after

    def restore(self) -> ClocksReport:
        """Put back the clocks stored by :meth:`enable`.

        Returns:
            The clock report after restoring.

        Raises:
            CommandError: There is no baseline, or jetson_clocks failed.
            PermissionDeniedError: Not running as root.
            NotSupportedError: jetson_clocks is not installed.
            CommandTimeoutError: It did not finish in time.
        """
        if not self.has_baseline:
            raise CommandError(
                f"no jetson_clocks baseline at {self.baseline_path} to restore",
                argv=(self.executable, "--restore", os.fspath(self.baseline_path)),
                hint="enable() stores one; clocks pinned by someone else (or before a reboot) "
                "have no baseline here: restore with their file or reboot",
            )
        res = self._run("--restore", os.fspath(self.baseline_path))
        report = self.show()
        if report.state is ClockState.PINNED:
            self._fail(res, "jetson_clocks --restore ran but the clocks are still pinned",
                       always=True)
        return report

    def _store_baseline(self) -> None:
        path = self.baseline_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # --store asks before overwriting; a stale file would also hold another mode's clocks.
            path.unlink(missing_ok=True)
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot write the jetson_clocks baseline at {path}", errno_value=err.errno,
                path=str(path), hint="run as root, or pass baseline_path= to a writable place",
            ) from err
        except OSError as err:
            raise CommandError(
                f"cannot prepare the jetson_clocks baseline at {path}: "
                f"{errno.errorcode.get(err.errno or 0, err)}",
                hint="pass baseline_path= to a writable place",
            ) from err
        res = self._run("--store", os.fspath(path))
        if not path.is_file():
            self._fail(res, f"jetson_clocks --store wrote no baseline at {path}", always=True)

    def _run(self, *args: str) -> CommandResult:
        res = run_command(self.runner, [self.executable, *args], stdin="",
                          timeout=self.timeout_s)
        if res.returncode != 0 or _ROOT_ONLY.search(res.output):
            self._fail(res, f"{' '.join(res.argv)} failed")
        return res

    def _fail(self, res: CommandResult, what: str, *, always: bool = False) -> NoReturn:
        text = res.output.strip()
        if _ROOT_ONLY.search(text):
            raise PermissionDeniedError(
                f"{what}: jetson_clocks must run as root ({text.splitlines()[-1]})",
                errno_value=errno.EPERM,
                hint="jetson_clocks changes clock limits system-wide: run as root, or apply it "
                "once at boot from a systemd unit",
            )
        raise CommandError(
            f"{what} (exit {res.returncode})" if not always else what,
            argv=res.argv, returncode=res.returncode, stderr=res.stderr,
            hint="jetson_clocks said: " + (text[-300:] or "(nothing)"),
        )

    def __repr__(self) -> str:
        return f"JetsonClocks(executable={self.executable!r}, baseline={self.baseline_path!s})"
