"""The study's figures: valid PNGs, a log token axis that shows step 0, one colour per
metric, legends clear of the data, heatmaps with a colour bar."""

import io
import math
import struct
import subprocess
import sys
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex
from strata.study import charts, style
from strata.study import figures as figs

STEPS = [0, 1, 2, 4, 8, 16]
KINDS = ("embed", "attn", "mlp", "norms")


def make_rows() -> list[dict]:
    rows = []
    for i, step in enumerate(STEPS):
        row = {"revision": f"step{step}", "step": step, "tokens": step * 128,
               "val_loss": 5.6 - 0.3 * i, "val_bpb": 2.0 - 0.1 * i,
               "last_batch_loss": 5.7 - 0.3 * i,
               "n_seen": 0 if step == 0 else 4, "n_unseen": 4 if step else 8,
               "mem_seen": None if step == 0 else 0.25, "mem_unseen": 0.0, "mem_all": 0.1,
               "norm/total": 30.0 + i, "dnorm/total": 0.1 / step if step else None}  # fmt: skip
        for k, kind in enumerate(KINDS):
            row[f"norm/{kind}"] = 10.0 + k + i
            row[f"norm/layers.0.{kind}"] = 1.0 + k  # per layer: not drawn
            row[f"dnorm/{kind}"] = None if step == 0 else (k + 1) * 0.01 / step
        rows.append(row)
    return rows


def make_sources(rows: list[dict]) -> list[dict]:
    return [{"revision": r["revision"], "step": r["step"], "source": f"a_rather_long_source_{s}",
             "eval_tokens": 100 - s, "bpb": r["val_bpb"] + 0.1 * s}
            for r in rows for s in range(10)]  # fmt: skip


def make_metas(experts: int = 4) -> list:
    fraction = [1.0 / experts] * experts
    return [None] + [SimpleNamespace(moe_routing={"layers.0": {"fraction": fraction}})] * 5


@pytest.fixture(scope="module")
def all_figures() -> dict[str, figs.Figure]:
    rows = make_rows()
    out = figs.curves(rows) + figs.per_source(rows, make_sources(rows))
    out += figs.moe(rows, make_metas())
    return {f.name: f for f in out}


def drawn(figure: figs.Figure):
    fig = charts.draw(figure.chart)
    fig.canvas.draw()
    return fig


def test_every_figure_is_a_valid_png(all_figures):
    assert set(all_figures) == {"loss.png", "memorisation.png", "seen_unseen.png", "norms.png",
                                "dnorm.png", "sources.png", "moe_balance.png",
                                "moe_layers.0.png"}  # fmt: skip
    width, height = (round(v * style.DPI) for v in style.SIZE)
    for name, figure in all_figures.items():
        data = figure.png
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (width, height)
        pixels = matplotlib.image.imread(io.BytesIO(data))
        assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05, name  # not blank


def test_log_token_axis_shows_step_zero(all_figures):
    fig = drawn(all_figures["loss.png"])
    rows = make_rows()
    zero = style.zero_position([r["tokens"] for r in rows])
    assert zero == pytest.approx(128 / 10 ** (1 / 3))  # a third of a decade left of 128
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        left, right = ax.get_xlim()
        assert left < zero < 128 and right > 16 * 128
        ticks = dict(
            zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks(), strict=True)
        )
        assert ticks["0"] == pytest.approx(zero) and ticks["1k"] == pytest.approx(1000)
        assert "//" in [t.get_text() for t in ax.texts]  # the break before the log range
    points = [(x, y) for line in fig.axes[0].lines for x, y in line.get_xydata()]
    assert any(math.isclose(x, zero) and y == rows[0]["val_loss"] for x, y in points)  # step 0
    assert (2048, rows[-1]["val_loss"]) in points


def test_steps_when_tokens_are_missing():
    rows = [r | {"tokens": None} for r in make_rows()]
    chart = figs.curves(rows)[0].chart
    assert chart.xlabel.startswith("training step") and chart.panels[0].lines[0].x == STEPS


def line_colours(fig) -> dict[str, str]:
    return {line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.lines
            if not line.get_label().startswith("_")}  # fmt: skip


def test_a_metric_has_one_colour_everywhere(all_figures):
    norms, dnorm = (
        line_colours(drawn(all_figures["norms.png"])),
        line_colours(drawn(all_figures["dnorm.png"])),
    )
    assert set(norms) == set(KINDS) and set(dnorm) == set(KINDS) | {"total"}
    assert all(norms[k] == dnorm[k] == style.COLORS[k] for k in KINDS)
    assert len(set(dnorm.values())) == len(dnorm)  # distinct within a figure
    loss = line_colours(drawn(all_figures["loss.png"]))
    assert loss["val_loss"] == style.COLORS["val_loss"] != loss["last_batch_loss"]
    sources = line_colours(drawn(all_figures["sources.png"]))
    assert len(sources) == figs.MAX_SOURCES and len(set(sources.values())) == figs.MAX_SOURCES


@pytest.mark.parametrize("name", ["loss.png", "sources.png", "dnorm.png"])
def test_legend_is_clear_of_the_data(all_figures, name):
    fig = drawn(all_figures[name])
    legend = fig.legends[0].get_window_extent()
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == sum(len(p.lines) for p in all_figures[name].chart.panels)
    for ax in fig.axes:
        assert ax.get_legend() is None
        assert not legend.overlaps(ax.get_window_extent())  # below the axes, outside them
    assert legend.y1 < min(ax.get_window_extent().y0 for ax in fig.axes)
    assert 0 <= legend.x0 and legend.x1 <= fig.bbox.width  # and inside the picture


def test_missing_values_break_lines_and_empty_panels_say_so():
    line = figs.Line("val_loss", "v", [0, 1, 10, 100], [1.0, 2.0, None, 3.0])
    empty = figs.Line("mem_all", "m", [0, 1], [None, None])
    chart = figs.LineChart("t", "x", [figs.Panel([line], "y"), figs.Panel([empty], "y", logy=True)])
    fig = charts.draw(chart)
    main = next(ln for ln in fig.axes[0].lines if ln.get_label() == "v")
    ys = main.get_ydata()
    assert math.isnan(ys[0]) and math.isnan(ys[2]) and list(ys[[1, 3]]) == [2.0, 3.0]
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert "no data" in texts[1] and "no data" not in texts[0]
    assert fig.axes[1].get_yscale() == "log"


def test_heatmap_has_cells_and_a_colour_bar():
    matrix = np.array([[0.0, 1.0], [0.5, np.nan]])
    chart = figs.HeatmapChart("routing", matrix, ["e0", "e1"], ["0", "8"], "step", "expert",
                              "fraction", [0.5])  # fmt: skip
    fig = charts.draw(chart)
    (image,) = fig.axes[0].images
    assert image.colorbar is not None and image.colorbar.ax in fig.axes
    assert image.get_clim() == (0.0, 1.0)
    data = image.get_array()
    assert data.mask.tolist() == [[False, False], [False, True]] and data[1, 0] == 0.5
    assert to_hex(image.cmap(np.ma.masked_invalid([np.nan]))[0]) == charts.MISSING
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "8"]


def test_short_tick_labels():
    assert [style.short_number(v) for v in (1, 500, 1e3, 2.5e4, 3e6, 1e9, 2e12)] == [
        "1", "500", "1k", "25k", "3M", "1B", "2T"]  # fmt: skip
    assert style.zero_position([1, 10]) is None


def test_importing_the_study_does_not_load_matplotlib():
    code = "import sys, strata.study; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
