"""The snapshot types of :mod:`edgert.stats` (kept apart so each module stays small).

Import them from :mod:`edgert.stats`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgert.errors import InvalidArgumentError

__all__ = ["LatencyHistogram", "LatencySummary"]


def _us(value_ns: float | None) -> float | None:
    return None if value_ns is None else value_ns / 1000.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LatencySummary:
    """A snapshot of a :class:`LatencyStats`.

    Figures over *all* samples: ``count``, ``sum_ns``, ``min_ns``, ``max_ns``, ``mean_ns`` and
    ``counts_over``. Figures over the *retained window* (the last ``capacity`` samples):
    ``retained`` and the percentiles ``p50_ns``, ``p90_ns``, ``p99_ns``, ``p999_ns`` (99.9 %).
    Every figure is ``None`` when no sample was recorded. Each ``*_ns`` figure has a ``*_us``
    property in microseconds.

    Attributes:
        count: Samples recorded since construction or :meth:`LatencyStats.reset`.
        retained: Samples in the window the percentiles are computed over.
        capacity: Size of the window.
        wrapped: True when ``count > capacity``, i.e. percentiles no longer cover every sample.
        sum_ns: Sum of all samples.
        min_ns: Smallest sample.
        max_ns: Largest sample.
        mean_ns: ``sum_ns / count``.
        p50_ns: Median of the window (linear interpolation).
        p90_ns: 90th percentile of the window.
        p99_ns: 99th percentile of the window.
        p999_ns: 99.9th percentile of the window.
        counts_over: ``(threshold_ns, n)`` pairs: n samples were strictly greater than the
            threshold, counted over all samples.
    """

    count: int
    retained: int
    capacity: int
    wrapped: bool
    sum_ns: int
    min_ns: int | None
    max_ns: int | None
    mean_ns: float | None
    p50_ns: float | None
    p90_ns: float | None
    p99_ns: float | None
    p999_ns: float | None
    counts_over: tuple[tuple[int, int], ...] = ()

    @property
    def min_us(self) -> float | None:
        """``min_ns`` in microseconds."""
        return _us(self.min_ns)

    @property
    def max_us(self) -> float | None:
        """``max_ns`` in microseconds."""
        return _us(self.max_ns)

    @property
    def mean_us(self) -> float | None:
        """``mean_ns`` in microseconds."""
        return _us(self.mean_ns)

    @property
    def p50_us(self) -> float | None:
        """``p50_ns`` in microseconds."""
        return _us(self.p50_ns)

    @property
    def p90_us(self) -> float | None:
        """``p90_ns`` in microseconds."""
        return _us(self.p90_ns)

    @property
    def p99_us(self) -> float | None:
        """``p99_ns`` in microseconds."""
        return _us(self.p99_ns)

    @property
    def p999_us(self) -> float | None:
        """``p999_ns`` in microseconds."""
        return _us(self.p999_ns)

    def over(self, threshold_ns: int) -> int:
        """Samples (over all) strictly above a threshold configured at construction.

        Raises:
            InvalidArgumentError: ``threshold_ns`` was not one of the configured thresholds.
        """
        for threshold, n in self.counts_over:
            if threshold == threshold_ns:
                return n
        raise InvalidArgumentError(
            f"no counter for threshold {threshold_ns} ns; configured: "
            f"{[t for t, _ in self.counts_over]}",
            hint="pass it in LatencyStats(thresholds_ns=...) or use LatencyStats.count_over()",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (nanosecond figures only; thresholds become string keys)."""
        return {
            "count": self.count,
            "retained": self.retained,
            "capacity": self.capacity,
            "wrapped": self.wrapped,
            "sum_ns": self.sum_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "mean_ns": self.mean_ns,
            "p50_ns": self.p50_ns,
            "p90_ns": self.p90_ns,
            "p99_ns": self.p99_ns,
            "p999_ns": self.p999_ns,
            "counts_over": {str(t): n for t, n in self.counts_over},
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string; keyword arguments go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)


@dataclass(frozen=True, kw_only=True, slots=True)
class LatencyHistogram:
    """Counts of retained samples in half-open bins ``[edges_ns[i], edges_ns[i + 1])``.

    Attributes:
        edges_ns: Bin edges, ascending; one more than ``counts``.
        counts: Samples per bin.
        below: Retained samples smaller than ``edges_ns[0]``.
        above: Retained samples at or beyond ``edges_ns[-1]`` (the overflow).
    """

    edges_ns: tuple[int, ...]
    counts: tuple[int, ...]
    below: int
    above: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "edges_ns": list(self.edges_ns),
            "counts": list(self.counts),
            "below": self.below,
            "above": self.above,
        }
