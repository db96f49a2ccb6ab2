"""Line charts on a `Canvas`: axes, ticks, grid, lines with markers, legend, title.

Design choices:
- One function, `line_chart`, draws every line plot of the report; it returns a
  `Chart` holding the canvas and the two scales, so callers (and tests) can find where
  any data point was drawn.
- Missing values (None, NaN, or <= 0 on a log axis) break the line; the remaining
  points are still drawn. x = 0 on a log x axis goes to the zero slot (scales.py).
- The legend sits right of the plot area, so it never hides data; labels that do not
  fit are shortened with "~".
- Colours are the ten of matplotlib's "tab10" cycle, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from strata.study.canvas import BLACK, DARK, GREY, Canvas, Color
from strata.study.font import ADVANCE, text_width
from strata.study.png import encode_png
from strata.study.scales import LinearScale, LogScale

PALETTE: list[Color] = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip
LEFT, RIGHT, TOP, BOTTOM = 78, 180, 40, 50


@dataclass
class Series:
    label: str
    x: list[float | None]
    y: list[float | None]
    color: Color | None = None


@dataclass
class Chart:
    canvas: Canvas
    x: LinearScale | LogScale
    y: LinearScale | LogScale
    area: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  # x0, y0, x1, y1

    def png(self) -> bytes:
        return encode_png(self.canvas.pixels)


def _ok(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _points(s: Series, chart: Chart) -> list[tuple[float, float] | None]:
    """Pixel positions of the series, None where a value is missing (breaks the line)."""
    out: list[tuple[float, float] | None] = []
    for x, y in zip(s.x, s.y, strict=True):
        good = _ok(x) and _ok(y) and chart.x.valid(x) and chart.y.valid(y)
        out.append((chart.x(x), chart.y(y)) if good else None)
    return out


def _axes(chart: Chart, title: str, xlabel: str, ylabel: str) -> None:
    c, (x0, y0, x1, y1) = chart.canvas, chart.area
    for v, label in chart.y.ticks():
        py = chart.y(v)
        if y0 <= py <= y1:
            c.rect(x0, py, x1, py, GREY)
            c.text(x0 - 6, py - 3, label, DARK, anchor="right")
    for v, label in chart.x.ticks():
        px = chart.x(v)
        c.rect(px, y0, px, y1, GREY)
        c.text(px, y1 + 7, label, DARK, anchor="center")
    for xa, ya, xb, yb in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)):
        c.rect(xa, ya, xb, yb, DARK)
    if isinstance(chart.x, LogScale) and chart.x.zero_slot:  # the break before the log axis
        mid = (chart.x.a + chart.x.start) / 2
        for dx in (-3, 2):
            c.line(mid + dx - 2, y1 + 3, mid + dx + 2, y1 - 3, DARK, width=1)
    scale = 2 if text_width(title, 2) <= c.width - 20 else 1
    c.text(c.width / 2, 10, title, BLACK, scale=scale, anchor="center")
    c.text((x0 + x1) / 2, y1 + 24, xlabel, BLACK, anchor="center")
    c.text(10, (y0 + y1) / 2 - text_width(ylabel) / 2, ylabel, BLACK, vertical=True)


def _legend(chart: Chart, series: list[Series]) -> None:
    c, (_, y0, x1, _) = chart.canvas, chart.area
    left = x1 + 14
    room = (c.width - left - 26) // ADVANCE
    for i, s in enumerate(series):
        y = y0 + 4 + 14 * i
        label = s.label if len(s.label) <= room else s.label[: room - 1] + "~"
        c.line(left, y + 3, left + 16, y + 3, s.color or BLACK)
        c.text(left + 22, y, label, BLACK)


def line_chart(
    series: list[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    logy: bool = False,
    ylim: tuple[float, float] | None = None,
    size: tuple[int, int] = (780, 420),
) -> Chart:
    width, height = size
    series = [Series(s.label, s.x, s.y, s.color or PALETTE[i % 10]) for i, s in enumerate(series)]
    area = (LEFT, TOP, width - RIGHT, height - BOTTOM)
    xs = [x for s in series for x, y in zip(s.x, s.y, strict=True) if _ok(x) and _ok(y)]
    ys = [y for s in series for y in s.y if _ok(y) and (not logy or y > 0)]
    if logx:
        xscale = LogScale(xs, area[0], area[2], zero_slot=0 in xs)
    else:
        xscale = LinearScale(min(xs, default=0), max(xs, default=1), area[0], area[2])
    lo, hi = ylim or (min(ys, default=0.0), max(ys, default=1.0))
    yscale = LogScale(ys, area[3], area[1]) if logy else LinearScale(lo, hi, area[3], area[1])
    chart = Chart(Canvas(width, height), xscale, yscale, area)
    _axes(chart, title, xlabel, ylabel)
    chart.canvas.clip = area
    for s in series:
        points = _points(s, chart)
        for a, b in zip(points[:-1], points[1:], strict=True):
            if a and b:
                chart.canvas.line(*a, *b, s.color)
        for p in points:
            if p:
                chart.canvas.marker(*p, s.color)
    if not ys:
        chart.canvas.text((area[0] + area[2]) / 2, (area[1] + area[3]) / 2, "no data", DARK,
                          anchor="center")  # fmt: skip
    chart.canvas.clip = None
    _legend(chart, series)
    return chart
