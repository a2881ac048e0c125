"""Querying and switching nvpmodel power modes, safely.

Three lessons from the field shape this module: nvpmodel's exit status is not a verdict (a
declined reboot prompt exits like a success), so every switch is confirmed by querying again; a
switch that changes GPU power-gating masks or online CPU cores asks "reboot now?" on the terminal,
so standard input is always given explicitly (empty: the prompt reads end-of-file and cancels);
and query output carries WARN/ERROR noise lines, most often when not run as root.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from edgert._fileio import MAX_CONFIG_BYTES, FileRefusedError, parse_int, read_file
from edgert.errors import (
    CommandError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
    RebootRequiredError,
)
from edgert.power import _sysfs
from edgert.power._command import CommandResult, CommandRunner, SubprocessRunner, run_command
from edgert.power._nvpconf import NvpConfig, PowerMode, parse_nvpmodel_conf

__all__ = ["ModeSwitch", "NvpModel", "parse_nvpmodel_query"]

_MODE_LINE = re.compile(r"NV Power Mode\s*:\s*(\S+)")
_NOISE_PREFIXES = ("NVPM ", "NV FAN MODE")
# nvpmodel ids are small integers; a bigger number where an id belongs is not one.
_MAX_MODE_ID = 65535
_DENIED = re.compile(r"(:\s*13\s*$|permission denied|must be run as root|sudo|as a root user)",
                     re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModeSwitch:
    """What :meth:`NvpModel.set` did.

    Attributes:
        previous: The mode before the call.
        mode: The mode now in force (or, with ``reboot_pending``, in force after the reboot).
        changed: Whether a switch happened (``False``: the mode was already active).
        reboot_pending: nvpmodel accepted the switch and is rebooting the board.
        output: What nvpmodel printed (empty when nothing ran).
    """

    previous: PowerMode
    mode: PowerMode
    changed: bool
    reboot_pending: bool = False
    output: str = ""


def parse_nvpmodel_query(text: str) -> tuple[str | None, int | None]:
    """``(name, id)`` from ``nvpmodel -q`` (or ``-q --verbose``) output; ``None`` where absent.

    The mode's name follows ``NV Power Mode:``; its id is the next line that is a bare integer.
    ``NVPM WARN/ERROR/VERB`` and ``NV Fan Mode`` lines in between are skipped.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _MODE_LINE.search(line)
        if match is None:
            continue
        name = match.group(1)
        for after in lines[i + 1:]:
            stripped = after.strip()
            if not stripped or stripped.upper().startswith(_NOISE_PREFIXES):
                continue
            return name, parse_int(stripped, lo=0, hi=_MAX_MODE_ID)
        return name, None
    return None, None


class NvpModel:
    """The nvpmodel power modes of a Jetson: list them, query the current one, switch safely.

    Reading the configuration and querying need no root (``nvpmodel -q`` prints permission noise
    but answers); switching does.

    Args:
        root: Filesystem root for nvpmodel.conf and the status file (a fake tree in tests).
        runner: Runs ``nvpmodel``; :class:`SubprocessRunner` when ``None``.
        conf: The configuration file; ``<root>/etc/nvpmodel.conf`` when ``None`` (JetPack makes
            it a link to the file for this module, e.g. ``nvpmodel_p3767_0000.conf``).
        executable: The nvpmodel program.
        timeout_s: Limit for each nvpmodel run.
    """

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        runner: CommandRunner | None = None,
        conf: Path | None = None,
        executable: str = "/usr/sbin/nvpmodel",
        timeout_s: float = 15.0,
    ) -> None:
        if not timeout_s > 0:
            raise InvalidArgumentError(f"timeout_s must be positive, got {timeout_s!r}")
        self.root = Path(root)
        self.runner: CommandRunner = runner if runner is not None else SubprocessRunner()
        self.conf_path = Path(conf) if conf is not None else _sysfs.under(
            self.root, "etc/nvpmodel.conf")
        self.executable = executable
        self.timeout_s = timeout_s
        self._config: NvpConfig | None = None

    @property
    def config(self) -> NvpConfig:
        """The parsed configuration (read once; :meth:`reload` reads it again).

        Raises:
            NotSupportedError: There is no nvpmodel.conf (not a Jetson, or a container without it).
            PermissionDeniedError: It cannot be read.
            InvalidArgumentError: It is malformed, not a regular file (a FIFO, a device),
                or larger than 1 MiB.
        """
        if self._config is None:
            self._config = self._load()
        return self._config

    def reload(self) -> NvpConfig:
        """Read and parse the configuration again.

        Raises:
            NotSupportedError: There is no nvpmodel.conf.
            PermissionDeniedError: It cannot be read.
            InvalidArgumentError: It is malformed, not a regular file (a FIFO, a device),
                or larger than 1 MiB.
        """
        self._config = None
        return self.config

    def _load(self) -> NvpConfig:
        try:
            raw = read_file(self.conf_path, max_bytes=MAX_CONFIG_BYTES)
        except FileRefusedError as err:
            raise InvalidArgumentError(
                f"cannot read {err.filename}: {err.strerror}",
                hint="point conf= at the regular nvpmodel.conf file (e.g. /etc/nvpmodel.conf)",
            ) from err
        except FileNotFoundError as err:
            raise NotSupportedError(
                f"no nvpmodel configuration at {self.conf_path}",
                hint="nvpmodel exists only on Jetson (JetPack/L4T); in a container, mount "
                "/etc/nvpmodel.conf and /etc/nvpmodel/ from the host",
            ) from err
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot read {self.conf_path}: permission denied", errno_value=err.errno,
                path=str(self.conf_path), hint="make the file readable by this user",
            ) from err
        except OSError as err:
            raise NotSupportedError(
                f"cannot read {self.conf_path}: {errno.errorcode.get(err.errno or 0, err)}",
                hint="check that the path is a readable file",
            ) from err
        return parse_nvpmodel_conf(raw.decode("utf-8", errors="replace"), path=self.conf_path)

    @property
    def modes(self) -> tuple[PowerMode, ...]:
        """Every mode of the configuration, in file order (see :attr:`config` for errors)."""
        return self.config.modes

    @property
    def default(self) -> PowerMode | None:
        """The configuration's default mode; ``None`` if DEFAULT names no mode."""
        return self.config.default

    def mode(self, key: int | str | PowerMode) -> PowerMode:
        """A mode by id, name (case-insensitive) or an existing :class:`PowerMode`.

        Raises:
            InvalidArgumentError: No mode matches.
            NotSupportedError: There is no configuration to look in.
        """
        cfg = self.config
        found: PowerMode | None
        if isinstance(key, PowerMode):
            found = cfg.by_id(key.id)
        elif isinstance(key, bool):
            found = None
        elif isinstance(key, int):
            found = cfg.by_id(key)
        else:
            found = cfg.by_name(key)
            if found is None and (mode_id := parse_int(key, lo=0, hi=_MAX_MODE_ID)) is not None:
                found = cfg.by_id(mode_id)
        if found is None:
            known = ", ".join(str(m) for m in cfg.modes)
            raise InvalidArgumentError(
                f"no power mode {key!r} in {self.conf_path}; modes: {known}",
                hint="use an id or name from this list (they differ between modules and JetPack "
                "releases)",
            )
        return found

    def current(self) -> PowerMode:
        """The mode in force now, from ``nvpmodel -q``.

        Returns the configuration's mode (with caps) when its id is there, else a bare
        :class:`PowerMode` with the id and name nvpmodel printed.

        Raises:
            NotSupportedError: nvpmodel is not installed.
            CommandTimeoutError: It did not answer in time.
            PermissionDeniedError: It failed for lack of permission and printed no mode.
            CommandError: Its output names no mode.
        """
        res = self._run(["-q"])
        name, ident = parse_nvpmodel_query(res.output)
        if name is None:
            self._raise_failure(res, "nvpmodel -q printed no power mode")
        cfg = self._config_or_none()
        if ident is None and name is not None and cfg is not None:
            by_name = cfg.by_name(name)
            ident = None if by_name is None else by_name.id
        if ident is None:
            raise CommandError(
                f"nvpmodel -q named mode {name!r} without its id",
                argv=res.argv, returncode=res.returncode, stderr=res.stderr,
                hint="run 'nvpmodel -q' by hand and report its output",
            )
        known = cfg.by_id(ident) if cfg is not None else None
        return known if known is not None else PowerMode(id=ident, name=name or f"MODE_{ident}")

    def saved_mode_id(self) -> int | None:
        """The mode nvpmodel will apply at boot (``/var/lib/nvpmodel/status``); ``None`` if unknown.

        Needs no root and runs nothing.
        """
        text = _sysfs.read_str(_sysfs.under(self.root, "var/lib/nvpmodel/status"))
        if text is None or ":" not in text:
            return None
        value = text.split(":", 1)[1].strip()
        return parse_int(value, lo=0, hi=_MAX_MODE_ID)

    def set(
        self,
        mode: int | str | PowerMode,
        *,
        allow_reboot: bool = False,
    ) -> ModeSwitch:
        """Switch to ``mode`` and confirm the switch by querying again.

        A switch that changes the GPU power-gating masks or the online CPU cores takes effect
        only after a reboot; it is refused unless ``allow_reboot`` is true, in which case
        nvpmodel's prompt is answered "YES" and the board reboots at once. Without it the prompt
        is never answered, so nothing reboots.

        Args:
            mode: Target mode: id, name or :class:`PowerMode`.
            allow_reboot: Let nvpmodel reboot the board if the switch needs it.

        Returns:
            What happened; ``reboot_pending`` is true when the board is going down.

        Raises:
            InvalidArgumentError: No such mode.
            RebootRequiredError: The switch needs a reboot and ``allow_reboot`` is false.
            PermissionDeniedError: Not running as root.
            NotSupportedError: nvpmodel or its configuration is missing.
            CommandTimeoutError: nvpmodel did not finish in time (it was killed).
            CommandError: nvpmodel reported failure, or the mode did not change.
        """
        target = self.mode(mode)
        before = self.current()
        if before.id == target.id:
            return ModeSwitch(previous=before, mode=target, changed=False)
        reasons = self._reboot_reasons(before, target)
        if reasons and not allow_reboot:
            same = [str(m) for m in self.modes
                    if m.id != before.id and not self._reboot_reasons(before, m)]
            raise RebootRequiredError(
                f"switching nvpmodel from {before} to {target} needs a reboot: "
                + "; ".join(reasons),
                hint="pass allow_reboot=True to switch and reboot now"
                + (f", or choose a mode that needs none: {', '.join(same)}" if same else ""),
            )
        res = self._run(["-m", str(target.id)], stdin="YES\n" if allow_reboot else "")
        out = res.output
        if re.search(r"NVPM WARN:\s*rebooting", out, re.IGNORECASE):
            return ModeSwitch(previous=before, mode=target, changed=True, reboot_pending=True,
                              output=out)
        if "reboot required" in out.lower():
            raise RebootRequiredError(
                f"nvpmodel says switching to {target} needs a reboot; its prompt was not "
                f"answered, so the mode stays {before}",
                hint="pass allow_reboot=True to switch and reboot now",
            )
        errors = _error_lines(out)
        if errors and _DENIED.search("\n".join(errors)):
            raise PermissionDeniedError(
                f"nvpmodel -m {target.id} was refused: {errors[-1]}", errno_value=errno.EACCES,
                hint="switching power modes needs root: run as root, or through a privileged "
                "helper (a systemd unit) that your application asks",
            )
        after = self.current()
        failed = [e for e in errors if "failed" in e.lower()]
        if after.id != target.id or failed:
            raise CommandError(
                f"nvpmodel -m {target.id} exited {res.returncode} but the mode is {after}, "
                f"not {target}" if after.id != target.id else
                f"nvpmodel -m {target.id} reported failure: {failed[-1]}",
                argv=res.argv, returncode=res.returncode, stderr=res.stderr,
                hint="nvpmodel said: " + (" | ".join(errors) if errors else "(nothing)"),
            )
        return ModeSwitch(previous=before, mode=after, changed=True, output=out)

    def _reboot_reasons(self, before: PowerMode, target: PowerMode) -> tuple[str, ...]:
        known = self.config.by_id(before.id)
        if known is None:
            return (f"the current mode {before} is not in {self.conf_path}, so what changes "
                    "is unknown",)
        return known.reboot_reasons(target)

    def _config_or_none(self) -> NvpConfig | None:
        try:
            return self.config
        except (NotSupportedError, PermissionDeniedError, InvalidArgumentError):
            return None

    def _run(self, args: list[str], *, stdin: str = "") -> CommandResult:
        return run_command(self.runner, [self.executable, *args], stdin=stdin,
                           timeout=self.timeout_s)

    def _raise_failure(self, res: CommandResult, what: str) -> NoReturn:
        errors = _error_lines(res.output)
        if _DENIED.search(res.output):
            raise PermissionDeniedError(
                f"{what}: {errors[-1] if errors else 'permission denied'}",
                errno_value=errno.EACCES,
                hint="run as root, or read the boot-time mode with saved_mode_id()",
            )
        raise CommandError(
            f"{what} (exit {res.returncode})", argv=res.argv, returncode=res.returncode,
            stderr=res.stderr,
            hint="nvpmodel said: " + (" | ".join(errors) if errors else
                                      res.output.strip()[-300:] or "(nothing)"),
        )

    def __repr__(self) -> str:
        return f"NvpModel(root={self.root!s}, conf={os.fspath(self.conf_path)!r})"


def _error_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "ERROR" in line.upper()]
