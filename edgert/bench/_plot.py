"""A PNG of a benchmark: latency histogram and timeline (matplotlib, the ``plot`` extra).

matplotlib is imported here only, when a plot is asked for, and through its object API with the
Agg canvas: no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert.errors import EdgeRTError, NotSupportedError

if TYPE_CHECKING:
    from edgert.bench._report import BenchReport

__all__ = ["require_matplotlib", "write_plot"]


def require_matplotlib() -> tuple[Any, Any]:
    """matplotlib's Figure and Agg canvas classes; callers check this before a long run.

    Raises:
        NotSupportedError: matplotlib is not installed.
    """
    try:
        figure = importlib.import_module("matplotlib.figure")
        agg = importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError as err:
        raise NotSupportedError(
            f"writing a plot needs matplotlib, which does not import here ({err})",
            hint="pip install 'matplotlib>=3.7' (the edgert[plot] extra)") from err
    return figure.Figure, agg.FigureCanvasAgg


def _histogram(ax: Any, report: BenchReport) -> None:
    series = [(name, report.samples[name]) for name in ("total", "compute")
              if name in report.samples and report.samples[name].size]
    if not series:
        ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
        return
    everything = np.concatenate([v for _n, v in series]) / 1000.0
    lo = max(float(everything.min()), 0.01)
    hi = max(float(np.percentile(everything, 99.9)), lo * 1.5)
    # Log-spaced bins: a compute time of a few microseconds and a round trip of hundreds both
    # keep their shape on one axis.
    bins = np.geomspace(lo, hi, 80)
    label = {"total": "total latency", "compute": "GPU compute" if report.backend.on_gpu
             else "compute (host)"}
    for name, values in series:
        ax.hist(np.clip(values / 1000.0, lo, hi), bins=bins, alpha=0.6, label=label[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("microseconds, log scale (the slowest 0.1 % are piled into the last bin)")
    ax.set_ylabel("requests")
    ax.set_title("Latency histogram")
    ax.legend(loc="upper right")


def _timeline(ax: Any, report: BenchReport) -> None:
    t = report.samples.get("t")
    total = report.samples.get("total")
    if t is None or total is None or not t.size or t.size != total.size:
        ax.text(0.5, 0.5, "no timeline", ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(t / 1e9, total / 1000.0, ".", markersize=2, color="tab:blue", label="total latency")
    if report.loop is not None:
        ax.axhline(report.loop.period_ns / 1000.0, color="tab:red", linewidth=0.8,
                   linestyle="--", label="period")
    ax.set_xlabel("seconds into the measured phase")
    ax.set_ylabel("latency (us)")
    ax.set_title("Timeline")
    temps = [(s.t_s, s.max_temp_c) for s in report.thermal.samples if s.max_temp_c is not None]
    handles, labels = ax.get_legend_handles_labels()
    if temps:
        ax2 = ax.twinx()
        xs, ys = zip(*temps, strict=True)
        ax2.plot(xs, ys, "-o", color="tab:orange", markersize=3, label="hottest sensor")
        ax2.set_ylabel("°C")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")


def write_plot(report: BenchReport, path: Path) -> Path:
    """Draw the report and write it to ``path`` as PNG.

    Raises:
        NotSupportedError: matplotlib is missing.
        EdgeRTError: The file could not be written.
    """
    figure_cls, canvas_cls = require_matplotlib()
    fig = figure_cls(figsize=(10, 7), dpi=100)
    canvas_cls(fig)
    ax1, ax2 = fig.subplots(2, 1)
    _histogram(ax1, report)
    _timeline(ax2, report)
    b = report.backend
    fig.suptitle(f"edgert bench: {b.model} on {b.runtime} ({b.device}), "
                 f"{report.throughput_qps:,.0f} qps")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as err:
        raise EdgeRTError(f"cannot write the plot to {path}: {err.strerror or err}",
                          hint="check that the directory exists and is writable") from err
    return path
