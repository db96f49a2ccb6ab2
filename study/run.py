"""`study()`: evaluate every revision of a run (cached), then write CSVs, plots and the report.

Design choices:
- Steps: find the revisions (discover.py), fix the data (data.py: validation windows,
  memorisation sample), evaluate each revision or take it from the cache (cache.py),
  then write `metrics.csv`, `sources.csv`, the PNGs, `report.html` and `study.json`
  (what was evaluated and what was cached, the settings, the time taken) into a
  temporary folder `OUT/.outputs.tmp-<pid>` and rename them into place, so a failed
  write (disk full) leaves the earlier outputs as they were; the cache entries written
  before the failure stay and a rerun continues from them.
- One revision at a time is in memory, plus the previous one's parameters on the CPU
  for `dnorm` (reloaded from disk when the previous revision came from the cache).
- The progress bar (tqdm) shows how many revisions came from the cache; it is off
  with `quiet` or when stderr is not a terminal. Unless `quiet`, one summary line is
  printed at the end. Folders left out for a non-canonical name (`step01`) are one
  `note:` line each on stderr, `quiet` or not, and listed in `study.json` (`ignored`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from strata.checkpoints.files import write_json_atomic
from strata.checkpoints.load import load, load_config
from strata.model import GPT
from strata.study import figures as figs
from strata.study.cache import Cache, write_failed
from strata.study.data import Plan, check_compatible, make_plan
from strata.study.discover import Revision, Target, discover
from strata.study.evaluate import evaluate
from strata.study.memorise import memorisation, sample_losses
from strata.study.norms import norm_columns, parameters
from strata.study.report import write_report
from strata.study.settings import StudySettings
from strata.study.tables import (
    SOURCE_COLUMNS,
    columns,
    metric_row,
    source_rows,
    write_csv,
)
from strata.tokenizer.fsutil import leftover_dirs
from tqdm import tqdm


def evaluate_revision(
    model: torch.nn.Module,
    rev: Revision,
    plan: Plan,
    settings: StudySettings,
    params: dict[str, torch.Tensor],
    prev: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """Everything measured on one revision (`params`: its weights on the CPU): the record."""
    vocab = plan.index["vocab_size"]  # the dataset's vocabulary, for every revision
    row, sources = evaluate(model, plan.evalset, settings.batch_size, vocab)
    mem_row, detail = memorisation(
        model, plan.mem, settings.mem_prefix, settings.batch_size, rev.step, vocab
    )
    loss_row, losses = sample_losses(model, plan.mem, settings.batch_size, rev.step, vocab)
    mem_row, detail = mem_row | loss_row, detail | {"loss": losses}
    first = plan.mem.first_step
    return {
        "revision": rev.name,
        "step": rev.step,
        "row": row | mem_row | norm_columns(params, prev),
        "sources": sources,
        "memorisation": {
            "windows": plan.mem.windows.tolist(),
            "first_step": first.tolist() if first is not None else None,
            **detail,
        },
    }


def load_revision(rev: Revision, plan: Plan, settings: StudySettings) -> torch.nn.Module:
    model = load(rev.path, device=settings.torch_device())
    span = settings.mem_prefix + settings.mem_length
    check_compatible(rev.path, rev.meta, model.config, plan, span)
    return model


def evaluate_all(
    target: Target, plan: Plan, settings: StudySettings, cache: Cache, quiet: bool
) -> tuple[list[dict], list[str]]:
    """(one record per revision, names of the revisions evaluated rather than cached)."""
    records: list[dict] = []
    evaluated: list[str] = []
    prev: tuple[Revision, str, dict | None] | None = None  # revision, weights sha, params
    show = not quiet and sys.stderr.isatty()
    bar = tqdm(target.revisions, desc="study", unit="rev", disable=not show)
    for rev in bar:
        sha = rev.weights_sha256()
        key = settings.key(data=plan.key, weights=sha, previous=prev[1] if prev else None)
        record, params = cache.get(rev.name, key), None
        if record is None:
            model = load_revision(rev, plan, settings)
            params = parameters(model)
            prev_params = prev[2] if prev else None
            if prev is not None and prev_params is None:
                prev_params = parameters(load(prev[0].path))
            record = evaluate_revision(model, rev, plan, settings, params, prev_params)
            cache.put(rev.name, key, record)
            evaluated.append(rev.name)
        records.append(record)
        bar.set_postfix(cached=len(records) - len(evaluated), evaluated=len(evaluated))
        prev = (rev, sha, params)
    return records, evaluated


def _facts(target: Target, plan: Plan, settings: StudySettings, evaluated: int) -> dict:
    revs = target.revisions
    with torch.device("meta"):
        params = GPT(load_config(revs[-1].path)).num_params()
    mem = plan.mem
    return {
        "source": str(target.source),
        "revisions": f"{len(revs)} (steps {revs[0].step} .. {revs[-1].step})",
        "parameters": f"{params:,}",
        "dataset": str(plan.dataset),
        "validation": f"{plan.evalset.inputs.shape[0]} windows of {plan.seq_len} tokens"
        + (
            f" ({plan.evalset.main_rows} of {plan.evalset.sources[0]}: val_loss)"
            if plan.evalset.main_rows is not None
            else ""
        ),  # fmt: skip
        "memorisation": f"{len(mem.windows)} training sequences, {settings.mem_prefix}-token "
        f"prompt, {settings.mem_length} tokens to match",
        "seen/unseen split": "from the data order" if plan.order_known else "unavailable",
        "evaluated / cached": f"{evaluated} / {len(revs) - evaluated}",
    } | ({"mixture": ", ".join(plan.evalset.sources)} if plan.evalset.main_rows else {})


def _write_outputs(
    out: Path,
    target: Target,
    plan: Plan,
    settings: StudySettings,
    records: list[dict],
    evaluated: list[str],
    start: float,
    tasks: tuple[list[dict], dict, list[str]] | None = None,
) -> tuple[Path, list[dict]]:
    """metrics.csv, sources.csv, the PNGs, report.html and study.json into `out`;
    returns (the report's path, the metric rows)."""
    pairs = list(zip(target.revisions, records, strict=True))
    rows = [metric_row(rev, rec) for rev, rec in pairs]
    for row, task in zip(rows, tasks[0] if tasks else [], strict=False):
        row |= task["columns"]  # task/<task>/<metric>, ..._stderr
    by_source = [row for rev, rec in pairs for row in source_rows(rev, rec)]
    write_csv(out / "metrics.csv", columns(rows), rows)
    write_csv(out / "sources.csv", SOURCE_COLUMNS, by_source)
    pictures = figs.curves(rows) + figs.per_source(rows, by_source)
    pictures += figs.moe(rows, [rev.meta for rev in target.revisions])
    pictures += figs.tasks(rows, tasks[0][-1]["chance"] if tasks else {})  # or recorded ones
    for fig in pictures:
        (out / fig.name).write_bytes(fig.png)
    facts = _facts(target, plan, settings, len(evaluated))
    if tasks:
        ran = tasks[1]
        facts["tasks"] = (f"{', '.join(ran['configs'])} (lm-evaluation-harness "
                          f"{ran['harness']}, {ran['num_fewshot']}-shot)")  # fmt: skip
    report = write_report(
        out / "report.html", target.name, facts, target.run_config, rows, pictures
    )
    write_json_atomic(out / "study.json", {
        "source": str(target.source), "dataset": str(plan.dataset),
        "settings": settings.to_dict() | {"data_key": plan.key},
        "revisions": [r.name for r in target.revisions], "evaluated": evaluated,
        "cached": [r.name for r in target.revisions if r.name not in evaluated],
        "ignored": [p.name for p in target.ignored],
        "figures": [f.name for f in pictures],
        **({"tasks": tasks[1], "tasks_evaluated": tasks[2]} if tasks else {}),
        "seconds": round(time.perf_counter() - start, 3),
    })  # fmt: skip
    return report, rows


def study(
    run_or_dir: str | Path,
    out: str | Path | None = None,
    data: str | Path | None = None,
    *,
    settings: StudySettings | None = None,
    force: bool = False,
    quiet: bool = False,
    **knobs: Any,
) -> Path:
    """Study every revision under `run_or_dir`; returns the path of `report.html`.

    What is measured is `settings` (a `StudySettings`; default: its defaults), with any
    of its fields given as keywords replacing the value there (`eval_windows=8`)."""
    start = time.perf_counter()
    settings = StudySettings.from_dict({**(settings or StudySettings()).to_dict(), **knobs})
    target = discover(run_or_dir)
    for note in target.notes:
        print(f"note: {note}", file=sys.stderr)
    plan = make_plan(target, data, settings)
    out = Path(out) if out is not None else target.default_out
    out.mkdir(parents=True, exist_ok=True)
    records, evaluated = evaluate_all(target, plan, settings, Cache(out / "cache", force), quiet)
    tasks = None
    if settings.tasks:
        from strata.study.tasks import evaluate_tasks

        tasks = evaluate_tasks(target, plan, settings, Cache(out / "cache", force), quiet)
    for left in leftover_dirs(out / ".outputs", complete=False):  # of a killed study
        shutil.rmtree(left, ignore_errors=True)
    tmp = out / f".outputs.tmp-{os.getpid()}"  # every output lands, or none changes
    try:
        tmp.mkdir()
        report, rows = _write_outputs(tmp, target, plan, settings, records, evaluated, start,
                                      tasks)  # fmt: skip
        for file in sorted(tmp.iterdir()):  # renames: no space needed
            file.replace(out / file.name)
    except OSError as err:
        raise write_failed(err, out, "the report and tables") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = out / report.name
    if not quiet:
        print(
            f"study: {len(rows)} revisions ({len(rows) - len(evaluated)} cached, "
            f"{len(evaluated)} evaluated) in {time.perf_counter() - start:.1f}s -> {report}"
        )
    return report
