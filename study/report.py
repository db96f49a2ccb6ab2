"""`report.html`: one self-contained page that tells the run's story.

Design choices:
- Self-contained: the CSS is inline and every image is a base64 `data:` URI, so the
  file can be mailed or archived alone. The only links are to `metrics.csv` and
  `sources.csv`, written next to it.
- Order: header (run, model, data, settings), a few sentences computed from the
  numbers (loss from first to last revision, memorisation of seen vs unseen data),
  the table of headline columns, then each plot with a short explanation. Definitions
  are the ones in docs/study.md.
- Everything user-provided (names, paths, sources) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from strata.study.figures import Figure
from strata.study.tables import cell

TABLE = ["revision", "step", "tokens", "val_loss", "val_bpb", "sample_loss_seen",
         "sample_loss_unseen", "mem_seen", "mem_unseen", "mem_acc_seen",
         "mem_acc_unseen"]  # fmt: skip
SUMMARY = {
    "model": ("preset", "family", "d_model", "n_layers", "n_heads", "vocab_size"),
    "train": ("seq_len", "global_batch_size", "max_steps", "seed"),
    "optim": ("lr", "schedule", "warmup_steps"),
}
EXPLAIN = {
    "loss": "Mean cross-entropy per predicted token (nats) on fixed validation windows, and "
    "bits per byte: the summed cross-entropy divided by ln 2 times the UTF-8 bytes those "
    "tokens stand for, comparable across tokenizers. last_batch_loss is the trainer's "
    "loss on the batch that made the revision: step N-1's weights on batch N-1, before "
    "the update to step N (so it lags the revision's own weights by one step).",
    "memorisation": "A training sequence is memorised when, prompted with its first tokens, "
    "greedy decoding reproduces the next tokens exactly (Pythia's definition); the right "
    "panel is the fraction of those continuation tokens it gets right, a softer measure. Seen "
    "sequences were in a batch the revision had trained on (from the data-order contract), "
    "unseen ones were trained on later, so they measure what is predictable without "
    "memorisation.",
    "seen_unseen": "Mean loss (teacher-forced) on the same sampled training sequences as the "
    "memorisation test, split into those the revision had trained on and those it had not "
    "seen yet: the gap between the two lines is what training on a sequence bought beyond "
    "what the model predicts of unseen text; val_loss for reference.",
    "norms": "Frobenius (L2) norm of each kind of parameter, all layers together: the token "
    "embedding, attention, MLP, the blocks' norms, the final norm and the output matrix.",
    "dnorm": "How far the weights moved since the previous revision, relative to their size: "
    "||W_N - W_prev|| / ||W_prev||. Revisions are log-spaced, so each point covers a longer "
    "stretch of training than the one before.",
    "sources": "Bits per byte of the validation tokens from each source group (the first "
    "path component of the document's source; for a run trained on a mixture, each "
    "mixture source's own validation windows), for the largest groups. All groups are "
    "in sources.csv.",
    "tasks": "Each task's first metric as lm-evaluation-harness computes it (its prompts, "
    "few-shot sampling and metric), at every revision; the dashed line is chance (the mean "
    "of 1 / choices of a multiple-choice task). Every metric and its stderr: metrics.csv.",
    "moe_balance": "For each MoE layer, the load of the busiest expert divided by the mean "
    "load: 1 is perfectly balanced.",
    "moe_heatmap": "Fraction of routed tokens each expert received, per revision.",
}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}
.meta td{text-align:left}p.note{color:#555}"""


def esc(value: Any) -> str:
    return html.escape(cell(value) if not isinstance(value, str) else value)


def _header(name: str, facts: dict[str, Any], config: dict[str, Any]) -> str:
    items = dict(facts)
    for section, keys in SUMMARY.items():
        values = config.get(section, {})
        items |= {f"{section}.{k}": values[k] for k in keys if k in values}
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items())
    return f"<h1>Study of {esc(name)}</h1><table class=meta>{rows}</table>"


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def story(rows: list[dict[str, Any]]) -> str:
    """A few sentences from the numbers: loss, memorisation, where the weights moved most."""
    first, last = rows[0], rows[-1]
    text = (
        f"{len(rows)} revisions from step {first['step']} to step {last['step']}. Validation "
        f"loss went from {fmt(first.get('val_loss'))} to {fmt(last.get('val_loss'))} nats per "
        f"token ({fmt(first.get('val_bpb'))} to {fmt(last.get('val_bpb'))} bits per byte)."
    )
    if last.get("n_seen") is not None:
        text += (
            f" At the last revision, {_pct(last.get('mem_seen'))} of the {last['n_seen']} "
            f"sampled sequences it had trained on were memorised, against "
            f"{_pct(last.get('mem_unseen'))} of the {last['n_unseen']} it had not seen yet."
        )
    if last.get("sample_loss_seen") is not None and last.get("sample_loss_unseen") is not None:
        text += (
            f" Its teacher-forced loss on the sampled sequences it had trained on is "
            f"{fmt(last['sample_loss_seen'])} nats per token, against "
            f"{fmt(last['sample_loss_unseen'])} on those not yet seen."
        )
    moved = [(r["dnorm/total"], i) for i, r in enumerate(rows) if r.get("dnorm/total")]
    if moved:
        change, i = max(moved)
        text += (
            f" The weights moved most between {rows[i - 1]['revision']} and "
            f"{rows[i]['revision']} (relative change {change:.3g})."
        )
    return f"<p>{html.escape(text)}</p>"


def _table(rows: list[dict[str, Any]]) -> str:
    names = [n for n in TABLE if any(n in r for r in rows)]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(_short(r.get(n)))}</td>" for n in names) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def figure_html(fig: Figure, explain: dict[str, str] = EXPLAIN) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f"<h2>{esc(fig.title)}</h2><p class=note>{esc(explain.get(fig.caption, ''))}</p>"
        f'<img alt="{esc(fig.title)}" src="data:image/png;base64,{data}">'
    )


def write_report(
    path: Path,
    name: str,
    facts: dict[str, Any],
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    figures: list[Figure],
) -> Path:
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>Study of {esc(name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        _header(name, facts, config),
        story(rows),
        "<h2>Revisions</h2>",
        _table(rows),
        '<p class=note>Every column: <a href="metrics.csv">metrics.csv</a>; per source: '
        '<a href="sources.csv">sources.csv</a>. Definitions: docs/study.md.</p>',
        *map(figure_html, figures),
        "</body></html>",
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
