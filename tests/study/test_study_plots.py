"""The study's own PNG writer and plots: valid files, and lines where the data says."""

import struct
import zlib

import numpy as np
import pytest

from strata.study.font import render
from strata.study.heatmap import colormap, heatmap
from strata.study.plot import PALETTE, Series, line_chart
from strata.study.png import SIGNATURE, chunks, decode_png, encode_png


def test_png_is_valid_and_round_trips():
    image = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    data = encode_png(image)
    assert data[:8] == SIGNATURE
    tags = [tag for tag, _ in chunks(data)]
    assert tags == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks(data)[0][1][:10])
    assert (width, height, depth, colour) == (11, 7, 8, 2)
    raw = zlib.decompress(chunks(data)[1][1])  # independent of decode_png
    assert len(raw) == 7 * (1 + 11 * 3)
    assert np.array_equal(decode_png(data), image)
    broken = bytearray(data)
    broken[20] ^= 1  # inside IHDR: its CRC no longer matches
    with pytest.raises(ValueError, match="CRC"):
        decode_png(bytes(broken))


def test_font_draws_digits():
    zero = render("0")
    assert zero.shape == (7, 5)
    assert zero[0].tolist() == [False, True, True, True, False]
    assert render("10", scale=2).shape == (14, 22)


def test_line_lands_where_the_data_says():
    chart = line_chart(
        [Series("a", [1, 10, 100], [0.0, 0.5, 1.0]), Series("flat", [1, 100], [0.25, 0.25])],
        "t", "x", "y", logx=True, ylim=(0.0, 1.0),
    )  # fmt: skip
    pixels = decode_png(chart.png())
    assert pixels.shape == (420, 780, 3)
    blue, orange = PALETTE[0], PALETTE[1]
    # log x: 10 is halfway between 1 and 100; y = 0.5 halfway between 0 and 1
    assert chart.x(10) - chart.x(1) == pytest.approx(chart.x(100) - chart.x(10))
    assert chart.y(0.5) == pytest.approx((chart.y(0.0) + chart.y(1.0)) / 2)
    x0, y0, x1, y1 = chart.area
    assert x0 < chart.x(1) < chart.x(100) < x1 and y0 < chart.y(1.0) < chart.y(0.0) < y1
    for v in (1, 10, 100):
        px, py = round(chart.x(v)), round(chart.y({1: 0.0, 10: 0.5, 100: 1.0}[v]))
        assert tuple(pixels[py, px]) == blue
    row = round(chart.y(0.25))
    columns = range(round(chart.x(1)) + 3, round(chart.x(100)) - 3)
    assert all(tuple(pixels[row, c]) == orange for c in columns if abs(c - chart.x(3.16)) > 4)
    assert tuple(pixels[round(chart.y(0.9)), round(chart.x(10))]) != blue


def test_zero_sits_in_its_own_slot_on_a_log_axis():
    chart = line_chart([Series("s", [0, 100, 1000], [1.0, 2.0, 3.0])], "t", "x", "y")
    x0 = chart.area[0]
    assert chart.x(0) == x0 and chart.x(100) > x0 + 20
    assert [label for _, label in chart.x.ticks()][0] == "0"
    pixels = decode_png(chart.png())
    assert tuple(pixels[round(chart.y(1.0)), round(chart.x(0)) + 1]) == PALETTE[0]


def test_missing_values_break_the_line_and_empty_charts_draw():
    chart = line_chart([Series("s", [1, 10, 100], [1.0, None, 3.0])], "t", "x", "y")
    pixels = decode_png(chart.png())
    mid = round((chart.y(1.0) + chart.y(3.0)) / 2)
    assert tuple(pixels[mid, round(chart.x(10))]) != PALETTE[0]  # no segment across the gap
    empty = line_chart([Series("s", [0, 1], [None, None])], "t", "x", "y", logy=True)
    assert decode_png(empty.png()).shape == (420, 780, 3)


def test_heatmap_colours_cells():
    matrix = np.array([[0.0, 1.0], [0.5, np.nan]])
    canvas = heatmap(matrix, ["e0", "e1"], ["0", "8"], "routing", "step", "expert")
    pixels = canvas.pixels
    x0, y0, x1, y1 = 78, 40, 780 - 110, 420 - 50
    cx = [round(x0 + (j + 0.5) * (x1 - x0) / 2) for j in range(2)]
    cy = [round(y0 + (i + 0.5) * (y1 - y0) / 2) for i in range(2)]
    assert tuple(pixels[cy[0], cx[0]]) == colormap(0.0, 1.0) == (68, 1, 84)
    assert tuple(pixels[cy[0], cx[1]]) == colormap(1.0, 1.0) == (253, 231, 37)
    assert tuple(pixels[cy[1], cx[1]]) == (225, 225, 225)  # missing
