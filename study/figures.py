"""Which plots the report shows, chosen from the metric rows (one PNG each).

Design choices:
- This module decides *what* is drawn (a `LineChart` of panels and lines, or a
  `HeatmapChart`); `charts.py` draws it with matplotlib and `style.py` holds the look.
  matplotlib is imported only when a figure's PNG is first asked for
  (`Figure.png`), so `import strata.study` does not load it.
- x is the training tokens each revision has seen, on a log axis with 0 (step 0) in a
  slot of its own at the left (style.py); a folder whose revisions do not record
  tokens is plotted against steps instead, the same way.
- Loss has two panels, since nats per token and bits per byte are different units.
- Norm plots draw the per-kind aggregates (all layers' attention together, ...) so
  the picture stays readable for deep models; per-layer numbers are in the CSV. A
  line's `key` (the metric, or the parameter kind for norms and dnorm) picks its
  colour, so a kind has one colour in both figures.
- Per-source bpb draws the `MAX_SOURCES` sources with the most validation tokens.
- A figure is (file name, title, caption, chart); the caption keys the report's
  explanation of the metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from strata.run import RevisionMeta
from strata.study.routing import fractions

MAX_SOURCES = 8
DNORM_LABEL = r"$\|W - W_\mathrm{prev}\| \,/\, \|W_\mathrm{prev}\|$ (log scale)"
MEM_LABELS = {
    "mem_seen": "mem_seen (already trained on)",
    "mem_unseen": "mem_unseen (not yet trained on)",
    "mem_all": "mem_all (all sampled sequences)",
}


@dataclass
class Line:
    key: str  # metric or parameter kind: picks the colour (style.COLORS)
    label: str
    x: list[float | None]
    y: list[float | None]  # None: missing, breaks the line


@dataclass
class Panel:
    lines: list[Line]
    ylabel: str
    title: str = ""
    logy: bool = False
    ylim: tuple[float, float] | None = None
    percent: bool = False  # y is a fraction, labelled in %
    hline: float | None = None  # a dashed reference level


@dataclass
class LineChart:
    title: str
    xlabel: str
    panels: list[Panel]


@dataclass
class HeatmapChart:
    title: str
    matrix: np.ndarray  # (rows, columns), NaN where missing
    row_labels: list[str]
    col_labels: list[str]
    xlabel: str
    ylabel: str
    bar_label: str
    marks: list[float] = field(default_factory=list)  # levels marked on the colour bar


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    chart: LineChart | HeatmapChart

    @cached_property
    def png(self) -> bytes:
        from strata.study import charts  # matplotlib: loaded on first use

        return charts.png(self.chart)


def x_axis(rows: list[dict[str, Any]]) -> tuple[str, str]:
    if all(r.get("tokens") is not None for r in rows):
        return "tokens", "training tokens seen (log scale)"
    return "step", "training step (log scale)"


def _line(rows: list[dict], column: str, label: str | None = None, key: str | None = None) -> Line:
    """The column over the revisions; `key` (default: the column) picks the colour."""
    xkey, _ = x_axis(rows)
    ys = [r.get(column) for r in rows]
    return Line(key or column, label or column, [r[xkey] for r in rows], ys)


def _present(rows: list[dict], key: str) -> bool:
    return any(r.get(key) is not None for r in rows)


def _kinds(rows: list[dict], prefix: str) -> list[str]:
    names = dict.fromkeys(k for r in rows for k in r if k.startswith(prefix))
    return [k for k in names if not k[len(prefix) :].startswith("layers.")]


def chart_figure(name: str, caption: str, title: str, rows: list[dict], *panels: Panel) -> Figure:
    return Figure(name, title, caption, LineChart(title, x_axis(rows)[1], list(panels)))


def curves(rows: list[dict[str, Any]]) -> list[Figure]:
    loss = [_line(rows, k) for k in ("val_loss", "last_batch_loss") if _present(rows, k)]
    bpb = [_line(rows, "val_bpb")] if _present(rows, "val_bpb") else []
    loss_panels = [Panel(loss, "loss (nats per token)", "Cross-entropy")]
    loss_panels += [Panel(bpb, "bits per byte", "Validation bits per byte")] if bpb else []
    mem_keys = ("mem_seen", "mem_unseen") if _present(rows, "n_seen") else ("mem_all",)
    mem = [_line(rows, k, MEM_LABELS[k]) for k in mem_keys]

    def like(k: str, prefix: str) -> Line:  # mem_seen's colour and wording, another column
        column = k.replace("mem_", prefix)
        return _line(rows, column, MEM_LABELS[k].replace(k, column), k)

    acc = [like(k, "mem_acc_") for k in mem_keys]
    gap = [like(k, "sample_loss_") for k in mem_keys]
    gap += [_line(rows, "val_loss", "val_loss (validation windows)")] if loss else []
    norms = [_line(rows, k, k[5:], k[5:]) for k in _kinds(rows, "norm/") if k != "norm/total"]
    deltas = [_line(rows, k, k[6:], k[6:]) for k in _kinds(rows, "dnorm/")]
    return [
        chart_figure("loss.png", "loss", "Validation loss (nats/token) and bits per byte", rows,
               *loss_panels),
        chart_figure("memorisation.png", "memorisation",
                     "Memorisation of sampled training sequences", rows,
                     Panel(mem, "sequences memorised (%)", "Exact continuation", ylim=(0.0, 1.0),
                           percent=True),
                     Panel(acc, "continuation tokens right (%)", "Per-token accuracy",
                           ylim=(0.0, 1.0), percent=True)),
        chart_figure("seen_unseen.png", "seen_unseen", "Loss on sampled training sequences",
                     rows, Panel(gap, "loss (nats per token)", "Seen against not yet seen")),
        chart_figure("norms.png", "norms", "L2 norm of each parameter kind", rows,
               Panel(norms, "L2 (Frobenius) norm")),
        chart_figure("dnorm.png", "dnorm", "Relative change since the previous revision", rows,
               Panel(deltas, DNORM_LABEL, logy=True)),
    ]  # fmt: skip


def per_source(rows: list[dict], source_rows: list[dict[str, Any]]) -> list[Figure]:
    if not source_rows:
        return []
    xkey, _ = x_axis(rows)
    last = max(r["step"] for r in source_rows)
    top = sorted((r for r in source_rows if r["step"] == last), key=lambda r: -r["eval_tokens"])
    lines = []
    for name in [r["source"] for r in top[:MAX_SOURCES]]:
        by_rev = {r["revision"]: r["bpb"] for r in source_rows if r["source"] == name}
        ys = [by_rev.get(r["revision"]) for r in rows]
        lines.append(Line(f"source:{name}", name, [r[xkey] for r in rows], ys))
    return [chart_figure("sources.png", "sources", "Bits per byte by source", rows,
                   Panel(lines, "validation bits per byte"))]  # fmt: skip


def moe(rows: list[dict], metas: list[RevisionMeta | None]) -> list[Figure]:
    layers = fractions(metas)
    if not layers:
        return []
    ratio = [_line(rows, f"moe/{layer}/max_mean_ratio", layer) for layer in layers]
    balance = Panel(ratio, "busiest / mean expert load", hline=1.0)
    out = [chart_figure("moe_balance.png", "moe_balance", "MoE load: busiest expert / mean expert",
                  rows, balance)]  # fmt: skip
    steps = [str(r["step"]) for r in rows]
    for layer, matrix in layers.items():
        title = f"Routed fraction per expert, {layer}"
        experts = [f"e{i}" for i in range(matrix.shape[0])]
        chart = HeatmapChart(title, matrix, experts, steps, "revision (training step)",
                             "expert", "fraction of routed tokens (white line: 1/experts)",
                             [1.0 / matrix.shape[0]])  # fmt: skip
        out.append(Figure(f"moe_{layer}.png", title, "moe_heatmap", chart))
    return out


def tasks(rows: list[dict], chance: dict[str, float | None]) -> list[Figure]:
    """One panel per task (its first metric, with the chance level dashed), at most
    `MAX_SOURCES` tasks."""
    names = list(dict.fromkeys(k.split("/")[1] for r in rows for k in r if k.startswith("task/")))
    panels = []
    for task in names[:MAX_SOURCES]:
        own = (k for r in rows for k in r if k.startswith(f"task/{task}/"))
        metrics = [k for k in dict.fromkeys(own) if not k.endswith("_stderr")]
        if metrics:
            line = _line(rows, metrics[0], metrics[0].split("/")[-1], f"task:{task}")
            panels.append(Panel([line], metrics[0].split("/")[-1], task, ylim=(0.0, 1.0),
                                percent=True, hline=chance.get(task)))  # fmt: skip
    if not panels:
        return []
    return [chart_figure("tasks.png", "tasks", "Downstream tasks (lm-evaluation-harness)",
                         rows, *panels)]  # fmt: skip
