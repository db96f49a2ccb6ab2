"""The study's tables: `metrics.csv` (one row per revision) and `sources.csv` (long format).

Design choices:
- `metrics.csv` starts with the fixed columns of `FIRST`, then `norm/...`, `dnorm/...`
  and `moe/...` in the order the revisions introduce them. Every row has every column;
  a value that does not exist (no previous revision, an empty group, a dense model) is
  an empty cell, never 0 or NaN.
- `tokens` is the training tokens seen by the revision (`strata.json`), empty for a
  folder that does not record it. `last_batch_loss` is the trainer's loss on the batch
  that made revision N (step N-1's weights on batch N-1, measured before the update),
  copied from `strata.json`; older files call it `train_loss`.
- `sources.csv` is long: one row per (revision, source group), so any number of sources
  stays readable; `eval_tokens` / `eval_bytes` are the predicted tokens and their bytes
  from that source in the validation windows (not training tokens).
- Floats are written with 10 significant digits.
- `task/<task>/<metric>` columns: a study with `--tasks` computes them; without it, the
  ones the trainer recorded in `strata.json` (`train.eval_tasks`) are copied.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from strata.study.discover import Revision
from strata.study.routing import moe_columns

FIRST = [
    "revision", "step", "tokens", "val_loss", "val_bpb", "mem_seen", "mem_unseen", "n_seen",
    "n_unseen", "mem_all", "mem_acc_seen", "mem_acc_unseen", "mem_acc_all", "sample_loss_seen",
    "sample_loss_unseen", "sample_loss_all", "last_batch_loss",
    "val_tokens", "val_bytes",
]  # fmt: skip
SOURCE_COLUMNS = [
    "revision", "step", "tokens", "source", "eval_tokens", "eval_bytes", "loss", "bpb",
]  # fmt: skip


def metric_row(rev: Revision, record: dict[str, Any]) -> dict[str, Any]:
    head = {"revision": rev.name, "step": rev.step, "tokens": rev.tokens}
    last_batch_loss = {"last_batch_loss": rev.meta.last_batch_loss if rev.meta else None}
    return head | record["row"] | last_batch_loss | moe_columns(rev.meta) | recorded_tasks(rev)


def recorded_tasks(rev: Revision) -> dict[str, float | None]:
    """The `task/...` columns the trainer recorded (`train.eval_tasks`), if any; a study
    with `--tasks` replaces those it computes itself."""
    tasks = rev.meta.extra.get("tasks") if rev.meta is not None else None
    columns = tasks.get("columns") if isinstance(tasks, dict) else None
    if not isinstance(columns, dict):
        return {}

    def number(v: Any) -> bool:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))

    return {k: v for k, v in columns.items() if str(k).startswith("task/") and number(v)}


def source_rows(rev: Revision, record: dict[str, Any]) -> list[dict[str, Any]]:
    head = {"revision": rev.name, "step": rev.step, "tokens": rev.tokens}
    return [head | s for s in record["sources"]]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    seen = dict.fromkeys(FIRST)
    for row in rows:
        seen |= dict.fromkeys(k for k in row if k.startswith(("norm/", "dnorm/")))
    for row in rows:
        seen |= dict.fromkeys(k for k in row if k not in seen)
    return list(seen)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def write_csv(path: Path, names: list[str], rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows([cell(row.get(name)) for name in names] for row in rows)
    tmp.replace(path)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV this module wrote, as strings (for tests and tools)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
