"""Fixed-memory latency statistics: the one recorder every part of edgert reports with.

:class:`LatencyStats` keeps two kinds of figures, and the difference matters when reading them:

* **Over all samples ever recorded** (exact, whatever the capacity): ``count``, ``sum_ns``,
  ``min_ns``, ``max_ns``, ``mean_ns`` and the counts over the thresholds given at construction.
* **Over the retained window** (the last ``capacity`` samples, kept in a preallocated ring of
  int64 nanoseconds): the percentiles, :meth:`LatencyStats.histogram`, :meth:`LatencyStats.samples`
  and :meth:`LatencyStats.count_over` for a threshold that was not configured up front.

While fewer than ``capacity`` samples have been recorded the window *is* every sample, so both kinds
agree; :attr:`LatencySummary.wrapped` says when they stop agreeing.

Percentiles use :func:`numpy.percentile` with ``method="linear"`` (numpy's default, type 7 of
Hyndman & Fan: linear interpolation between the two nearest order statistics), so they are floats
and may fall between two recorded values.

Recording is cheap and does not allocate: the ring is written in place, and the running figures are
plain integers. One :class:`LatencyStats` belongs to one writer thread; readers on other threads see
a consistent-enough picture for monitoring but no atomic snapshot.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgert._latency import LatencyHistogram, LatencySummary
from edgert.errors import InvalidArgumentError

__all__ = ["LatencyHistogram", "LatencyStats", "LatencySummary"]

_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)
#: The percentiles a summary reports, in percent.
SUMMARY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


class LatencyStats:
    """Fixed-memory latency recorder with exact running figures and windowed percentiles.

    Args:
        capacity: How many of the most recent samples to keep for percentiles and histograms.
            The ring is allocated (and touched, so no page fault happens while recording) here:
            8 bytes per sample.
        thresholds_ns: Thresholds whose exceedances are counted exactly over all samples
            (e.g. the period of a control loop). Any number; the cost per sample is constant.

    Raises:
        InvalidArgumentError: ``capacity`` is not a positive integer, or a threshold is not an
            integer.

    Example:
        >>> stats = LatencyStats(1024, thresholds_ns=[1_000_000])
        >>> for v in (900_000, 1_100_000, 1_000_000):
        ...     stats.record(v)
        >>> s = stats.summary()
        >>> (s.count, s.min_ns, s.max_ns, s.over(1_000_000))
        (3, 900000, 1100000, 1)
    """

    __slots__ = (
        "_buckets",
        "_buf",
        "_capacity",
        "_count",
        "_lowest",
        "_max",
        "_min",
        "_mv",
        "_pos",
        "_sum",
        "_thresholds",
    )

    def __init__(self, capacity: int = 65_536, *, thresholds_ns: Iterable[int] = ()) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise InvalidArgumentError(f"capacity must be an int, got {capacity!r}")
        if capacity < 1:
            raise InvalidArgumentError(
                f"capacity must be at least 1, got {capacity}",
                hint="it is how many recent samples the percentiles are computed over",
            )
        thresholds = []
        for t in thresholds_ns:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise InvalidArgumentError(f"thresholds_ns must be integers, got {t!r}")
            thresholds.append(int(t))
        self._capacity = int(capacity)
        self._buf: npt.NDArray[np.int64] = np.empty(self._capacity, dtype=np.int64)
        self._buf.fill(0)  # touch every page now, so record() never takes a page fault
        # Writing through a memoryview skips numpy's scalar conversion: ~40 % cheaper per sample.
        self._mv = self._buf.data
        self._thresholds: tuple[int, ...] = tuple(sorted(set(thresholds)))
        # _buckets[k] counts samples exceeding exactly k thresholds (k >= 1), so one bisect per
        # sample serves any number of thresholds, and samples under the lowest one cost a compare.
        self._buckets: list[int] = [0] * (len(self._thresholds) + 1)
        self._lowest = self._thresholds[0] if self._thresholds else _I64_MAX
        self._pos = 0
        self._count = 0
        self._sum = 0
        self._min = _I64_MAX
        self._max = _I64_MIN

    # -- recording ------------------------------------------------------------------------------

    def record(self, value_ns: int) -> None:
        """Record one sample (a Python int, in nanoseconds). Allocates nothing; O(1).

        Raises:
            ValueError: The value does not fit in int64 (the sample is not recorded).
            TypeError: The value is not an integer (e.g. a float; the sample is not recorded).
        """
        pos = self._pos
        self._mv[pos] = value_ns
        pos += 1
        self._pos = 0 if pos == self._capacity else pos
        self._count += 1
        self._sum += value_ns
        # Plain comparisons: calling min()/max() here would double the cost of record().
        if value_ns < self._min:  # noqa: PLR1730
            self._min = value_ns
        if value_ns > self._max:  # noqa: PLR1730
            self._max = value_ns
        if value_ns > self._lowest:
            self._buckets[bisect_left(self._thresholds, value_ns)] += 1

    def record_many(self, values_ns: npt.ArrayLike) -> None:
        """Record many samples at once (vectorised; allocates temporaries).

        Raises:
            InvalidArgumentError: ``values_ns`` is not one-dimensional integer data.
        """
        arr = np.asarray(values_ns)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InvalidArgumentError(
                f"values_ns must be a 1-D array of integers, got shape {arr.shape} "
                f"dtype {arr.dtype}",
                hint="convert to nanoseconds as integers first, e.g. np.rint(x).astype(np.int64)",
            )
        if arr.size == 0:
            return
        arr = arr.astype(np.int64, copy=False)
        self._count += int(arr.size)
        self._sum += int(arr.sum(dtype=np.int64))
        self._min = min(self._min, int(arr.min()))
        self._max = max(self._max, int(arr.max()))
        if self._thresholds:
            idx = np.searchsorted(np.asarray(self._thresholds, dtype=np.int64), arr, side="left")
            for k, n in enumerate(np.bincount(idx, minlength=len(self._buckets)).tolist()):
                self._buckets[k] += n
        self._write(arr)

    def _write(self, arr: npt.NDArray[np.int64]) -> None:
        cap = self._capacity
        if arr.size >= cap:
            self._buf[:] = arr[-cap:]
            self._pos = 0
            return
        pos = self._pos
        first = min(arr.size, cap - pos)
        self._buf[pos : pos + first] = arr[:first]
        rest = arr.size - first
        if rest:
            self._buf[:rest] = arr[first:]
        self._pos = (pos + arr.size) % cap

    def merge(self, other: LatencyStats) -> None:
        """Add ``other``'s samples to this recorder, in place.

        The running figures become exact over both; ``other``'s retained samples are appended to
        this window (oldest first), so the window keeps the most recent ``capacity`` of them.

        Raises:
            InvalidArgumentError: The two recorders count different thresholds.
        """
        if other._thresholds != self._thresholds:
            raise InvalidArgumentError(
                f"cannot merge LatencyStats with thresholds {list(other._thresholds)} into one "
                f"with {list(self._thresholds)}",
                hint="construct both with the same thresholds_ns",
            )
        if other._count == 0:
            return
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        for k, n in enumerate(other._buckets):
            self._buckets[k] += n
        self._write(other.samples())

    def reset(self) -> None:
        """Forget every sample; keeps the buffer and the thresholds."""
        self._pos = 0
        self._count = 0
        self._sum = 0
        self._min = _I64_MAX
        self._max = _I64_MIN
        self._buckets = [0] * len(self._buckets)

    # -- reading --------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Size of the retained window."""
        return self._capacity

    @property
    def count(self) -> int:
        """Samples recorded in total (not only the retained ones)."""
        return self._count

    @property
    def retained(self) -> int:
        """Samples currently in the window."""
        return min(self._count, self._capacity)

    @property
    def thresholds_ns(self) -> tuple[int, ...]:
        """The configured thresholds, ascending."""
        return self._thresholds

    def samples(self) -> npt.NDArray[np.int64]:
        """A copy of the retained samples, oldest first."""
        ordered: npt.NDArray[np.int64]
        if self._count <= self._capacity:
            ordered = self._buf[: self._count].copy()
        else:
            ordered = np.concatenate((self._buf[self._pos :], self._buf[: self._pos]))
        return ordered

    def _window(self) -> npt.NDArray[np.int64]:
        # Order does not matter for percentiles or histograms: avoid the copy samples() makes.
        return self._buf[: self.retained]

    def percentile(self, q: float | Sequence[float]) -> float | tuple[float, ...] | None:
        """Percentile(s) of the retained window, ``q`` in percent (0-100), linear method.

        Returns:
            A float for a scalar ``q``, a tuple for a sequence, ``None`` when empty.

        Raises:
            InvalidArgumentError: A ``q`` is outside [0, 100].
        """
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if qs.size and (np.any(qs < 0) or np.any(qs > 100) or np.any(np.isnan(qs))):
            raise InvalidArgumentError(f"percentiles must be within [0, 100], got {q!r}")
        if self._count == 0:
            return None
        values = np.percentile(self._window(), qs, method="linear")
        if np.ndim(q) == 0:
            return float(values[0])
        return tuple(float(v) for v in values)

    def count_over(self, threshold_ns: int) -> int:
        """How many samples are strictly greater than ``threshold_ns``.

        Exact over all samples when ``threshold_ns`` was configured in ``thresholds_ns``;
        otherwise counted over the retained window only (the same thing until it wraps).
        """
        if threshold_ns in self._thresholds:
            j = self._thresholds.index(threshold_ns)
            return sum(self._buckets[j + 1 :])
        return int(np.count_nonzero(self._window() > threshold_ns))

    def histogram(
        self,
        *,
        bin_ns: int = 1000,
        range_ns: tuple[int, int] | None = None,
        edges_ns: Sequence[int] | None = None,
    ) -> LatencyHistogram:
        """Histogram of the retained window.

        Args:
            bin_ns: Bin width when ``edges_ns`` is not given (default 1 µs, like cyclictest).
            range_ns: ``(low, high)`` covered by the bins, as ``[low, high)``; default: the
                window's min to max, widened to whole bins. Samples outside are counted in
                ``below``/``above`` (a sample equal to ``high`` is above). When ``high - low`` is
                not a multiple of ``bin_ns`` the last bin is narrower: its upper edge is clipped
                to ``high``, so no sample beyond ``high`` is ever counted inside.
            edges_ns: Explicit ascending bin edges; overrides ``bin_ns`` and ``range_ns``.

        Raises:
            InvalidArgumentError: Non-positive ``bin_ns``, an empty range, or edges that are not
                strictly ascending.
        """
        window = self._window()
        if edges_ns is not None:
            edges = np.asarray(edges_ns, dtype=np.int64)
            if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
                raise InvalidArgumentError(
                    "edges_ns must hold at least two strictly ascending integers"
                )
        else:
            if bin_ns <= 0:
                raise InvalidArgumentError(f"bin_ns must be positive, got {bin_ns}")
            if range_ns is None:
                if window.size == 0:
                    lo, hi = 0, bin_ns
                else:
                    lo = int(window.min()) // bin_ns * bin_ns
                    hi = (int(window.max()) // bin_ns + 1) * bin_ns
            else:
                lo, hi = range_ns
                if hi <= lo:
                    raise InvalidArgumentError(f"range_ns must be (low, high) with low < high, "
                                               f"got {range_ns}")
            nbins = -(-(hi - lo) // bin_ns)
            edges = lo + bin_ns * np.arange(nbins + 1, dtype=np.int64)
            edges[-1] = hi  # a narrower last bin when the range is not whole bins
        idx = np.searchsorted(edges, window, side="right") - 1
        nb = edges.size - 1
        below = int(np.count_nonzero(idx < 0))
        above = int(np.count_nonzero(idx >= nb))
        inside = idx[(idx >= 0) & (idx < nb)]
        counts = np.bincount(inside, minlength=nb)
        return LatencyHistogram(
            edges_ns=tuple(edges.tolist()),
            counts=tuple(counts.tolist()),
            below=below,
            above=above,
        )

    def summary(self) -> LatencySummary:
        """Snapshot every figure into a :class:`LatencySummary`."""
        empty = self._count == 0
        pcts: tuple[float | None, ...]
        if empty:
            pcts = (None,) * len(SUMMARY_PERCENTILES)
        else:
            values = np.percentile(self._window(), SUMMARY_PERCENTILES, method="linear")
            pcts = tuple(float(v) for v in values)
        counts_over = tuple(
            (t, sum(self._buckets[j + 1 :])) for j, t in enumerate(self._thresholds)
        )
        return LatencySummary(
            count=self._count,
            retained=self.retained,
            capacity=self._capacity,
            wrapped=self._count > self._capacity,
            sum_ns=int(self._sum),
            min_ns=None if empty else int(self._min),
            max_ns=None if empty else int(self._max),
            mean_ns=None if empty else float(self._sum / self._count),
            p50_ns=pcts[0],
            p90_ns=pcts[1],
            p99_ns=pcts[2],
            p999_ns=pcts[3],
            counts_over=counts_over,
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict, plus ``thresholds_ns``."""
        d = self.summary().to_dict()
        d["thresholds_ns"] = list(self._thresholds)
        return d

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string; keyword arguments go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)

    def __repr__(self) -> str:
        """Count, retained samples, capacity and thresholds (not the samples themselves)."""
        return (f"LatencyStats(count={self._count}, retained={self.retained}, "
                f"capacity={self._capacity}, thresholds_ns={list(self._thresholds)})")
