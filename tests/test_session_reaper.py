"""A leaked InferenceSession is released on the reaper thread (issue 12, defect 9)."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from edgert import _reaper
from edgert.engine import Engine
from edgert.models import OBS_DIM, bundled_model_path
from edgert.session import InferenceSession
from edgert.session import _resources as session_module


def test_a_leaked_session_is_released_on_the_reaper_not_on_the_collecting_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran_on: list[str] = []
    real = session_module.Resources.release

    def noting(self: session_module.Resources) -> None:
        ran_on.append(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(session_module.Resources, "release", noting)
    with Engine.load(bundled_model_path()) as engine:
        session = InferenceSession(engine, device="host")
        session.infer({"obs": np.zeros((1, OBS_DIM), np.float32)})
        cycle: dict[str, object] = {"session": session}
        cycle["self"] = cycle  # leaked in a reference cycle: only the GC finds it
        gone = weakref.ref(session)
        del session, cycle
        with pytest.warns(ResourceWarning, match="unclosed InferenceSession"):
            gc.collect()
        assert gone() is None
        assert _reaper.drain()
    assert ran_on == ["edgert-reaper"]


@pytest.mark.gpu
def test_a_leaked_gpu_session_is_released_on_the_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    ran_on: list[str] = []
    real = session_module.Resources.release

    def noting(self: session_module.Resources) -> None:
        ran_on.append(threading.current_thread().name)
        real(self)  # stream synchronize, event syncs, pool frees: all on the reaper

    monkeypatch.setattr(session_module.Resources, "release", noting)
    from edgert.kernels import KernelExecutable

    with KernelExecutable() as exe:  # the bundled policy as CUDA kernels: a device session
        session = InferenceSession(exe, device=0)
        session.infer({"obs": np.zeros((1, OBS_DIM), np.float32)})
        cycle: dict[str, object] = {"session": session}
        cycle["self"] = cycle
        del session, cycle
        with pytest.warns(ResourceWarning, match="unclosed InferenceSession"):
            gc.collect()
        assert _reaper.drain()
    assert ran_on == ["edgert-reaper"]


def test_an_inline_block_left_without_exit_stops_counting_when_its_frame_returns() -> None:
    """An interrupt can keep ``__exit__`` from running; the block must not stay in force on the
    thread (a counter did: every later leaked release then ran inline, on whichever thread, a
    real-time loop's included)."""
    def interrupted_close() -> bool:
        _reaper.inline().__enter__()  # as if KeyboardInterrupt landed before __exit__
        return _reaper._inside_inline()

    assert interrupted_close() is True
    assert _reaper._inside_inline() is False
    with _reaper.inline():
        assert _reaper._inside_inline() is True
    assert _reaper._inside_inline() is False


def test_a_release_that_raises_a_base_exception_does_not_kill_the_reaper() -> None:
    """Found in testing: a release re-raised a KeyboardInterrupt a request had recorded, the
    reaper thread died, and every later leak was released on the thread that dropped it."""
    import warnings

    _reaper.start()

    def interrupted() -> None:
        raise KeyboardInterrupt

    ran_on: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _reaper.reap(interrupted)
        _reaper.reap(lambda: ran_on.append(threading.current_thread().name))
        assert _reaper.drain()
    assert ran_on == ["edgert-reaper"]
