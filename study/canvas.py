"""An RGB raster to draw plots on: rectangles, thick lines, markers and bitmap text.

Design choices:
- The image is a numpy (H, W, 3) uint8 array, white to start; (x, y) are pixel
  coordinates with y growing downwards. Everything drawn is clipped to an optional
  rectangle (the plot area), so lines never spill over the axes.
- Lines are drawn by stamping a `width`-pixel square at sub-pixel steps along the
  segment: no anti-aliasing, exact colours (which tests rely on).
- Text uses the 5x7 font (font.py), integer-scaled, anchored left/centre/right, and can
  be rotated a quarter turn for a vertical axis label.
"""

from __future__ import annotations

import numpy as np

from strata.study import font

Color = tuple[int, int, int]
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
DARK: Color = (90, 90, 90)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)
        self.clip: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (inclusive)

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def _bounds(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.clip or (0, 0, self.width - 1, self.height - 1)
        return max(x0, 0), max(y0, 0), min(x1, self.width - 1), min(y1, self.height - 1)

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), inclusive."""
        bx0, by0, bx1, by1 = self._bounds()
        xa, xb = sorted((round(x0), round(x1)))
        ya, yb = sorted((round(y0), round(y1)))
        xa, ya, xb, yb = max(xa, bx0), max(ya, by0), min(xb, bx1), min(yb, by1)
        if xa <= xb and ya <= yb:
            self.pixels[ya : yb + 1, xa : xb + 1] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 2):
        steps = int(max(abs(x1 - x0), abs(y1 - y0)) * 2) + 1
        offset = (width - 1) / 2
        for t in np.linspace(0.0, 1.0, steps + 1):
            x, y = x0 + (x1 - x0) * t - offset, y0 + (y1 - y0) * t - offset
            self.rect(x, y, x + width - 1, y + width - 1, color)

    def marker(self, x: float, y: float, color: Color, size: int = 5) -> None:
        half = size // 2
        self.rect(x - half, y - half, x + half, y + half, color)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        color: Color = BLACK,
        scale: int = 1,
        anchor: str = "left",
        vertical: bool = False,
    ) -> None:
        """Draw `text` with its top edge at y (its left edge at x, or centred / right)."""
        mask = font.render(text, scale)
        if vertical:
            mask = np.rot90(mask)  # reads bottom to top
        h, w = mask.shape
        shift = {"left": 0, "center": w // 2, "right": w}[anchor]
        left, top = round(x) - shift, round(y)
        bx0, by0, bx1, by1 = self._bounds()
        ys, xs = np.nonzero(mask)
        ys, xs = ys + top, xs + left
        keep = (xs >= bx0) & (xs <= bx1) & (ys >= by0) & (ys <= by1)
        self.pixels[ys[keep], xs[keep]] = color
