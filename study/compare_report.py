"""The figures and `report.html` of a comparison (`strata study RUN_A RUN_B ...`).

Design choices:
- Every curve is one line per run over the same x axis (tokens seen, log scale, as in
  a one-run report), colours from the palette in run order; the parent added for a
  fork is drawn up to the fork step, so it leads into the fork's line.
- Differences are each run minus the first run (the reference) at the steps both
  published; edited documents get one line per (run, document).
- The page: the runs (source, revisions, fork: parent, step and changed keys), one
  sentence per run, the last revision of each run, the differences at the last step
  each run shares with the reference, the edited documents at every revision, then the
  figures. Self-contained like the one-run report; user text is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strata.study.figures import Figure, Line, Panel, chart_figure, x_axis
from strata.study.report import EXPLAIN, STYLE, esc, figure_html, fmt

HEADLINE = ["run", "revision", "step", "tokens", "val_loss", "val_bpb", "mem_all", "mem_seen"]
EXPLAIN = EXPLAIN | {
    "compare_loss": "Validation loss and bits per byte of every run on the same windows "
    "(the first run's validation split).",
    "compare_mem": "Memorised fraction of the same sample of training sequences (the first "
    "run's data order decides what is seen).",
    "differences": "Each run minus the first run at the steps both published.",
    "documents": "Loss of each excluded or injected document (mean nats per token) and the "
    "fraction of its continuation reproduced after its first tokens, in every run.",
}


def _lines(rows: list[dict], names: list[str], column: str, xkey: str, key: str = "run") -> list:
    out = []
    for name in names:
        mine = [r for r in rows if r[key] == name]
        if any(r.get(column) is not None for r in mine):
            out.append(Line(f"run:{name}", name, [r[xkey] for r in mine],
                            [r.get(column) for r in mine]))  # fmt: skip
    return out


def figures(rows: list[dict], diffs: list[dict], docs: list[dict], names: list[str]) -> list:
    xkey, _ = x_axis(rows)
    loss = Panel(_lines(rows, names, "val_loss", xkey), "loss (nats per token)", "Cross-entropy")
    bpb = Panel(_lines(rows, names, "val_bpb", xkey), "bits per byte", "Bits per byte")
    mem_key = "mem_seen" if any(r.get("mem_seen") is not None for r in rows) else "mem_all"
    mem = Panel(_lines(rows, names, mem_key, xkey), f"{mem_key} (%)", ylim=(0.0, 1.0),
                percent=True)  # fmt: skip
    out = [chart_figure("compare_loss.png", "compare_loss", "Validation loss, every run", rows,
                  loss, bpb),
           chart_figure("compare_memorisation.png", "compare_mem", "Memorisation, every run", rows,
                  mem)]  # fmt: skip
    if diffs:
        d = Panel(_lines(diffs, names[1:], "d_val_loss", xkey), "val_loss minus the first run's",
                  hline=0.0)  # fmt: skip
        out.append(chart_figure("differences.png", "differences", f"Difference from {names[0]}",
                           diffs, d))  # fmt: skip
    if docs:
        for row in docs:
            row["line"] = f"{row['run']}: {row['document']}"
        labels = list(dict.fromkeys(r["line"] for r in docs))
        panels = [Panel(_lines(docs, labels, "doc_loss", xkey, "line"), "nats per token",
                        "Document loss"),
                  Panel(_lines(docs, labels, "doc_mem_acc", xkey, "line"), "continuation (%)",
                        "Continuation reproduced", ylim=(0.0, 1.0), percent=True)]  # fmt: skip
        out.append(chart_figure("documents.png", "documents", "Edited documents", docs, *panels))
    return out


def _table(rows: list[dict], names: list[str]) -> str:
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{esc(_short(r.get(n)))}</td>" for n in names)
                   + "</tr>" for r in rows)  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def _runs(runs: list) -> str:
    rows = []
    for b in runs:
        revs = b.target.revisions
        fork = (f"fork of {b.fork['parent_revision']} of {b.fork['parent_run']}; changed: "
                + (", ".join(b.fork["changed"]) or "nothing")) if b.fork else ""  # fmt: skip
        rows.append({"run": b.name, "source": str(b.target.source),
                     "revisions": f"{len(revs)} (steps {revs[0].step} .. {revs[-1].step})",
                     "fork": fork})  # fmt: skip
    return _table(rows, ["run", "source", "revisions", "fork"])


def _story(rows: list[dict], names: list[str]) -> str:
    parts = []
    for name in names:
        mine = [r for r in rows if r["run"] == name]
        parts.append(f"{name}: val_loss {fmt(mine[0].get('val_loss'))} at step "
                     f"{mine[0]['step']} to {fmt(mine[-1].get('val_loss'))} at step "
                     f"{mine[-1]['step']}.")  # fmt: skip
    return "".join(f"<p>{esc(p)}</p>" for p in parts)


def write(out: Path, runs: list, plan, rows: list, diffs: list, docs: list, notes: list) -> Path:
    """The PNGs and report.html into `out`; returns the report's path."""
    names = [b.name for b in runs]
    pictures: list[Figure] = figures(rows, diffs, docs, names)
    for fig in pictures:
        (out / fig.name).write_bytes(fig.png)
    last = [[r for r in rows if r["run"] == n][-1] for n in names]
    shared = [[d for d in diffs if d["run"] == n][-1:] for n in names[1:]]
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Study of {esc(', '.join(names))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{len(runs)} runs side by side</h1>", _runs(runs),
        f"<p class=note>Every run evaluated on {esc(str(plan.dataset))} "
        f"({plan.evalset.inputs.shape[0]} validation windows of {plan.seq_len} tokens).</p>",
        _story(rows, names), "<h2>Last revision of each run</h2>", _table(last, HEADLINE),
    ]  # fmt: skip
    if diffs:
        cols = ["run", "reference", "step", *(k for k in diffs[0] if k.startswith("d_"))]
        parts += ["<h2>Difference at the last shared step</h2>",
                  _table([d for group in shared for d in group], cols)]  # fmt: skip
    if docs:
        cols = ["document", "edited_by", "run", "revision", "step", "doc_loss", "doc_mem",
                "doc_mem_acc"]  # fmt: skip
        parts += ["<h2>Edited documents at every revision</h2>", _table(docs, cols)]
    parts += [f"<p class=note>{esc(n)}</p>" for n in notes]
    parts += ['<p class=note>Every column: <a href="metrics.csv">metrics.csv</a>, '
              '<a href="differences.csv">differences.csv</a>, '
              '<a href="documents.csv">documents.csv</a>.</p>']  # fmt: skip
    parts += [*(figure_html(f, EXPLAIN) for f in pictures), "</body></html>"]
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
