"""`strata batch` answered from the run's data ledger alone (`RUN/data_ledger/`).

    strata batch RUN --source NAME      sequences per step from source NAME, and totals
    strata batch RUN --summary          per revision: tokens seen per source, and how many
                                        documents of each source were seen once, twice, ...
    strata batch RUN --step N | --doc ID [--source NAME]
                                        from the ledger when the run trained on a mixture
                                        or its prepared data is not there

Design choices:
- Everything here reads the ledger and `config.toml` only, never the prepared data, so
  the answers hold for a copied run without its dataset; decoded text is what needs the
  data, and the text output says so.
- Revisions are the run's manifest entries; a revision at step N has seen batches
  0 .. N-1, so its counts are the ledger's first N steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from strata.run import Manifest, RunPaths, locate
from strata.run.config import Config
from strata.run.ledger import INDEX, LEDGER_DIR, Ledger

NEEDS_DATA = "decoded text needs the prepared data (--dataset DIR)"


def open_ledger(run_dir: str | Path) -> tuple[RunPaths, Config, Ledger]:
    where = locate(run_dir)
    cfg = where.run.read_config() if where.kind == "run" else None
    if cfg is None:
        raise FileNotFoundError(f"{run_dir}: no config.toml; expected a run folder")
    folder = where.run.root / LEDGER_DIR
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"{folder}: no data ledger (runs trained before it have none)")
    return where.run, cfg, Ledger.read(folder)


def has_ledger(run_dir: str | Path) -> bool:
    try:
        return (locate(run_dir).run.root / LEDGER_DIR / INDEX).is_file()
    except (AttributeError, ValueError, OSError):
        return False


def _print(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(data) if args.format == "json" else "\n".join(lines))


def cmd_source(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    source = ledger.source_index(args.source)
    counts = ledger.counts_per_source()[:, source]  # (steps,)
    name = ledger.header.sources[source].name
    data = {"run": str(run.root), "source": name, "steps": int(ledger.steps),
            "sequences": int(counts.sum()), "tokens": int(counts.sum()) * cfg.train.seq_len,
            "per_step": counts.tolist()}  # fmt: skip
    shares = np.bincount(counts, minlength=counts.max(initial=0) + 1)
    lines = [f"source {name!r} of {run.root}: {data['sequences']} sequences "
             f"({data['tokens']} tokens) over {ledger.steps} steps"]  # fmt: skip
    lines += [f"  {n} sequence(s) a step: {k} step(s)" for n, k in enumerate(shares) if k]
    _print(args, data, lines)


def cmd_summary(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    names = [s.name for s in ledger.header.sources]
    revisions = [(e.revision, e.step) for e in Manifest.read(run.checkpoints).revisions]
    out, lines = [], [f"data seen by the revisions of {run.root} (from its data ledger):"]
    for revision, step in revisions:
        steps = min(step, ledger.steps)
        counts = ledger.counts_per_source(steps).sum(0) if steps else np.zeros(len(names))
        row = {"revision": revision, "step": step, "sources": {}}
        for i, name in enumerate(names):
            seen = ledger.seen_histogram(i, steps) if steps else {}
            tokens = int(counts[i]) * cfg.train.seq_len
            row["sources"][name] = {"tokens": tokens, "documents_seen": seen}
            times = ", ".join(f"{n} seen {t}x" for t, n in sorted(seen.items())) or "none seen"
            lines.append(f"  {revision}: {name}: {tokens} tokens; documents: {times}")
        out.append(row)
    _print(args, {"run": str(run.root), "revisions": out}, lines)


def cmd_step(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    if not 0 <= args.step < ledger.steps:
        raise ValueError(f"--step {args.step}: the ledger holds steps 0 .. {ledger.steps - 1}")
    rows = ledger.rows(args.step)
    names = [s.name for s in ledger.header.sources]
    listed = [{"row": j, "source": names[int(rows["source"][j])], "document": int(d),
               "window": int(rows["window"][j]), "epoch": int(rows["epoch"][j]),
               "seen_before": bool(rows["seen_before"][j])}
              for j, d in enumerate(rows["document"])]  # fmt: skip
    lines = [f"global batch {args.step} of {run.root} (from its data ledger; {NEEDS_DATA})"]
    lines += [f"  row {r['row']}  source {r['source']}  document {r['document']}  window "
              f"{r['window']}  epoch {r['epoch']}" for r in listed]  # fmt: skip
    _print(args, {"run": str(run.root), "step": args.step, "rows": listed}, lines)


def cmd_doc(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    source = ledger.source_index(args.source if args.source is not None else 0)
    steps = ledger.steps_with_document(source, args.doc)
    name = ledger.header.sources[source].name
    revisions = [
        {"revision": e.revision, "batches_seen": int((steps < e.step).sum())}
        for e in Manifest.read(run.checkpoints).revisions
    ]
    seen = [r for r in revisions if r["batches_seen"]]
    data = {"run": str(run.root), "source": name, "doc": args.doc,
            "steps": steps.tolist(), "revisions": seen}  # fmt: skip
    lines = [f"document {args.doc} of {name}: a window starting in it trained at "
             f"{len(steps)} step(s): {steps.tolist()[:50]}"]  # fmt: skip
    listed = ", ".join(f"{r['revision']} ({r['batches_seen']})" for r in seen) or "none"
    lines.append(f"revisions that have seen it (batches): {listed}")
    _print(args, data, lines)
