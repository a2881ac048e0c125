"""The one options path: an options object, keyword overrides, or both (edgert._options)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, get_type_hints

import pytest

from edgert import bench
from edgert._options import check_or_create_options
from edgert.bench import BenchOptions
from edgert.bench._options import BenchOverrides
from edgert.engine import Engine, LoadOptions
from edgert.engine._load_options import LoadOverrides
from edgert.errors import EngineLoadError, InvalidArgumentError
from edgert.memory import BufferPool, PoolOptions
from edgert.memory._pooltypes import PoolOverrides
from edgert.models import bundled_model_path
from edgert.session import (
    GraphMode,
    InferenceSession,
    IoMode,
    SessionOptions,
    SyncMode,
    TimingMode,
)
from edgert.session._options import SessionOverrides


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(bundled_model_path()) as eng:
        yield eng


def test_no_options_and_no_overrides_give_the_defaults() -> None:
    assert check_or_create_options(SessionOptions, None, {}, what="x") == SessionOptions()


def test_options_without_overrides_are_used_as_they_are() -> None:
    o = SessionOptions(slots=3)
    assert check_or_create_options(SessionOptions, o, {}, what="x") is o


def test_overrides_win_and_the_other_fields_are_kept() -> None:
    o = SessionOptions(slots=4, sync="spin", timing="off")
    r = check_or_create_options(SessionOptions, o, {"slots": 1, "io": "copy"}, what="x")
    assert (r.slots, r.io, r.sync, r.timing) == (1, IoMode.COPY, SyncMode.SPIN, TimingMode.OFF)
    assert o.slots == 4  # the caller's object is left alone


def test_overrides_are_validated_and_normalized() -> None:
    r = check_or_create_options(SessionOptions, None, {"cuda_graph": False}, what="x")
    assert r.cuda_graph is GraphMode.OFF
    with pytest.raises(InvalidArgumentError, match="slots must be an int"):
        check_or_create_options(SessionOptions, SessionOptions(), {"slots": "2"}, what="x")
    with pytest.raises(InvalidArgumentError, match="io must be one of"):
        check_or_create_options(SessionOptions, None, {"io": "fast"}, what="x")


def test_an_unknown_name_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_or_create_options(SessionOptions, None, {"slot": 2, "iox": "copy"},
                                what="InferenceSession")
    message = info.value.message
    assert "InferenceSession got unknown options iox, slot" in message
    for field in dataclasses.fields(SessionOptions):
        assert field.name in message


def test_options_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a SessionOptions or None, not "
                                                   "BenchOptions"):
        check_or_create_options(SessionOptions, BenchOptions(), {}, what="InferenceSession")
    with pytest.raises(InvalidArgumentError, match="not dict"):
        check_or_create_options(SessionOptions, {"slots": 1}, {}, what="InferenceSession")


@pytest.mark.parametrize("cls", [SessionOptions, BenchOptions])
def test_the_options_object_is_frozen(cls: Any) -> None:
    o = check_or_create_options(cls, None, {"slots": 2}, what="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.slots = 3


@pytest.mark.parametrize(("cls", "overrides"), [(SessionOptions, SessionOverrides),
                                                 (BenchOptions, BenchOverrides),
                                                 (LoadOptions, LoadOverrides),
                                                 (PoolOptions, PoolOverrides)])
def test_the_keyword_types_name_every_field(cls: Any, overrides: Any) -> None:
    # The TypedDict that types the keyword overrides must not drift from the dataclass.
    assert set(get_type_hints(overrides)) == {f.name for f in dataclasses.fields(cls)}


def test_a_session_takes_options_and_overrides(engine: Engine) -> None:
    o = SessionOptions(slots=3, timing="off")
    with InferenceSession(engine, o, slots=1, device="host") as s:
        assert (s.options.slots, s.options.timing) == (1, TimingMode.OFF)
    with InferenceSession(engine, options=o) as s:
        assert s.options.slots == 3
    with pytest.raises(InvalidArgumentError, match="unknown option slot;"):
        InferenceSession(engine, slot=1)  # type: ignore[call-arg]


def test_bench_run_takes_options_and_overrides() -> None:
    o = BenchOptions(rate_hz=1000, duration_s=0.2, warmup_s=0.05, rt=False, environment=False,
                     sample_interval_s=0.05, device="host")
    r = bench.run(None, o, batch=2)
    assert (r.options.batch, r.options.rate_hz) == (2, 1000.0)
    with pytest.raises(InvalidArgumentError, match=r"bench\.run got unknown option rate;"):
        bench.run(None, o, rate=10)  # type: ignore[call-arg]


def test_a_required_field_missing_everywhere_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"BufferPool\.for_host needs max_bytes"):
        BufferPool.for_host(device="host")


def test_pool_constructors_take_options_and_overrides() -> None:
    with BufferPool.for_host(PoolOptions(max_bytes=1 << 16), device="host",
                             lease_slack=2) as pool:
        assert (pool.options.max_bytes, pool.options.lease_slack) == (1 << 16, 2)
    with BufferPool.for_host(max_bytes=1 << 16, device="host") as pool:
        assert pool.options == PoolOptions(max_bytes=1 << 16)
    with pytest.raises(InvalidArgumentError, match="unknown option max_byte;"):
        BufferPool.for_host(device="host", max_byte=1)  # type: ignore[call-arg]


def test_engine_load_takes_options_and_overrides(engine: Engine) -> None:
    o = LoadOptions(runtime="onnxruntime", hmac_key=b"secret-key")
    assert "secret-key" not in repr(o)  # a key never lands in a log through the repr
    assert LoadOptions(plugins=["a.so"]).plugins == ("a.so",)
    with Engine.load(bundled_model_path(), LoadOptions(runtime="onnxruntime")) as eng:
        assert eng.flavour.value == "onnxruntime"
    with pytest.raises(EngineLoadError, match="larger"):
        Engine.load(bundled_model_path(), LoadOptions(), max_bytes=16)
    with pytest.raises(InvalidArgumentError, match="unknown option runtimes;"):
        Engine.load(bundled_model_path(), runtimes="auto")  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match="plugins must be a sequence"):
        Engine.load(bundled_model_path(), plugins="one.so")
