"""Running external tools (nvpmodel, jetson_clocks) behind a small, injectable seam.

Every class that runs a command takes a :class:`CommandRunner`: any callable shaped like
``runner(argv, *, stdin=None, timeout=None)`` that returns an object with ``returncode``,
``stdout`` and ``stderr``. Tests pass :class:`edgert.testing.jetson.FakeCommandRunner`; production
code uses :class:`SubprocessRunner`.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edgert.errors import (
    CommandError,
    CommandTimeoutError,
    EdgeRTError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
)

__all__ = ["CommandOutput", "CommandResult", "CommandRunner", "SubprocessRunner", "run_command"]

# What a command gets after it is killed on timeout to flush its pipes; a grandchild that left the
# process group could otherwise hold them open forever.
_REAP_TIMEOUT_S = 2.0


@runtime_checkable
class CommandOutput(Protocol):
    """What a :class:`CommandRunner` returns: the exit status and both output streams as text."""

    @property
    def returncode(self) -> int:
        """The exit status; a negative one is the signal that killed the command."""
        ...

    @property
    def stdout(self) -> str:
        """Standard output, decoded."""
        ...

    @property
    def stderr(self) -> str:
        """Standard error, decoded."""
        ...


class CommandRunner(Protocol):
    """Runs one command to completion.

    A runner must raise :class:`~edgert.CommandTimeoutError` when ``timeout`` (seconds) passes and
    :class:`~edgert.NotSupportedError` (or :class:`FileNotFoundError`) when the program does not
    exist. ``stdin`` is the complete standard input; ``None`` means an empty one, never the
    caller's terminal, so an interactive prompt reads end-of-file instead of waiting for a person.
    """

    def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None
    ) -> CommandOutput:
        """Run ``argv`` with ``stdin`` as its whole input and wait at most ``timeout`` seconds."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandResult:
    """The outcome of one finished command.

    Attributes:
        argv: The command line that ran.
        returncode: Its exit status (negative: killed by that signal).
        stdout: Standard output, decoded as UTF-8 with replacement.
        stderr: Standard error, decoded the same way.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Standard output followed by standard error, the way a terminal would interleave them."""
        if self.stdout and self.stderr and not self.stdout.endswith("\n"):
            return f"{self.stdout}\n{self.stderr}"
        return self.stdout + self.stderr


@dataclass(frozen=True, kw_only=True, slots=True)
class SubprocessRunner:
    """The default :class:`CommandRunner`: runs the real program with a timeout.

    The program starts in its own session (process group), so a timeout kills it together with
    whatever it spawned (nvpmodel and jetson_clocks are shell-heavy), then reaps it. Standard
    input is always a pipe: a prompt sees exactly ``stdin`` and then end-of-file.

    Attributes:
        default_timeout_s: Used when a call passes no ``timeout``; ``None`` waits forever.
        env: Environment for the child; ``None`` inherits this process's. ``LC_ALL=C`` is always
            set so that output is parsed in one language.
    """

    default_timeout_s: float | None = 30.0
    env: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.default_timeout_s is not None and not self.default_timeout_s > 0:
            raise InvalidArgumentError(
                f"default_timeout_s must be positive or None, got {self.default_timeout_s!r}"
            )

    def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run ``argv`` and wait for it.

        Raises:
            InvalidArgumentError: ``argv`` is empty.
            NotSupportedError: The program does not exist.
            PermissionDeniedError: The program exists but may not be executed.
            CommandTimeoutError: It ran past ``timeout``; it and its process group were killed.
        """
        args = tuple(argv)
        if not args:
            raise InvalidArgumentError("cannot run an empty command line")
        limit = self.default_timeout_s if timeout is None else timeout
        env = dict(os.environ if self.env is None else self.env)
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as err:
            raise NotSupportedError(
                f"cannot run {args[0]}: no such program",
                hint=f"{os.path.basename(args[0])} ships with NVIDIA JetPack (L4T); on other "
                "machines use a fake runner (edgert.testing.jetson.FakeCommandRunner)",
            ) from err
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot run {args[0]}: {errno.errorcode.get(err.errno or 0, 'EACCES')}",
                hint="check the program's execute permission",
                errno_value=err.errno,
            ) from err
        data = (stdin or "").encode()
        try:
            out, err_out = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            try:
                _, late_err = proc.communicate(timeout=_REAP_TIMEOUT_S)
                stderr = late_err.decode(errors="replace")
            except subprocess.TimeoutExpired:
                stderr = ""  # a grandchild that left the group still holds the pipes
            raise CommandTimeoutError(
                f"{' '.join(args)} did not finish within {limit:g} s and was killed",
                argv=args,
                stderr=stderr,
                hint="the tool may be waiting for input or stuck on a driver; "
                "run it by hand to see what it prints",
            ) from exc
        except BaseException:
            _kill_group(proc)
            raise
        return CommandResult(
            argv=args,
            returncode=proc.returncode,
            stdout=out.decode(errors="replace"),
            stderr=err_out.decode(errors="replace"),
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()


def run_command(
    runner: CommandRunner,
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float | None = None,
) -> CommandResult:
    """Call ``runner`` and normalise what it returns and raises into edgert's terms.

    Raises:
        NotSupportedError: The program does not exist.
        PermissionDeniedError: It could not be executed.
        CommandTimeoutError: It did not finish in time.
        CommandError: The runner failed in another way.
    """
    args = tuple(argv)
    try:
        res = runner(args, stdin=stdin, timeout=timeout)
    except EdgeRTError:
        raise
    except FileNotFoundError as err:
        raise NotSupportedError(
            f"cannot run {args[0]}: no such program",
            hint=f"{os.path.basename(args[0])} ships with NVIDIA JetPack (L4T)",
        ) from err
    except PermissionError as err:
        raise PermissionDeniedError(
            f"cannot run {args[0]}: permission denied", errno_value=err.errno,
            hint="check the program's execute permission",
        ) from err
    except subprocess.TimeoutExpired as err:
        raise CommandTimeoutError(
            f"{' '.join(args)} did not finish within {timeout} s", argv=args,
            hint="the tool may be waiting for input or stuck on a driver",
        ) from err
    except OSError as err:
        raise CommandError(
            f"cannot run {' '.join(args)}: {err}", argv=args,
            hint="check that the program is installed and runnable",
        ) from err
    if isinstance(res, CommandResult):
        return res
    return CommandResult(
        argv=args,
        returncode=int(res.returncode),
        stdout=_text(res.stdout),
        stderr=_text(res.stderr),
    )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
