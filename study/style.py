"""The look of the study's figures: sizes, colours per metric, the token axis, PNG output.

Design choices:
- Object API only (`matplotlib.figure.Figure` + the Agg canvas): no pyplot, no global
  state, no display. This module imports matplotlib, so only `charts.py` imports it,
  and `figures.py` imports `charts.py` lazily: `import strata.study` stays light.
- One mapping metric -> colour (`COLORS`), used by every figure, so `val_loss` or the
  `attn` kind has the same colour wherever it appears (norms and dnorm share the
  kind names). Names without a fixed colour (sources, MoE layers) take the palette in
  order, skipping the colours already used in that figure.
- x axis: a real log axis of tokens seen. Step 0 has 0 tokens, which no log axis can
  show. A symlog axis could, but its linear stretch near 0 has no meaning for tokens
  and bends the curve where the first revisions are; instead 0 is drawn at a
  position of its own left of the log range (`zero_position`), labelled "0", set
  apart by a break mark "//", and joined to the first positive point by a dotted
  segment (its slope means nothing). Every other distance on the axis is a true ratio.
- Tick labels of the token axis are short (1k, 10M, 2B); legends sit below the axes,
  outside them (constrained layout's "outside" placement), so they never cover data.
- 9.6 x 4.8 inches at 110 dpi: 1056 x 528 pixels, the report's column width.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

SIZE = (9.6, 4.8)  # inches
DPI = 110
FONT = {"title": 13, "label": 10.5, "tick": 9.5, "legend": 9.5}
ZERO_GAP = 0.1  # fraction of the x axis (in log units) between the 0 slot and the log range
COLORS = {
    # loss
    "val_loss": "#1f77b4", "last_batch_loss": "#9ecae1", "val_bpb": "#9467bd",
    # memorisation
    "mem_seen": "#d62728", "mem_unseen": "#2ca02c", "mem_all": "#7f7f7f",
    # parameter kinds (norm/<kind> and dnorm/<kind>)
    "total": "#000000", "embed": "#ff7f0e", "attn": "#17becf", "mlp": "#8c564b",
    "norms": "#e377c2", "final_norm": "#bcbd22", "lm_head": "#393b79",
}  # fmt: skip
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e7969c", "#637939", "#aec7e8",
]  # fmt: skip
GRID = {"color": "#dddddd", "linewidth": 0.8}


def colors(keys: list[str]) -> list[str]:
    """The colour of each key: `COLORS` when fixed, else the next unused palette colour."""
    used = {COLORS[k] for k in keys if k in COLORS}
    free = [c for c in PALETTE if c not in used] or PALETTE
    out, i = [], 0
    for key in keys:
        if key in COLORS:
            out.append(COLORS[key])
        else:
            out.append(free[i % len(free)])
            i += 1
    return out


def new_figure(panels: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.canvas.print_png(buffer, metadata={"Software": None})  # no version, no URL
    return buffer.getvalue()


def short_number(v: float) -> str:
    """1, 20, 500, 1k, 20k, 3M, 1B, 2T: labels for a log axis of counts."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def zero_position(xs: Iterable[float | None]) -> float | None:
    """Where x = 0 is drawn on the log axis: left of the smallest positive x by
    `ZERO_GAP` of the axis (at least a third of a decade); None when no x is 0."""
    values = [x for x in xs if x is not None and math.isfinite(x)]
    positive = [x for x in values if x > 0]
    if 0 not in values:
        return None
    if not positive:
        return 1.0
    lo, hi = math.log10(min(positive)), math.log10(max(positive))
    gap = max(1 / 3, (hi - lo) * ZERO_GAP / (1 - ZERO_GAP))
    return 10 ** (lo - gap)


def _ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Major and minor log ticks within [10^lo, 10^hi]: decades; also 2x and 5x under
    two decades; every mantissa under one decade."""
    majors, minors = [], []
    labelled = (1,) if hi - lo >= 2 else (1, 2, 5) if hi - lo >= 1 else tuple(range(1, 10))
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        for m in range(1, 10):
            v = m * 10.0**k
            if lo <= math.log10(v) <= hi:
                (majors if m in labelled else minors).append(v)
    return majors, minors


def token_axis(ax: Axes, xs: list[float | None], label: str) -> float | None:
    """A log x axis for `xs` with the 0 slot; returns where 0 is drawn (None: no 0)."""
    zero = zero_position(xs)
    positive = [x for x in xs if x is not None and x > 0]
    ax.set_xscale("log")
    ax.set_xlabel(label, fontsize=FONT["label"])
    if not positive:  # nothing but step 0 (or nothing at all)
        ax.set_xlim(0.5, 2.0)
        ax.set_xticks([1.0], ["0"] if zero is not None else [""])
        ax.xaxis.set_minor_locator(NullLocator())
        return zero
    lo, hi = math.log10(min(positive)), math.log10(max(positive))
    pad = max(0.08, (hi - lo) * 0.03)
    left = math.log10(zero) - pad if zero is not None else lo - pad
    ax.set_xlim(10**left, 10 ** (hi + pad))
    start = (math.log10(zero) + lo) / 2 if zero is not None else left
    majors, minors = _ticks(start, hi + pad)
    zeros = [zero] if zero is not None else []
    ax.set_xticks(zeros + majors, ["0"] * len(zeros) + [short_number(v) for v in majors])
    ax.set_xticks(minors, minor=True)
    ax.xaxis.set_minor_formatter(NullFormatter())
    if zero is not None:
        _break_mark(ax, 10**start)
    return zero


def _break_mark(ax: Axes, x: float) -> None:
    """A "//" across the bottom spine at x (data coordinates), on a white patch."""
    ax.text(x, 0, "//", transform=ax.get_xaxis_transform(), ha="center", va="center",
            fontsize=FONT["label"] + 1, color="#333333", clip_on=False, zorder=5,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})  # fmt: skip


def decorate(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=FONT["label"] + 0.5)
    ax.set_ylabel(ylabel, fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(True, which="major", **GRID)
    ax.set_axisbelow(True)


def legend_below(fig: Figure) -> None:
    """One legend for the figure, below the axes (outside them), a few entries a row; a
    line drawn in several panels (the same label) is listed once."""
    handles, labels = [], []
    for axis in fig.axes:
        for h, lab in zip(*axis.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles, labels = [*handles, h], [*labels, lab]
    if handles:
        width = max(map(len, labels)) + 6  # characters per entry, with the line sample
        rows = math.ceil(len(handles) / max(1, min(len(handles), 100 // width)))
        ncols = math.ceil(len(handles) / rows)
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                   fontsize=FONT["legend"], frameon=False)  # fmt: skip
