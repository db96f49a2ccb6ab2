"""Which plots the report shows, drawn from the metric rows (one PNG each).

Design choices:
- x is the training tokens each revision has seen, on a log axis with 0 (step 0) in a
  slot of its own at the left (scales.py); a folder whose revisions do not record
  tokens is plotted against steps instead, the same way.
- Norm plots draw the per-kind aggregates (all layers' attention together, ...) so
  the picture stays readable for deep models; per-layer numbers are in the CSV.
- Per-source bpb draws the `MAX_SOURCES` sources with the most validation tokens.
- A figure is (file name, title, caption, PNG bytes); the caption is the report's
  explanation of the metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata.study.heatmap import heatmap_png
from strata.study.plot import Series, line_chart
from strata.study.routing import fractions

MAX_SOURCES = 8


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes


def x_axis(rows: list[dict[str, Any]]) -> tuple[str, str]:
    if all(r.get("tokens") is not None for r in rows):
        return "tokens", "training tokens seen (log scale)"
    return "step", "step (log scale)"


def _series(rows: list[dict], key: str, label: str | None = None) -> Series:
    xkey, _ = x_axis(rows)
    return Series(label or key, [r[xkey] for r in rows], [r.get(key) for r in rows])


def _present(rows: list[dict], key: str) -> bool:
    return any(r.get(key) is not None for r in rows)


def _kinds(rows: list[dict], prefix: str) -> list[str]:
    names = dict.fromkeys(k for r in rows for k in r if k.startswith(prefix))
    return [k for k in names if not k[len(prefix) :].startswith("layers.")]


def _figure(name: str, caption: str, title: str, series: list[Series], xlabel: str,
            ylabel: str, **options: Any) -> Figure:  # fmt: skip
    chart = line_chart(series, title, xlabel, ylabel, **options)
    return Figure(name, title, caption, chart.png())


def curves(rows: list[dict[str, Any]]) -> list[Figure]:
    _, xlabel = x_axis(rows)
    loss = [_series(rows, k) for k in ("val_loss", "val_bpb", "train_loss") if _present(rows, k)]
    mem_keys = ("mem_seen", "mem_unseen") if _present(rows, "n_seen") else ("mem_all",)
    mem = [_series(rows, k) for k in mem_keys]
    norms = [_series(rows, k, k[5:]) for k in _kinds(rows, "norm/") if k != "norm/total"]
    deltas = [_series(rows, k, k[6:]) for k in _kinds(rows, "dnorm/")]
    return [
        _figure("loss.png", "loss", "Validation loss (nats/token) and bits per byte", loss,
                xlabel, "value"),
        _figure("memorisation.png", "memorisation", "Memorised fraction of training sequences",
                mem, xlabel, "fraction memorised", ylim=(0.0, 1.0)),
        _figure("norms.png", "norms", "L2 norm of each parameter kind", norms, xlabel,
                "L2 norm"),
        _figure("dnorm.png", "dnorm", "Relative change since the previous revision", deltas,
                xlabel, "||W - W_prev|| / ||W_prev||", logy=True),
    ]  # fmt: skip


def per_source(rows: list[dict], source_rows: list[dict[str, Any]]) -> list[Figure]:
    if not source_rows:
        return []
    xkey, xlabel = x_axis(rows)
    last = max(r["step"] for r in source_rows)
    top = sorted((r for r in source_rows if r["step"] == last), key=lambda r: -r["eval_tokens"])
    series = []
    for name in [r["source"] for r in top[:MAX_SOURCES]]:
        by_rev = {r["revision"]: r["bpb"] for r in source_rows if r["source"] == name}
        series.append(
            Series(name, [r[xkey] for r in rows], [by_rev.get(r["revision"]) for r in rows])
        )
    return [_figure("sources.png", "sources", "Bits per byte by source", series, xlabel,
                    "bits per byte")]  # fmt: skip


def moe(rows: list[dict], metas: list[dict | None]) -> list[Figure]:
    layers = fractions(metas)
    if not layers:
        return []
    _, xlabel = x_axis(rows)
    ratio = [_series(rows, f"moe/{layer}/max_mean_ratio", layer) for layer in layers]
    out = [_figure("moe_balance.png", "moe_balance", "MoE load: busiest expert / mean expert",
                   ratio, xlabel, "max / mean")]  # fmt: skip
    steps = [str(r["step"]) for r in rows]
    for layer, matrix in layers.items():
        experts = [f"e{i}" for i in range(matrix.shape[0])]
        png = heatmap_png(matrix, experts, steps, f"Routed fraction per expert, {layer}",
                          "revision (step)", "expert")  # fmt: skip
        out.append(Figure(f"moe_{layer}.png", f"Routed fraction per expert, {layer}",
                          "moe_heatmap", png))  # fmt: skip
    return out
