"""Size classes: properties that pools rely on, checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgert.errors import InvalidArgumentError
from edgert.memory import SizeClasses

SIZES = st.integers(min_value=0, max_value=1 << 34)
RULES = st.builds(
    SizeClasses,
    granularity_bytes=st.sampled_from([64, 256, 512, 4096]),
    linear_limit_bytes=st.sampled_from([4096, 8192, 65536]),
)


@given(RULES, SIZES)
def test_capacity_covers_the_request_with_bounded_waste(rule: SizeClasses, n: int) -> None:
    cap = rule.capacity_for(n)
    g = rule.granularity_bytes
    assert cap >= max(n, 1)
    assert cap % g == 0
    if n <= rule.linear_limit_bytes:
        assert cap - n < g or n == 0
    else:
        assert cap & (cap - 1) == 0  # a power of two
        assert cap < 2 * n


@given(RULES, SIZES, SIZES)
def test_capacity_is_monotonic(rule: SizeClasses, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert rule.capacity_for(lo) <= rule.capacity_for(hi)


@given(RULES, SIZES)
def test_a_class_serves_itself(rule: SizeClasses, n: int) -> None:
    cap = rule.capacity_for(n)
    assert rule.capacity_for(cap) == cap


@given(RULES, st.integers(min_value=0, max_value=1 << 26))
def test_classes_up_to_lists_every_class_once(rule: SizeClasses, n: int) -> None:
    classes = rule.classes_up_to(n)
    assert classes == sorted(set(classes))
    assert classes[-1] == rule.capacity_for(n)
    assert all(rule.capacity_for(c) == c for c in classes)
    # every request up to n lands on one of them
    for probe in {0, 1, n // 3, n // 2, n}:
        assert rule.capacity_for(probe) in classes


def test_default_rule_is_512_steps_then_powers_of_two() -> None:
    rule = SizeClasses()
    assert [rule.capacity_for(n) for n in (0, 1, 512, 513, 4000, 4096, 4097, 70_000)] == [
        512, 512, 512, 1024, 4096, 4096, 8192, 131072]
    assert rule.classes_up_to(16384) == [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 8192,
                                         16384]


@pytest.mark.parametrize("kwargs", [
    {"granularity_bytes": 500},
    {"granularity_bytes": 32},
    {"linear_limit_bytes": 256},
    {"granularity_bytes": True},
    {"linear_limit_bytes": 3000},
])
def test_invalid_rules_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgumentError):
        SizeClasses(**kwargs)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4096"])
def test_invalid_requests_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        SizeClasses().capacity_for(bad)  # type: ignore[arg-type]
