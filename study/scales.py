"""Axis scales for the plots: linear, log, and log with a slot for zero.

Design choices:
- A scale maps data values to pixel positions and lists its ticks as (value, label).
- Training tokens span decades and step 0 has 0 tokens, which no log axis can show.
  `LogScale(zero_slot=True)` keeps the log axis for positive values (from just below
  the smallest to just above the largest) and draws 0 in a slot of its own at the
  left edge, set apart by a gap and a break mark and labelled "0".
- Linear ticks are "nice" numbers (1, 2, 2.5, 5 x 10^k), five to ten per axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ZERO_GAP = 0.08  # fraction of the axis length reserved for the zero slot


def log_label(v: float) -> str:
    """1, 20, 500, 0.01, 2e6, 5e-5: short labels for log-axis ticks."""
    if 1e-3 <= v < 1e5:
        return f"{v:g}"
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def number_label(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals) != step * 10**decimals:  # 2.5 x 10^k needs one more
        decimals += 1
    return f"{v:.{decimals}f}"


class LinearScale:
    def __init__(self, lo: float, hi: float, a: float, b: float, pad: float = 0.05) -> None:
        if hi <= lo:
            half = abs(lo) * 0.1 or 1.0
            lo, hi = lo - half, hi + half
        span = hi - lo
        self.lo, self.hi = lo - span * pad, hi + span * pad
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def valid(self, v: float) -> bool:
        return math.isfinite(v)

    def ticks(self) -> list[tuple[float, str]]:
        raw = (self.hi - self.lo) / 6
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
        first = math.ceil(self.lo / step - 1e-9)
        values = [k * step for k in range(first, math.floor(self.hi / step + 1e-9) + 1)]
        return [(v, number_label(v, step)) for v in values]


class LogScale:
    """Log10 axis from just below the smallest positive value to just above the largest;
    with `zero_slot`, 0 maps to `a` and the positive values start a gap further along."""

    def __init__(self, values: Iterable[float], a: float, b: float, zero_slot: bool = False):
        positive = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
        lo, hi = (min(positive), max(positive)) if positive else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.04
        self.lo, self.hi = lo - pad, hi + pad
        self.zero_slot = zero_slot
        self.a, self.b = a, b
        self.start = a + (b - a) * ZERO_GAP if zero_slot else a

    def __call__(self, v: float) -> float:
        if v <= 0:
            return self.a
        frac = (math.log10(v) - self.lo) / (self.hi - self.lo)
        return self.start + frac * (self.b - self.start)

    def valid(self, v: float) -> bool:
        return math.isfinite(v) and (v > 0 or (v == 0 and self.zero_slot))

    def ticks(self) -> list[tuple[float, str]]:
        """Decades; also 2x and 5x when fewer than three decades are in range."""
        first, last = math.ceil(self.lo), math.floor(self.hi)
        every = max(1, math.ceil((last - first + 1) / 9))
        mantissas = (1,) if last - first >= 2 else (1, 2, 5)
        values = [m * 10.0**k for k in range(first - 1, last + 1, every) for m in mantissas]
        inside = [v for v in values if self.lo <= math.log10(v) <= self.hi]
        return ([(0.0, "0")] if self.zero_slot else []) + [(v, log_label(v)) for v in inside]
