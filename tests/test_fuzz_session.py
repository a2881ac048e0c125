"""Fuzz the feeds of an InferenceSession on the bundled model (host device, ONNX Runtime).

Contract (tests/_fuzz.py): an EdgeRTError with a message, or the correct actions (what
``policy_reference`` computes from the same observations in float32); never a hang, a foreign
exception or a crash. The session must also stay usable after any rejected feed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _fuzz import FUZZ, outcome
from hypothesis import given
from hypothesis import strategies as st

from edgert.engine import Engine
from edgert.errors import EdgeRTError
from edgert.models import ACTION_DIM, OBS_DIM, bundled_model_path, policy_reference
from edgert.session import InferenceSession

DTYPES = ["float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool",
          "complex64"]
SHAPES = st.one_of(
    st.tuples(st.sampled_from([0, 1, 2, 3, 257]), st.sampled_from([OBS_DIM, 47, 49, 0, 1])),
    st.sampled_from([(OBS_DIM,), (), (1, 1, OBS_DIM), (2, OBS_DIM, 1)]),
)
VALUES = st.sampled_from(["normal", "zeros", "nan", "inf", "huge"])
LAYOUT = st.sampled_from(["c", "fortran", "strided", "readonly"])


def _array(dtype: str, shape: tuple[int, ...], values: str, layout: str, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape if layout != "strided" else (*shape[:-1], shape[-1] * 2)
                               if shape else shape)
    if values == "zeros":
        base = np.zeros_like(base)
    elif values == "nan" and base.size:
        base.flat[0] = np.nan
    elif values == "inf" and base.size:
        base.flat[-1] = np.inf
    elif values == "huge":
        base = base * 1e300
    with np.errstate(all="ignore"):
        arr = base.astype(dtype)
    if layout == "strided" and shape:
        arr = arr[..., ::2]
    elif layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "readonly":
        arr.flags.writeable = False
    return arr


ARRAYS = st.builds(_array, st.sampled_from(DTYPES), SHAPES, VALUES, LAYOUT,
                   st.integers(0, 2**16))
# Feeds the model can take (any batch in its profile, any layout, NaN/inf included), in float32
# or in another dtype that cast=True converts: half of all feeds, so answers get checked.
GOOD = st.builds(_array, st.sampled_from(["float32", "float32", "float64", "int32", "float16"]),
                 st.tuples(st.integers(1, 256), st.just(OBS_DIM)), VALUES, LAYOUT,
                 st.integers(0, 2**16))
FEEDS = st.one_of(
    GOOD, GOOD.map(lambda a: {"obs": a}), GOOD, GOOD.map(lambda a: {"obs": a}),
    GOOD, GOOD.map(lambda a: {"obs": a}), GOOD, GOOD.map(lambda a: {"obs": a}),
    ARRAYS,
    ARRAYS.map(lambda a: {"obs": a}),
    st.tuples(ARRAYS, ARRAYS).map(lambda p: {"obs": p[0], "extra": p[1]}),
    ARRAYS.map(lambda a: {"wrong": a}),
    ARRAYS.map(lambda a: a.tolist()),
    ARRAYS.map(lambda a: {"obs": a.tolist()}),
    st.sampled_from([None, "obs", 3, 2.5, {}, {"obs": None}, {"obs": "text"}, b"\0" * 192,
                     {1: np.zeros((1, OBS_DIM), np.float32)}, [[0.0] * OBS_DIM],
                     {"obs": np.zeros((1, OBS_DIM), np.float32).data}]),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(bundled_model_path()) as eng:
        yield eng


def _observations(feed: Any) -> np.ndarray | None:
    """The float32 observations a feed stands for, or None if it stands for none."""
    value = feed.get("obs") if isinstance(feed, dict) else feed
    try:
        with np.errstate(all="ignore"):
            obs = np.asarray(value)
            if obs.dtype.kind not in "biuf":
                return None
            return obs.astype(np.float32)
    except (TypeError, ValueError):
        return None


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@FUZZ
@given(feed=FEEDS, io=st.sampled_from(["copy", "zero_copy"]), slots=st.integers(1, 3),
       outputs=st.sampled_from(["view", "copy"]), cast=st.booleans())
def test_session_feed_contract(engine: Engine, *, feed: Any, io: str, slots: int, outputs: str,
                               cast: bool) -> None:
    with InferenceSession(engine, io=io, slots=slots, outputs=outputs, cast=cast) as session:
        result = outcome(lambda: session.infer(feed))
        if not isinstance(result, EdgeRTError):
            obs = _observations(feed)
            assert obs is not None, f"the session answered a feed without observations: {feed!r}"
            actions = np.asarray(result["actions"])
            assert actions.size == obs.size // OBS_DIM * ACTION_DIM
            with np.errstate(all="ignore"):
                want = policy_reference(obs.reshape(-1, OBS_DIM))
            np.testing.assert_allclose(actions.reshape(-1, ACTION_DIM), want, rtol=1e-5,
                                       atol=1e-6, equal_nan=True)
        # Whatever happened, the session still answers a good request correctly.
        good = np.random.default_rng(1).standard_normal((2, OBS_DIM)).astype(np.float32)
        again = outcome(lambda: session.infer({"obs": good}))
        assert not isinstance(again, EdgeRTError), again
        np.testing.assert_allclose(again["actions"], policy_reference(good), rtol=1e-5,
                                   atol=1e-6)
