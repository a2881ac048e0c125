"""LatencyStats: exact running figures, windowed percentiles against numpy, no allocation."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.errors import InvalidArgumentError
from edgert.stats import LatencyStats

values_st = st.lists(st.integers(min_value=-(10**12), max_value=10**12), min_size=1,
                     max_size=400)
thresholds_st = st.lists(st.integers(min_value=-(10**12), max_value=10**12), max_size=4)


@settings(max_examples=150, deadline=None)
@given(values=values_st, capacity=st.integers(min_value=1, max_value=500),
       thresholds=thresholds_st)
def test_figures_match_numpy(values: list[int], capacity: int, thresholds: list[int]) -> None:
    stats = LatencyStats(capacity, thresholds_ns=thresholds)
    for v in values:
        stats.record(v)
    s = stats.summary()
    everything = np.asarray(values, dtype=np.int64)
    window = everything[-capacity:]
    # Exact over all samples, even after the ring wrapped.
    assert s.count == len(values)
    assert s.sum_ns == sum(values)
    assert s.min_ns == min(values)
    assert s.max_ns == max(values)
    assert s.mean_ns == pytest.approx(sum(values) / len(values))
    for t in sorted(set(thresholds)):
        assert s.over(t) == sum(v > t for v in values)
        assert stats.count_over(t) == sum(v > t for v in values)
    # Percentiles over the retained window, numpy's linear method.
    assert s.retained == len(window)
    assert s.wrapped == (len(values) > capacity)
    expected = np.percentile(window, [50, 90, 99, 99.9], method="linear")
    got = [s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns]
    assert got == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-6)
    assert stats.percentile(37.5) == pytest.approx(
        float(np.percentile(window, 37.5, method="linear")), rel=1e-12, abs=1e-6)
    np.testing.assert_array_equal(stats.samples(), window)


@settings(max_examples=60, deadline=None)
@given(values=values_st, capacity=st.integers(min_value=1, max_value=300),
       thresholds=thresholds_st, split=st.integers(min_value=0, max_value=400))
def test_record_many_and_merge_equal_recording_one_by_one(
    values: list[int], capacity: int, thresholds: list[int], split: int
) -> None:
    one = LatencyStats(capacity, thresholds_ns=thresholds)
    for v in values:
        one.record(v)
    bulk = LatencyStats(capacity, thresholds_ns=thresholds)
    bulk.record_many(np.asarray(values[:split], dtype=np.int64))
    bulk.record_many(values[split:])
    a = LatencyStats(capacity, thresholds_ns=thresholds)
    b = LatencyStats(capacity, thresholds_ns=thresholds)
    for v in values[:split]:
        a.record(v)
    for v in values[split:]:
        b.record(v)
    a.merge(b)
    for other in (bulk, a):
        assert other.summary() == one.summary()
        np.testing.assert_array_equal(other.samples(), one.samples())


def test_record_does_not_allocate() -> None:
    stats = LatencyStats(4096, thresholds_ns=[1_000, 1_000_000])
    values = [5, 999_999, 2_000_000_000, 123_456_789]  # below, between and above thresholds
    for v in values * 2000:  # wrap the ring and warm every code path first
        stats.record(v)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(5000):
            for v in values:
                stats.record(v)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20 000 samples: anything per sample would show as tens of KiB.
    assert after - before < 512
    assert peak - before < 4096
    assert stats.count == 28_000


def test_window_and_all_sample_figures_differ_after_wrap() -> None:
    stats = LatencyStats(4, thresholds_ns=[100])
    for v in (1000, 1, 2, 3, 4):
        stats.record(v)
    s = stats.summary()
    assert s.max_ns == 1000  # all samples
    assert s.p999_ns is not None
    assert s.p999_ns < 5
    assert s.over(100) == 1  # configured threshold: exact over all samples
    assert stats.count_over(100) == 1
    assert stats.count_over(2) == 2  # not configured: counted over the window (3, 4)
    assert stats.samples().tolist() == [1, 2, 3, 4]


def test_histogram_half_open_bins_with_under_and_overflow() -> None:
    stats = LatencyStats(100)
    stats.record_many([0, 999, 1000, 1500, 2999, 3000, -5])
    h = stats.histogram(bin_ns=1000, range_ns=(0, 3000))
    assert h.edges_ns == (0, 1000, 2000, 3000)
    assert h.counts == (2, 2, 1)
    assert (h.below, h.above) == (1, 1)
    default = stats.histogram(bin_ns=1000)
    assert sum(default.counts) == 7
    assert default.below == default.above == 0
    custom = stats.histogram(edges_ns=[0, 10, 5000])
    assert custom.counts == (1, 5)
    assert custom.below == 1
    json.dumps(h.to_dict())
    with pytest.raises(InvalidArgumentError):
        stats.histogram(edges_ns=[5, 5])
    with pytest.raises(InvalidArgumentError):
        stats.histogram(bin_ns=0)


def test_empty_summary_is_none_and_reset_forgets() -> None:
    stats = LatencyStats(8, thresholds_ns=[10])
    s = stats.summary()
    assert s.count == 0
    assert s.min_ns is None
    assert s.p99_ns is None
    assert s.p99_us is None
    assert stats.percentile(50) is None
    stats.record_many([5, 50, 500])
    assert stats.summary().over(10) == 2
    stats.reset()
    assert stats.summary() == s
    assert stats.samples().size == 0


def test_units_json_and_repr() -> None:
    stats = LatencyStats(16, thresholds_ns=[2_000])
    stats.record_many([1_000, 3_000])
    s = stats.summary()
    assert s.min_us == 1.0
    assert s.max_us == 3.0
    assert s.mean_us == 2.0
    assert s.p50_us == 2.0
    d = json.loads(stats.to_json())
    assert d["counts_over"] == {"2000": 1}
    assert d["thresholds_ns"] == [2000]
    assert json.loads(s.to_json())["p50_ns"] == 2000.0
    assert "count=2" in repr(stats)


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        LatencyStats(0)
    with pytest.raises(InvalidArgumentError):
        LatencyStats(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        LatencyStats(4, thresholds_ns=[1.5])  # type: ignore[list-item]
    stats = LatencyStats(4)
    with pytest.raises(ValueError):
        stats.record(2**63)
    assert stats.count == 0  # a rejected sample leaves no trace
    with pytest.raises(InvalidArgumentError):
        stats.record_many([[1, 2]])
    with pytest.raises(InvalidArgumentError):
        stats.record_many([1.5])
    with pytest.raises(InvalidArgumentError):
        stats.percentile(101)
    with pytest.raises(InvalidArgumentError):
        stats.merge(LatencyStats(4, thresholds_ns=[1]))
    with pytest.raises(InvalidArgumentError):
        stats.summary().over(7)


def test_histogram_range_not_a_multiple_of_the_bin_clips_the_last_edge() -> None:
    # The last edge used to be rounded up past `high` (3000 for (0, 2500)), counting 2700 and
    # 2900 inside instead of in `above`.
    stats = LatencyStats(16)
    for v in (500, 1500, 2499, 2500, 2700, 2900):
        stats.record(v)
    h = stats.histogram(bin_ns=1000, range_ns=(0, 2500))
    assert h.edges_ns == (0, 1000, 2000, 2500)  # the last bin is narrower
    assert h.counts == (1, 1, 1)
    assert (h.below, h.above) == (0, 3)  # 2500 itself is at the upper edge: above
    assert sum(h.counts) + h.below + h.above == stats.retained
