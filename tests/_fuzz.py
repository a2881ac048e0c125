"""Shared pieces of the fuzz suites (tests/test_fuzz_*.py): the watchdog and the contract.

The contract for hostile input: an ``EdgeRTError`` with a message, or a correct answer; never a
hang, a foreign exception or a crash. :func:`outcome` runs each example in a watched thread: one
that is still running after ``EDGERT_FUZZ_LIMIT_S`` seconds fails the test with the stack it is
stuck in (the thread is a daemon, so the test process still ends). A crash of the interpreter
is reported by pytest's faulthandler.

Budget: ``EDGERT_FUZZ_EXAMPLES`` (default 250 per property) scales every suite. Examples are
derandomized so CI runs the same cases each time; ``EDGERT_FUZZ_SEED=1`` explores fresh ones.
Failing examples are reported as found, not shrunk (shrinking a hang would rerun it for
minutes); ``EDGERT_FUZZ_SHRINK=1`` turns shrinking on.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings

from edgert.errors import EdgeRTError

T = TypeVar("T")

EXAMPLES = int(os.environ.get("EDGERT_FUZZ_EXAMPLES", "250"))
#: Seconds one example may take before it counts as a hang.
LIMIT_S = float(os.environ.get("EDGERT_FUZZ_LIMIT_S", "10"))
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("EDGERT_FUZZ_SHRINK"):
    _PHASES.append(Phase.shrink)

FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("EDGERT_FUZZ_SEED"),
    database=None, phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


def watched(fn: Callable[[], T], limit_s: float = LIMIT_S,
            fifo: Path | None = None) -> tuple[bool, T | BaseException]:
    """Run ``fn`` on a watched thread: (True, result) or (False, the exception it raised).

    A call still running after ``limit_s`` fails the test with the stack it is blocked in; if
    it is stuck opening ``fifo``, the FIFO's other end is opened first so the thread can end.
    """
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as err:  # handed back to the test's thread
            box.append((False, err))

    worker = threading.Thread(target=run, name="watched-call", daemon=True)
    worker.start()
    worker.join(limit_s)
    if worker.is_alive():
        frame = sys._current_frames().get(worker.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(unknown)"
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck open return
            worker.join(limit_s)
        pytest.fail(f"hang: the call did not return within {limit_s} s; it is blocked in\n"
                    f"{stack}")
    return box[0]  # type: ignore[no-any-return]


def finishes(fn: Callable[[], T], fifo: Path | None = None,
             limit_s: float = LIMIT_S) -> T | BaseException:
    """``fn()``'s result or the exception it raised, whatever its type; a hang fails the test."""
    return watched(fn, limit_s, fifo)[1]


def outcome(fn: Callable[[], T], limit_s: float = LIMIT_S) -> T | EdgeRTError:
    """``fn()``'s result, or the EdgeRTError it raised (checked to carry a message).

    Any other exception propagates and fails the property; a call that does not return within
    ``limit_s`` fails the test with the stack it is blocked in.
    """
    ok, value = watched(fn, limit_s)
    if ok:
        return value  # type: ignore[no-any-return]
    if not isinstance(value, EdgeRTError):
        raise value
    assert value.message.strip(), f"{type(value).__name__} without a message"
    assert str(value).strip()
    return value
