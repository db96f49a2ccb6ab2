"""A heatmap on a `Canvas`: one coloured cell per (row, column), with a colour bar.

Used for MoE routing: rows are experts, columns are revisions (in step order, equally
spaced, labelled with their step), colour is the fraction of tokens routed to the
expert. The colour map runs through viridis' anchor colours from 0 to the largest
value; missing cells are light grey. Labels that would overlap are thinned out.
"""

from __future__ import annotations

import math

import numpy as np

from strata.study.canvas import BLACK, DARK, Canvas
from strata.study.font import text_width
from strata.study.plot import BOTTOM, LEFT, TOP
from strata.study.png import encode_png

VIRIDIS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=float
)
MISSING = (225, 225, 225)


def colormap(value: float, vmax: float) -> tuple[int, int, int]:
    """Viridis-like colour of `value` on [0, vmax]."""
    t = min(max(value / vmax if vmax > 0 else 0.0, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    rgb = VIRIDIS[i] + (VIRIDIS[i + 1] - VIRIDIS[i]) * (t - i)
    return tuple(int(round(c)) for c in rgb)


def _every(count: int, room: float, label: int) -> int:
    """Label every k-th of `count` slots so labels of `label` pixels fit in `room`."""
    return max(1, math.ceil(count * (label + 6) / max(room, 1)))


def heatmap(
    matrix: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (780, 420),
) -> Canvas:
    width, height = size
    c = Canvas(width, height)
    x0, y0, x1, y1 = LEFT, TOP, width - 110, height - BOTTOM
    rows, cols = matrix.shape
    vmax = float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 1.0
    cw, ch = (x1 - x0) / max(cols, 1), (y1 - y0) / max(rows, 1)
    for i in range(rows):
        for j in range(cols):
            v = matrix[i, j]
            color = MISSING if not np.isfinite(v) else colormap(float(v), vmax)
            xa, xb = round(x0 + j * cw), round(x0 + (j + 1) * cw) - 1
            ya, yb = round(y0 + i * ch), round(y0 + (i + 1) * ch) - 1
            c.rect(xa, ya, xb, yb, color)
    step = _every(cols, x1 - x0, max((text_width(s) for s in col_labels), default=0))
    for j in range(0, cols, step):
        c.text(x0 + (j + 0.5) * cw, y1 + 7, col_labels[j], DARK, anchor="center")
    step = _every(rows, y1 - y0, 7)
    for i in range(0, rows, step):
        c.text(x0 - 6, y0 + (i + 0.5) * ch - 3, row_labels[i], DARK, anchor="right")
    bar = x1 + 30
    for k in range(y1 - y0 + 1):  # colour bar, vmax at the top
        c.rect(bar, y1 - k, bar + 14, y1 - k, colormap(vmax * k / (y1 - y0), vmax))
    c.text(bar + 20, y0, f"{vmax:.3g}", DARK)
    c.text(bar + 20, y1 - 7, "0", DARK)
    c.text(width / 2, 10, title, BLACK, scale=2 if text_width(title, 2) < width - 20 else 1,
           anchor="center")  # fmt: skip
    c.text((x0 + x1) / 2, y1 + 24, xlabel, BLACK, anchor="center")
    c.text(10, (y0 + y1) / 2 - text_width(ylabel) / 2, ylabel, BLACK, vertical=True)
    return c


def heatmap_png(*args, **kwargs) -> bytes:
    return encode_png(heatmap(*args, **kwargs).pixels)
