"""Session building blocks without a device: options, input checks, the graph cache."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from edgert._executable import ProfileShape, TensorMode, TensorSpec
from edgert.errors import InputError, InvalidArgumentError
from edgert.session import GraphMode, IoMode, SessionOptions, SyncMode, TimingMode
from edgert.session._graphs import GraphCache
from edgert.session._validate import check_dtype, check_names, check_shape, external_array


def test_options_parse_and_resolve_strings() -> None:
    o = SessionOptions(io="zero_copy", cuda_graph=False, sync="spin", timing="off", slots=4)
    assert o.io is IoMode.ZERO_COPY
    assert o.cuda_graph is GraphMode.OFF
    assert o.sync is SyncMode.SPIN
    assert o.timing is TimingMode.OFF
    assert SessionOptions(cuda_graph=True).cuda_graph is GraphMode.ON


@pytest.mark.parametrize("kwargs", [
    {"io": "dma"}, {"slots": 0}, {"slots": 65}, {"slots": True}, {"cuda_graph": "maybe"},
    {"sync": "yield"}, {"outputs": "torch"}, {"when_busy": "drop"}, {"timing": "all"},
    {"max_graphs": 0}, {"stats_capacity": 0}, {"profile": -1}, {"cast": "yes"},
    {"contiguous": "maybe"},
])
def test_options_reject_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        SessionOptions(**kwargs)


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SessionOptions().slots = 3  # type: ignore[misc]


_SPEC = TensorSpec(name="obs", mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                   shape=(-1, 48), profiles=(ProfileShape((1, 48), (1, 48), (256, 48)),))


def test_check_shape_against_profile() -> None:
    check_shape(_SPEC, (1, 48), 0)
    check_shape(_SPEC, (256, 48), 0)
    with pytest.raises(InputError, match="rank"):
        check_shape(_SPEC, (48,), 0)
    with pytest.raises(InputError, match="dimension 1 must be 48"):
        check_shape(_SPEC, (1, 47), 0)
    with pytest.raises(InputError, match="outside optimization profile 0"):
        check_shape(_SPEC, (257, 48), 0)
    with pytest.raises(InputError, match="outside"):
        check_shape(_SPEC, (0, 48), 0)


def test_a_rank_error_says_which_way_to_reshape() -> None:
    # A new user's trial: a 0-d input given as (1,) was told "e.g. x[None]", which adds one.
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (48,), 0)
    assert "x[None]" in str(info.value.hint)
    scalar = TensorSpec(name="sr", mode="input", dtype=np.int64, shape=(), location="host")
    with pytest.raises(InputError) as info:
        check_shape(scalar, (1,), 0)
    assert "x.reshape(())" in str(info.value.hint)
    assert "x[None]" not in str(info.value.hint)
    # a trial: rank 3 for rank 2 was told "x.reshape(()) for a scalar"
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (1, 2, 48), 0)
    assert info.value.hint == ("drop a dimension: x[0] for the first along the leading one, or "
                               "x.reshape(-1, 48)")
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (2, 2, 2, 48), 0)
    assert info.value.hint == "reshape it: x.reshape(-1, 48)"
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (1, 2, 47), 0)  # no reshape gives (-1, 48)
    assert "x.reshape" not in str(info.value.hint)


def test_a_shape_outside_the_profile_is_told_which_way() -> None:
    # a trial: an empty batch was told to split the request into smaller batches
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (0, 48), 0)
    assert "empty request" in str(info.value.hint)
    with pytest.raises(InputError) as info:
        check_shape(_SPEC, (257, 48), 0)
    assert "smaller batches" in str(info.value.hint)
    low = TensorSpec(name="x", mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                     shape=(-1, 48), profiles=(ProfileShape((4, 48), (8, 48), (16, 48)),))
    with pytest.raises(InputError) as info:
        check_shape(low, (2, 48), 0)
    assert "pad the request up to the profile's minimum" in str(info.value.hint)
    # a review: 0 inside the profile, the other dimension over it; and under and over at once
    zero_ok = TensorSpec(name="x", mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                         shape=(-1, -1), profiles=(ProfileShape((0, 1), (4, 8), (8, 8)),))
    with pytest.raises(InputError) as info:
        check_shape(zero_ok, (0, 9), 0)
    assert "empty" not in str(info.value.hint)
    assert "smaller batches" in str(info.value.hint)
    both = TensorSpec(name="x", mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                      shape=(-1, -1), profiles=(ProfileShape((2, 2), (4, 8), (8, 8)),))
    with pytest.raises(InputError) as info:
        check_shape(both, (1, 9), 0)
    assert "smaller batches" in str(info.value.hint)
    assert "pad the request" in str(info.value.hint)


def test_check_dtype_and_cast() -> None:
    assert check_dtype(_SPEC, np.dtype(np.float32), cast=False) is False
    with pytest.raises(InputError, match="float64") as info:
        check_dtype(_SPEC, np.dtype(np.float64), cast=False)
    assert "cast=True" in str(info.value)
    assert check_dtype(_SPEC, np.dtype(np.float64), cast=True) is True
    with pytest.raises(InputError, match="same_kind"):
        check_dtype(_SPEC, np.dtype(np.complex64), cast=True)
    # cast=True is suggested only where it would convert (found by a new user's trial)
    with pytest.raises(InputError) as info:
        check_dtype(_SPEC, np.dtype(np.complex64), cast=False)
    assert info.value.hint is not None
    assert "not even with cast=True" in info.value.hint


@pytest.mark.parametrize(("value", "source", "target"), [
    (2**63 + 5, np.uint64, np.int64),  # wrapped to a negative number, found by a new user
    (-(2**40), np.int64, np.int32),
    (300, np.int16, np.int8),
    (70000.0, np.float32, np.float16),  # became inf
    (1e40, np.float64, np.float32),  # became inf, the model answered NaN
])
def test_cast_refuses_values_that_do_not_fit(value: float, source: Any, target: Any) -> None:
    from edgert.session._validate import cast_input

    spec = TensorSpec(name="x", mode="input", dtype=target, shape=(-1,), location="host")
    fits = np.array([1, 2], dtype=source)
    np.testing.assert_array_equal(cast_input(spec, fits), fits.astype(target))
    with pytest.raises(InputError, match="does not fit") as info:
        cast_input(spec, np.array([1, value], dtype=source))
    assert str(value) in str(info.value) or repr(float(value)) in str(info.value)


def test_cast_keeps_rounding_infinities_and_nans() -> None:
    from edgert.session._validate import cast_input

    spec = TensorSpec(name="x", mode="input", dtype=np.float32, shape=(-1,), location="host")
    x = np.array([0.1, np.inf, -np.inf, np.nan], np.float64)
    np.testing.assert_array_equal(cast_input(spec, x), x.astype(np.float32))


def test_check_names() -> None:
    check_names({"a": 1, "b": 2}, ("a", "b"))
    with pytest.raises(InputError, match=r"missing input\(s\) 'b'"):
        check_names({"a": 1}, ("a", "b"))
    with pytest.raises(InputError, match=r"unknown input\(s\) 'c'"):
        check_names({"a": 1, "b": 2, "c": 3}, ("a", "b"))


class _FakeDeviceArray:
    def __init__(self, strides: tuple[int, ...] | None, typestr: str = "<f4",
                 stream: int | None = None) -> None:
        self.__cuda_array_interface__ = {"shape": (2, 48), "typestr": typestr,
                                         "data": (0x1000, False), "strides": strides,
                                         "version": 3, "stream": stream}


def test_external_array_from_cuda_interface() -> None:
    ext = external_array("obs", _FakeDeviceArray(None, stream=7), 0)
    assert ext is not None
    assert ext.device_ptr == 0x1000
    assert ext.host_ptr is None
    assert ext.shape == (2, 48)
    assert ext.dtype == np.float32
    assert ext.stream == 7
    contiguous = external_array("obs", _FakeDeviceArray((192, 4)), 0)
    assert contiguous is not None
    with pytest.raises(InputError, match="contiguous"):
        external_array("obs", _FakeDeviceArray((4, 8)), 0)


def test_host_dlpack_is_not_a_device_array() -> None:
    assert external_array("obs", np.zeros((2, 48), np.float32), 0) is None


class _Graph:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_graph_cache_rules(caplog: pytest.LogCaptureFixture) -> None:
    cache = GraphCache(slots=2, max_graphs=2)
    sig_a, sig_b, sig_c = ((1, 48),), ((2, 48),), ((3, 48),)
    assert not cache.should_capture(sig_a, sig_a)  # never before a plain run
    cache.ran_plainly(sig_a)
    assert cache.should_capture(sig_a, sig_a)
    assert cache.should_capture((sig_a, (0x10,)), sig_a)  # same shapes, caller buffers
    graphs = [_Graph() for _ in range(3)]
    cache.put(0, sig_a, graphs[0])
    cache.put(0, sig_b, graphs[1])
    assert cache.get(0, sig_a) is graphs[0]
    assert cache.get(1, sig_a) is None  # per slot
    cache.put(0, sig_c, graphs[2])  # evicts the oldest
    assert graphs[0].closed
    assert cache.get(0, sig_a) is None
    assert cache.count() == 2
    assert cache.captures == 3
    caplog.set_level(logging.DEBUG, logger="edgert.session")
    cache.ran_plainly(sig_b)
    cache.failed(sig_b, RuntimeError("nope"))
    cache.failed(sig_c, RuntimeError("again"))
    assert not cache.should_capture(sig_b, sig_b)
    logged = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.DEBUG
    cache.drop_slot(0)
    assert graphs[1].closed
    assert graphs[2].closed
    assert cache.count(0) == 0
    cache.close()
    assert not cache.should_capture(sig_a, sig_a)


def test_only_the_runners_write_a_slots_state() -> None:
    # One layer owns a request's state (issue 14): the session, its requests and the swap read
    # slots; Runner.request/fail/disown and the runners' finish write them.
    import ast
    from pathlib import Path

    import edgert.session as pkg

    root = Path(pkg.__file__).parent
    writes = []
    for name in ("_session.py", "_pending.py", "_swap.py", "_model_group.py", "_resources.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id == "slot":
                    writes.append(f"{name}:{node.lineno} slot.{target.attr}")
    assert writes == []
