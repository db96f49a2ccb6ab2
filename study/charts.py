"""Draw the charts that figures.py chooses, with matplotlib's object API (no pyplot).

Design choices:
- `draw(chart)` returns a `matplotlib.figure.Figure` (tests inspect it: scales,
  colours, legend placement); `png(chart)` renders it with Agg.
- Lines: markers at every revision; a missing value (None, NaN, or <= 0 on a log y
  axis) breaks the line. A point at x = 0 is drawn in the axis' 0 slot and joined to
  the next point by a dotted segment, because the distance across the break is not
  a ratio like the rest of the axis (style.py).
- A panel without any value says "no data" instead of drawing empty axes silently.
- Heatmaps: `imshow` (one cell per expert and revision, revisions equally spaced in
  step order), viridis from 0 to the largest value, missing cells light grey, and a
  colour bar with the balanced level 1/experts marked.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import PercentFormatter
from strata.study import style
from strata.study.figures import HeatmapChart, Line, LineChart, Panel

MISSING = "#e1e1e1"


def draw(chart: LineChart | HeatmapChart) -> MplFigure:
    if isinstance(chart, HeatmapChart):
        return heatmap_figure(chart)
    return line_figure(chart)


def png(chart: LineChart | HeatmapChart) -> bytes:
    return style.png_bytes(draw(chart))


def line_figure(chart: LineChart) -> MplFigure:
    fig, axes = style.new_figure(len(chart.panels))
    xs = [x for panel in chart.panels for line in panel.lines for x in line.x]
    for ax, panel in zip(axes, chart.panels, strict=True):
        zero = style.token_axis(ax, xs, chart.xlabel)
        _panel(ax, panel, zero)
    fig.suptitle(chart.title, fontsize=style.FONT["title"])
    style.legend_below(fig)
    return fig


def _value(v: float | None, log: bool) -> float:
    if v is None or not math.isfinite(v) or (log and v <= 0):
        return math.nan
    return float(v)


def _panel(ax: Axes, panel: Panel, zero: float | None) -> None:
    colors = style.colors([line.key for line in panel.lines])
    drawn = [
        _line(ax, line, color, zero, panel.logy)
        for line, color in zip(panel.lines, colors, strict=True)
    ]
    if panel.logy:
        ax.set_yscale("log")
    if panel.ylim is not None:
        lo, hi = panel.ylim
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))  # room for the markers
    if panel.percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if panel.hline is not None:
        ax.axhline(panel.hline, color="#555555", linestyle="--", linewidth=1, zorder=1)
    if not any(drawn):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                color="#777777", fontsize=style.FONT["label"])  # fmt: skip
    style.decorate(ax, panel.title, panel.ylabel)


def _line(ax: Axes, line: Line, color: str, zero: float | None, logy: bool) -> bool:
    """Draw one line; True when it has at least one point."""
    ys = np.array([_value(y, logy) for y in line.y])
    xs = np.array([math.nan if x is None else float(x) for x in line.x])
    at_zero = xs == 0
    main_y = np.where(at_zero, math.nan, ys)
    ax.plot(xs, main_y, color=color, linewidth=1.8, marker="o", markersize=4, label=line.label)
    for i in np.flatnonzero(at_zero & np.isfinite(ys)):
        if zero is None:
            continue
        after = [j for j in range(i + 1, len(xs)) if xs[j] > 0 and np.isfinite(ys[j])]
        seg_x, seg_y = [zero] + [xs[j] for j in after[:1]], [ys[i]] + [ys[j] for j in after[:1]]
        ax.plot(seg_x, seg_y, color=color, linewidth=1.4, linestyle=":")
        ax.plot([zero], [ys[i]], color=color, marker="o", markersize=4, linestyle="none")
    return bool(np.isfinite(ys).any())


def _thin(count: int, most: int) -> list[int]:
    """Every k-th index of `count`, so at most `most` labels are shown."""
    return list(range(0, count, max(1, math.ceil(count / most))))


def heatmap_figure(chart: HeatmapChart) -> MplFigure:
    fig, (ax,) = style.new_figure()
    matrix = np.ma.masked_invalid(np.asarray(chart.matrix, dtype=float))
    vmax = float(matrix.max()) if matrix.count() else 1.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=MISSING)
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax or 1.0,
                      interpolation="nearest")  # fmt: skip
    cols, rows = _thin(len(chart.col_labels), 16), _thin(len(chart.row_labels), 20)
    ax.set_xticks(cols, [chart.col_labels[j] for j in cols])
    ax.set_yticks(rows, [chart.row_labels[i] for i in rows])
    ax.tick_params(labelsize=style.FONT["tick"], length=0)
    ax.set_xlabel(chart.xlabel, fontsize=style.FONT["label"])
    ax.set_ylabel(chart.ylabel, fontsize=style.FONT["label"])
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(chart.bar_label, fontsize=style.FONT["label"])
    bar.ax.tick_params(labelsize=style.FONT["tick"])
    for level in chart.marks:
        if 0 <= level <= (vmax or 1.0):
            bar.ax.axhline(level, color="white", linewidth=2)
    fig.suptitle(chart.title, fontsize=style.FONT["title"])
    return fig
