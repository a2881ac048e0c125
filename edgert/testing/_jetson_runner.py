"""A fake command runner that answers like nvpmodel and jetson_clocks on a Jetson."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgert._fileio import parse_int
from edgert.errors import CommandTimeoutError, NotSupportedError
from edgert.power._command import CommandResult
from edgert.power._nvpconf import NvpConfig, PowerMode, parse_nvpmodel_conf
from edgert.testing._jetson_texts import NO_CAP_ECHO, clocks_show_text, nvpmodel_conf_text

__all__ = ["FakeCall", "FakeCommandRunner"]

_EMC_EACCES = "NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13"
_JC_ROOT = "Error: Run this script(/usr/bin/jetson_clocks) as a root user"


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One call the fake answered: the command line, its standard input and timeout."""

    argv: tuple[str, ...]
    stdin: str | None
    timeout: float | None


class FakeCommandRunner:
    """Answers ``nvpmodel`` and ``jetson_clocks`` command lines the way a Jetson does.

    It keeps state like the real machine: the current power mode (written to the tree's
    ``/var/lib/nvpmodel/status`` when a tree is given), whether clocks are pinned, and whether
    a reboot was requested. Every call is recorded in :attr:`calls`.

    Args:
        root: A tree from :func:`~edgert.testing.jetson.build_jetson_tree`; the conf, status
            file, model string and CPU count are taken from it.
        conf_text: nvpmodel.conf text to use instead of the tree's.
        mode_id: Starting mode; default: the tree's status file, else the conf's default.
        as_root: ``False`` answers like a non-root user: ``-q`` adds permission noise, switches
            fail, jetson_clocks refuses.
        fan_warning: ``nvpmodel -q`` starts with ``NVPM WARN: fan mode is not set!``.
        clocks_dialect: ``"new"`` or ``"old"`` ``jetson_clocks --show`` format.
        hang: Command prefixes (``"nvpmodel -m"``, ``"jetson_clocks"``) that never finish: the
            call raises :class:`~edgert.CommandTimeoutError` as a real runner would after
            ``timeout`` (and ``AssertionError`` if no timeout was given: it would hang forever).
        missing: Programs that are not installed (``"nvpmodel"``, ``"jetson_clocks"``).
        ignore_set: ``nvpmodel -m`` exits 0 but changes nothing (the exit status lies).
        machine: Model string for ``--show``; default: the tree's device-tree model.
        cores: CPU count; default: from the tree, else 8.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        conf_text: str | None = None,
        mode_id: int | None = None,
        as_root: bool = True,
        fan_warning: bool = False,
        clocks_dialect: str = "new",
        hang: Iterable[str] = (),
        missing: Iterable[str] = (),
        ignore_set: bool = False,
        machine: str | None = None,
        cores: int | None = None,
    ) -> None:
        self.root = None if root is None else Path(root)
        self.calls: list[FakeCall] = []
        """Every command line run through this runner, in order."""
        self.as_root = as_root
        self.fan_warning = fan_warning
        self.clocks_dialect = clocks_dialect
        self.hang = set(hang)
        self.missing = set(missing)
        self.ignore_set = ignore_set
        self.cores = cores if cores is not None else self._tree_cores()
        if conf_text is None:
            conf_path = self._tree("etc/nvpmodel.conf")
            conf_text = (conf_path.read_text() if conf_path is not None and conf_path.exists()
                         else nvpmodel_conf_text(cores=self.cores))
        self.config: NvpConfig = parse_nvpmodel_conf(conf_text)
        if mode_id is None:
            mode_id = self._tree_status()
        if mode_id is None:
            default = self.config.default
            mode_id = default.id if default is not None else self.config.modes[-1].id
        self.mode_id = mode_id
        self._write_emc_cap()  # the tree's EMC cap follows the mode this machine runs
        self.machine = machine or self._tree_model() or "NVIDIA Jetson Orin NX Engineering " \
            "Reference Developer Kit"
        self.pinned = False
        self.reboot_requested = False

    # -- the tree -------------------------------------------------------------------------
    def _tree(self, rel: str) -> Path | None:
        return None if self.root is None else self.root / rel

    def _tree_cores(self) -> int:
        path = self._tree("sys/devices/system/cpu/present")
        if path is not None and path.exists():
            text = path.read_text().strip()
            return int(text.rsplit("-", 1)[-1]) + 1
        return 8

    def _tree_status(self) -> int | None:
        path = self._tree("var/lib/nvpmodel/status")
        if path is None or not path.exists():
            return None
        value = path.read_text().strip().partition(":")[2]
        return parse_int(value, lo=0)

    def _tree_model(self) -> str | None:
        path = self._tree("proc/device-tree/model")
        if path is None or not path.exists():
            return None
        return path.read_bytes().rstrip(b"\0").decode()

    def _write_status(self) -> None:
        path = self._tree("var/lib/nvpmodel/status")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"pmode:{self.mode_id:04d}\n")

    def _write_emc_cap(self) -> None:
        # nvpmodel writes the mode's EMC cap (0: none) where jetson_clocks reads it.
        path = self._tree("sys/kernel/nvpmodel_emc_cap/emc_iso_cap")
        if path is not None and path.exists():
            mode = self.mode
            cap = mode.emc_max_freq_hz if mode is not None else None
            path.write_text(f"{cap or 0}\n")

    @property
    def mode(self) -> PowerMode | None:
        """The current mode as the conf describes it."""
        return self.config.by_id(self.mode_id)

    # -- dispatch -------------------------------------------------------------------------
    def __call__(self, argv: Sequence[str], *, stdin: str | None = None,
                 timeout: float | None = None) -> CommandResult:
        """Answer ``argv`` from the canned outputs and record the call (a CommandRunner)."""
        args = tuple(argv)
        self.calls.append(FakeCall(args, stdin, timeout))
        prog = os.path.basename(args[0]) if args else ""
        line = " ".join([prog, *args[1:]])
        if prog in self.missing:
            raise NotSupportedError(f"cannot run {args[0]}: no such program (fake)")
        if any(line == h or line.startswith(h + " ") for h in self.hang):
            if timeout is None:
                raise AssertionError(f"{line!r} hangs and no timeout was given: it would "
                                     "block forever")
            raise CommandTimeoutError(
                f"{line} did not finish within {timeout:g} s and was killed (fake)", argv=args)
        if prog == "nvpmodel":
            out, err, rc = self._nvpmodel(list(args[1:]), stdin or "")
        elif prog == "jetson_clocks":
            out, err, rc = self._jetson_clocks(list(args[1:]), stdin or "")
        else:
            raise NotSupportedError(f"cannot run {args[0]}: the fake knows only nvpmodel and "
                                    "jetson_clocks")
        return CommandResult(argv=args, returncode=rc, stdout=out, stderr=err)

    # -- nvpmodel -------------------------------------------------------------------------
    def _nvpmodel(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        if args[:1] == ["-q"]:
            return self._query(verbose="--verbose" in args)
        if args[:1] == ["-p"]:
            return self._parse_dump(), "", 0
        if args[:1] == ["-m"] and len(args) >= 2:
            return self._switch(args[1], stdin)
        return "", f"NVPM ERROR: unsupported arguments {' '.join(args)} (fake)\n", 1

    def _query(self, *, verbose: bool) -> tuple[str, str, int]:
        mode = self.mode
        name = mode.name if mode is not None else f"MODE_{self.mode_id}"
        out: list[str] = []
        err: list[str] = []
        if self.fan_warning:
            out.append("NVPM WARN: fan mode is not set!")
        if not self.as_root:
            err += [_EMC_EACCES, _EMC_EACCES]
        if verbose:
            out += ["NVPM VERB: Config file: /etc/nvpmodel.conf",
                    "NVPM VERB: parsing done for /etc/nvpmodel.conf",
                    f"NVPM VERB: Current mode: NV Power Mode: {name}", str(self.mode_id)]
            for param, arg, value in (mode.settings if mode is not None else ()):
                conf_val = str(NO_CAP_ECHO) if value == "-1" else value
                path = self.config.params.get(param)
                where = path.args.get(arg, "") if path is not None else ""
                out.append(f"NVPM VERB: PARAM {param}: ARG {arg}: PATH {where}: "
                           f"REAL_VAL: {conf_val} CONF_VAL: {conf_val}")
        else:
            out += [f"NV Power Mode: {name}", str(self.mode_id)]
        return _text(out), _text(err), 0

    def _parse_dump(self) -> str:
        out = ["NVPM VERB: Config file: /etc/nvpmodel.conf",
               "NVPM VERB: parsing done for /etc/nvpmodel.conf"]
        default = self.config.default
        if default is not None:
            out.append(f"NVPM VERB: PM_CONFIG: DEFAULT={default.name}({default.id})")
        for mode in self.config.modes:
            out.append(f"NVPM VERB: POWER_MODEL: ID={mode.id} NAME={mode.name}")
            for param, arg, value in mode.settings:
                out.append(f"NVPM VERB: {param} {arg} "
                           f"{NO_CAP_ECHO if value == '-1' else value}")
        return _text(out)

    def _switch(self, target: str, stdin: str) -> tuple[str, str, int]:
        ident = parse_int(target, lo=0)
        mode = self.config.by_id(ident) if ident is not None else None
        if mode is None:
            # The real wording is not verified; nvpmodel does refuse an id its conf lacks.
            return "", f"NVPM ERROR: Invalid power mode: {target}\n", 255
        if not self.as_root:
            return "", _text([
                "NVPM ERROR: Error opening /sys/devices/system/cpu/cpu0/online: 13",
                "NVPM ERROR: failed to set power mode!"]), 255
        if self.ignore_set or mode.id == self.mode_id:
            return "", "", 0
        if self._needs_reboot(mode):
            prompt = ["NVPM WARN: Golden image context is already created",
                      f"NVPM WARN: Reboot required for changing to this power mode: {mode.id}",
                      "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:"]
            if stdin.strip() in ("YES", "yes"):
                self.mode_id = mode.id
                self._write_status()
                self._write_emc_cap()
                self.reboot_requested = True
                return _text([*prompt, "NVPM WARN: rebooting"]), "", 0
            # Declined (or end-of-file): nvpmodel cancels and still exits 0.
            return _text(prompt), _text(["NVPM ERROR: bad input!",
                                         "NVPM ERROR: optMask is 1, no request for power mode"]), 0
        self.mode_id = mode.id
        self.pinned = False  # a mode switch resets the clock limits jetson_clocks pinned
        self._write_status()
        self._write_emc_cap()
        return "", "", 0

    def _needs_reboot(self, target: PowerMode) -> bool:
        # Compared on the raw conf lines, independently of edgert's own reboot analysis.
        def knobs(mode: PowerMode | None) -> dict[tuple[str, str], str]:
            return {} if mode is None else {
                (p, a): v for p, a, v in mode.settings
                if p == "CPU_ONLINE" or a.endswith("_PG_MASK")}

        now, then = knobs(self.mode), knobs(target)
        return any(now.get(key) != value for key, value in then.items())

    # -- jetson_clocks --------------------------------------------------------------------
    def _jetson_clocks(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        if not self.as_root:
            return _JC_ROOT + "\n", "", 1
        if args[:1] == ["--show"]:
            return self._show(), "", 0
        if args[:1] == ["--store"]:
            path = Path(args[1]) if len(args) > 1 else Path.home() / "l4t_dfs.conf"
            if path.exists() and stdin.strip().lower() not in ("y", "yes"):
                # The prompt's wording is not verified; declining keeps the old file.
                return f"File {path} already exists. Overwrite? [y/N]\n", "", 0
            path.write_text(_text(self._store_lines()))
            return "", "", 0
        if args[:1] == ["--restore"]:
            path = Path(args[1]) if len(args) > 1 else Path.home() / "l4t_dfs.conf"
            if not path.is_file():
                # Wording not verified.
                return "", f"Error: {path} file not found\n", 1
            self.pinned = False
            return "", "", 0
        if args in ([], ["--fan"]):
            self.pinned = True
            return "", "", 0
        return "", f"Unknown option {' '.join(args)}\n", 1

    def _online(self) -> list[int]:
        mode = self.mode
        if mode is None or mode.online_cores is None:
            return list(range(self.cores))
        return sorted(mode.online_cores)

    def _show(self) -> str:
        mode = self.mode
        cpu_max = mode.cpu_max_freq_khz if mode is not None else None
        gpu_max = mode.gpu_max_freq_hz if mode is not None else None
        return clocks_show_text(
            dialect=self.clocks_dialect, machine=self.machine, cores=self.cores,
            online=self._online(), pinned=self.pinned,
            power_mode=mode.name if mode is not None else f"MODE_{self.mode_id}",
            cpu_max_khz=cpu_max or 2201600, gpu_max_hz=gpu_max or 1300500000,
            emc_cap_hz=(mode.emc_max_freq_hz or 0) if mode is not None else 0,
        )

    def _store_lines(self) -> list[str]:
        lines = []
        for n in self._online():
            base = f"/sys/devices/system/cpu/cpu{n}/cpufreq"
            lines += [f"{base}/scaling_min_freq:729600", f"{base}/scaling_max_freq:1728000"]
        gpu = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
        lines += [f"{gpu}/min_freq:306000000", f"{gpu}/max_freq:624750000",
                  "/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked:0"]
        return lines


def _text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)
