"""An interrupt landing anywhere inside a session call leaves the session right and usable.

Ctrl-C in a control node raises ``KeyboardInterrupt`` from Python's signal handler, which the
interpreter runs as a function starts and right after a call returns. A trial that raised from a
SIGALRM handler inside ``infer`` found that afterwards a batch-5 request returned one row (a
reshape stopped midway was trusted), and that the session could be left "used by another
thread" for good, ``close()`` included (the use lock taken just before the interrupt).

Here the interrupt is raised deterministically from a profile function at every such point of
one call (each function start and each return from a C call), one point per run, and the
session is then checked: every later answer right, and ``close()`` working.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

import numpy as np
import pytest

from edgert.engine import Engine
from edgert.models import ACTION_DIM, OBS_DIM, bundled_model_path, policy_reference
from edgert.session import InferenceSession

_EVENTS = ("call", "c_return")

# An interrupt raised inside a weakref callback or finalizer (a pool's bell, a lease's finalize)
# cannot propagate: Python reports it as unraisable and goes on. That is the interpreter's rule,
# and the session must still be right afterwards, which is what is checked here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _obs(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, OBS_DIM), dtype=np.float32)


def _points(run: Callable[[], Any]) -> int:
    """How many places inside ``run`` an interrupt could land."""
    count = 0

    def counter(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal count
        if event in _EVENTS:
            count += 1

    sys.setprofile(counter)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def _interrupted(run: Callable[[], Any], point: int) -> None:
    """Run ``run`` with a KeyboardInterrupt raised at its ``point``-th place."""
    seen = 0

    def trip(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal seen
        if event in _EVENTS:
            seen += 1
            if seen > point:
                sys.setprofile(None)
                raise KeyboardInterrupt

    sys.setprofile(trip)
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize(("options", "call"), [
    ({}, "infer"),                                      # the defaults: two slots, owned copies
    ({"slots": 1, "outputs": "view"}, "infer"),
    ({"slots": 2, "io": "copy", "timing": "stages"}, "submit"),
])
def test_an_interrupt_anywhere_in_a_call_leaves_the_session_right(
        options: dict[str, Any], call: str) -> None:
    before, during = _obs(1, 1), _obs(5, 2)  # the interrupted request changes the batch

    def request(s: InferenceSession, x: np.ndarray) -> np.ndarray:
        if call == "submit":
            return np.array(s.submit({"obs": x}).result()["actions"])
        return np.array(s.infer({"obs": x})["actions"])

    with warnings.catch_warnings(), Engine.load(bundled_model_path()) as engine:
        warnings.simplefilter("ignore", ResourceWarning)
        with InferenceSession(engine, **options) as s:
            request(s, before)
            points = _points(lambda: request(s, during))
        assert points > 50
        wrong = []
        for point in range(points):
            s = InferenceSession(engine, **options)
            request(s, before)
            _interrupted(lambda s=s: request(s, during), point)  # type: ignore[misc]
            for x in (during, during, before, during, before):
                y = request(s, x)
                if y.shape != (len(x), ACTION_DIM) or not np.allclose(
                        y, policy_reference(x), rtol=1e-4, atol=1e-5):
                    wrong.append((point, len(x), y.shape))
            s.close()  # never "used by another thread"
        assert wrong == [], f"{len(wrong)} wrong answers after interrupts, first {wrong[:3]}"
