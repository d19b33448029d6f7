"""The report's figures: test error vs batch size (the Group Norm paper's Figure 1) and training
curves, built on :class:`matplotlib.figure.Figure` (no pyplot state, no GUI backend).

Every norm keeps one colour and one marker, given by its position in ``norms``, so both figures
agree when they get the same ``norms``; legends name each norm (`normlab.lab.summary.norm_label`:
"BatchNorm", not "bn"). Diverged runs are never averaged in: the error figure
marks them with ``×count`` at the top of the axes and counts them in the legend.

Reference: Y. Wu and K. He, "Group Normalization", ECCV 2018, Figure 1.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from normlab.lab.summary import (
    SummaryRow,
    config_of,
    counts_steps,
    final_error,
    norm_label,
    norm_order,
    unique_records,
)

DPI = 110
COLOURS = (  # matplotlib's tab10
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def norm_styles(norms: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{norm: (colour, marker)}``, fixed by each norm's position in ``norms``."""
    return {n: (COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(norms)}


def figure_png(figure: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, to be written atomically by the caller."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _log2_batch_axis(ax: Any, batch_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(batch_sizes)))
    ax.xaxis.set_major_formatter(FixedFormatter([str(b) for b in batch_sizes]))
    ax.xaxis.set_minor_locator(NullLocator())


def plot_error_vs_batch_size(
    summary: Sequence[SummaryRow], *, norms: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """Final test error (%) vs batch size (log2 axis), one line per norm.

    Each line is the mean over the seeds that did not diverge, with markers, drawn at every batch
    size of the summary (NaN, i.e. a gap, where the norm has no such run); the band around it is
    mean ± one sample std (ddof=1), where at least two seeds finished. So ``ax.lines`` holds
    exactly one line per norm; bands are PolyCollections and the diverged marks are text.

    Args:
        summary: rows from :func:`normlab.lab.summary.summarize`.
        norms: the norms' order, which fixes their colours; default: order of first appearance.
        title: the axes title.
    """
    styles = norm_styles(list(dict.fromkeys([*(norms or ()), *(r.norm for r in summary)])))
    order = [n for n in styles if any(r.norm == n for r in summary)]
    batch_sizes = sorted({r.batch_size for r in summary})
    cell = {(r.norm, r.batch_size): r for r in summary}
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    x = np.array(batch_sizes, dtype=np.float64)
    diverged_marks: dict[int, int] = {}  # batch size -> marks already stacked there
    for norm in order:
        colour, marker = styles[norm]
        rows = [cell.get((norm, b)) for b in batch_sizes]
        mean = np.array([_pct(r.mean if r else None) for r in rows])
        std = np.array([_pct(r.std if r else None) for r in rows])
        diverged = sum(r.diverged for r in rows if r)
        name = norm_label(norm)
        label = f"{name} ({diverged} diverged ×)" if diverged else name
        ax.plot(x, mean, color=colour, marker=marker, markersize=5, linewidth=1.6, label=label)
        if np.isfinite(std).any():
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0)
        for b, r in zip(batch_sizes, rows, strict=True):
            if r and r.diverged:
                stacked = diverged_marks.get(b, 0)
                diverged_marks[b] = stacked + 1
                ax.annotate(
                    f"×{r.diverged}",
                    xy=(b, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -3 - 10 * stacked),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    color=colour,
                    fontsize=8,
                    fontweight="bold",
                )
    if batch_sizes:
        _log2_batch_axis(ax, batch_sizes)
    ax.margins(y=0.12)  # headroom for the diverged marks at the top
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel("test error (%)")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    if order:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished run", transform=ax.transAxes, ha="center")
    return figure


def _pct(value: float | None) -> float:
    return math.nan if value is None else 100.0 * value


def _mean_curve(
    runs: Sequence[Sequence[Mapping[str, Any]]], key: str
) -> tuple[list[float], list[float]]:
    """Mean ``train_loss`` at each value of ``key`` over the runs that logged a finite one there."""
    losses: dict[float, list[float]] = {}
    for curve in runs:
        for point in curve:
            loss = point.get("train_loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                losses.setdefault(point[key], []).append(float(loss))
    xs = sorted(losses)
    return xs, [float(np.mean(losses[v])) for v in xs]


def plot_training_curves(
    records: Iterable[Mapping[str, Any]], *, norms: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """Training loss vs epoch, one panel per batch size, one line per norm (mean over seeds).

    A line averages the runs that did not diverge (a diverged run's curve stops early and would
    bias the mean); a norm with no such run at a batch size has no line there, and the panel
    names its diverged runs. The x-axis is the epoch; the step when the runs trained for equal
    steps (``--steps``: the batch sizes then cover different numbers of epochs) or when a curve
    lacks epochs.

    Args:
        records: run records as in ``results.jsonl``.
        norms: the norms' order, which fixes their colours; default: order of first appearance.
        title: the figure's title.
    """
    records = unique_records(records)
    order = norm_order(records, norms or ())
    styles = norm_styles(order)
    curves: dict[tuple[int, str], list[Sequence[Mapping[str, Any]]]] = {}
    diverged: dict[tuple[int, str], int] = {}
    for record in records:
        norm, batch_size = config_of(record)
        curve = record.get("curve") or []
        if final_error(record) is None:
            diverged[batch_size, norm] = diverged.get((batch_size, norm), 0) + 1
        elif curve:
            curves.setdefault((batch_size, norm), []).append(curve)
    points = [p for runs in curves.values() for curve in runs for p in curve]
    by_epoch = not counts_steps(records) and all(p.get("epoch") is not None for p in points)
    key = "epoch" if by_epoch else "step"
    batch_sizes = sorted({config_of(r)[1] for r in records})
    ncols = min(len(batch_sizes), 3) or 1
    nrows = max(1, math.ceil(len(batch_sizes) / ncols))
    figure = Figure(figsize=(3.0 * ncols + 0.6, 2.5 * nrows + 0.5), layout="constrained")
    axes = figure.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    for ax in axes[max(len(batch_sizes), 1) :]:
        figure.delaxes(ax)
    for ax, batch_size in zip(axes, batch_sizes, strict=False):
        for norm in order:
            runs = curves.get((batch_size, norm))
            if runs:
                colour, marker = styles[norm]
                xs, ys = _mean_curve(runs, key)
                ax.plot(xs, ys, color=colour, marker=marker, markersize=3, linewidth=1.3)
        failed = [f"{n} ×{diverged[batch_size, n]}" for n in order if (batch_size, n) in diverged]
        if failed:
            ax.text(
                0.98,
                0.96,
                "diverged: " + ", ".join(failed),
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
            )
        ax.set_title(f"batch size {batch_size}", fontsize=9)
        ax.set_xlabel(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("training loss", fontsize=8)
    if order:
        handles = [Line2D([], [], color=styles[n][0], marker=styles[n][1]) for n in order]
        figure.legend(
            handles, [norm_label(n) for n in order], loc="outside lower center",
            ncols=min(len(order), 5), fontsize=8,
        )
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
