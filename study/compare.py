"""`strata study RUN_A RUN_B ...`: several runs evaluated alike, in one report.

Design choices:
- One plan for every run: the first run's (its validation windows, its memorisation
  sample and that sample's seen/unseen split from the first run's data order, or
  `--data`), so every number compares across runs; `check_compatible` refuses a run
  whose tokenizer or vocabulary does not fit it. Each run's revisions are cached under
  `OUT/cache/<run>/`, keyed as in a one-run study.
- A fork (`RUN/fork.json`) whose parent is not among the runs gets its parent added,
  with the parent's revisions up to the fork step ("<parent> (parent)"), so the
  parent's curve leads into the fork's. Runs with the same name get `-2`, `-3`.
- `metrics.csv` is every run's rows with a first column `run`; `differences.csv` holds,
  per other run and step both have, the difference from the first run (the reference)
  of val_loss, val_bpb and the memorised fractions; `documents.csv`, for the documents
  any run excludes or injects (documents.py), their loss and memorisation at every
  revision of every run. The output folder defaults to `RUN_A/study/compare-<names>`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from strata.checkpoints.files import write_json_atomic
from strata.checkpoints.load import load
from strata.run.jsonfile import read_object
from strata.study import compare_report
from strata.study.cache import Cache, write_failed
from strata.study.data import make_plan
from strata.study.discover import Target, discover
from strata.study.documents import doc_scores, edited_docs
from strata.study.run import evaluate_all
from strata.study.settings import StudySettings
from strata.study.tables import columns, metric_row, write_csv

COMPARED = ("val_loss", "val_bpb", "mem_all", "mem_seen", "mem_unseen")


@dataclasses.dataclass
class Branch:
    """One run of a comparison."""

    name: str
    target: Target
    fork: dict[str, Any] | None = None  # its fork.json


def branches(paths: list[str | Path]) -> list[Branch]:
    """The runs, named uniquely, with the parent of a fork added when it is missing."""
    out: list[Branch] = []
    for path in paths:
        target = discover(path)
        fork = _fork(target)
        out.append(Branch(_unique(target.name, out), target, fork))
    listed = {b.target.run_dir.resolve() for b in out if b.target.run_dir}
    for branch in list(out):
        parent = Path(branch.fork["parent_run"]) if branch.fork else None
        if parent is None or not parent.is_dir() or parent.resolve() in listed:
            continue
        target = discover(parent)
        target.revisions = [r for r in target.revisions if r.step <= branch.fork["step"]]
        out.append(Branch(_unique(f"{target.name} (parent)", out), target, _fork(target)))
        listed.add(parent.resolve())
    return out


def _fork(target: Target) -> dict | None:
    path = target.run_dir / "fork.json" if target.run_dir else None
    return read_object(path) if path is not None and path.is_file() else None


def _unique(name: str, taken: list[Branch]) -> str:
    names, k = {b.name for b in taken}, 2
    unique = name
    while unique in names:
        unique, k = f"{name}-{k}", k + 1
    return unique


def differences(rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Per other run and step both have: its value minus the reference run's."""
    base = {r["step"]: r for r in rows if r["run"] == reference}
    out = []
    for row in rows:
        if row["run"] == reference or row["step"] not in base:
            continue
        ref = base[row["step"]]
        diff = {f"d_{k}": (row[k] - ref[k]) if row.get(k) is not None and ref.get(k) is not None
                else None for k in COMPARED}  # fmt: skip
        out.append({"run": row["run"], "reference": reference, "step": row["step"],
                    "tokens": row.get("tokens"), **diff})  # fmt: skip
    return out


def document_rows(runs: list[Branch], plan, settings: StudySettings, notes: list) -> list[dict]:
    """Every edited document's scores at every revision of every run."""
    docs = [d for b in runs for d in edited_docs(b.name, b.target.run_config, plan, notes)]
    rows = []
    for branch in runs if docs else []:
        for rev in branch.target.revisions:
            model = load(rev.path)
            for doc in docs:
                head = {"run": branch.name, "revision": rev.name, "step": rev.step,
                        "tokens": rev.tokens, "document": doc.label,
                        "edited_by": doc.run}  # fmt: skip
                rows.append(head | doc_scores(model, doc, plan, settings))
    return rows


def compare(paths: list[str | Path], out: str | Path | None = None, data: str | Path | None = None,
            *, settings: StudySettings | None = None, force: bool = False,
            quiet: bool = False) -> Path:  # fmt: skip
    """Study the runs at `paths` alike; returns the path of the combined `report.html`."""
    start, settings = time.perf_counter(), settings or StudySettings()
    runs = branches(paths)
    first = runs[0].target
    plan = make_plan(first, data, settings)
    suffix = "-".join(b.name.replace(" ", "_").replace("/", "_") for b in runs[1:])
    out = Path(out) if out is not None else first.default_out / f"compare-{suffix}"[:120]
    out.mkdir(parents=True, exist_ok=True)
    rows, evaluated = [], {}
    for branch in runs:
        cache = Cache(out / "cache" / branch.name.replace("/", "_"), force)
        records, done = evaluate_all(branch.target, plan, settings, cache, quiet)
        evaluated[branch.name] = done
        pairs = zip(branch.target.revisions, records, strict=True)
        rows += [{"run": branch.name} | metric_row(rev, rec) for rev, rec in pairs]
    notes: list[str] = []
    docs = document_rows(runs, plan, settings, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    diffs = differences(rows, runs[0].name)
    tmp = out / f".outputs.tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        write_csv(tmp / "metrics.csv", ["run", *columns(rows)], rows)
        write_csv(tmp / "differences.csv", list(diffs[0]) if diffs else ["run"], diffs)
        write_csv(tmp / "documents.csv", list(docs[0]) if docs else ["run"], docs)
        report = compare_report.write(tmp, runs, plan, rows, diffs, docs, notes)
        write_json_atomic(tmp / "study.json", {
            "runs": [{"name": b.name, "source": str(b.target.source), "fork": b.fork,
                      "revisions": [r.name for r in b.target.revisions]} for b in runs],
            "dataset": str(plan.dataset), "settings": settings.to_dict() | {"data_key": plan.key},
            "evaluated": evaluated, "notes": notes,
            "seconds": round(time.perf_counter() - start, 3),
        })  # fmt: skip
        for file in sorted(tmp.iterdir()):
            file.replace(out / file.name)
    except OSError as err:
        raise write_failed(err, out, "the report and tables") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"study: {len(runs)} runs, {len(rows)} revisions in "
              f"{time.perf_counter() - start:.1f}s -> {out / report.name}")  # fmt: skip
    return out / report.name
