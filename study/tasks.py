"""The `--tasks` part of a study: every revision through lm-evaluation-harness, cached.

Design choices:
- A revision's task results are their own cache entry (`cache/<revision>.tasks.json`),
  keyed on the weights, the study version, the device and what was run (the harness
  version, each task's config hash, the few-shot count and seed, the example limit),
  so adding a task or a revision evaluates only what is new, and the loss and
  memorisation records are never recomputed for it.
- The columns are `task/<task>/<metric>` and `task/<task>/<metric>_stderr` as the
  harness names them (a filter other than `none` is appended: `exact_match_strict-match`);
  the chance level of a multiple-choice task is the mean of 1 / choices.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from strata.checkpoints.harness import Tasks, harness_version, run_tasks
from strata.study.cache import Cache
from strata.study.data import Plan
from strata.study.discover import Target
from strata.study.settings import STUDY_VERSION, StudySettings
from strata.tokenizer import Tokenizer
from tqdm import tqdm


def what_runs(settings: StudySettings, tasks: Tasks) -> dict[str, Any]:
    """What `--tasks` runs, as study.json records it."""
    return {"harness": harness_version(), "configs": tasks.configs,
            "num_fewshot": settings.num_fewshot, "fewshot_seed": settings.fewshot_seed,
            "limit": settings.task_limit}  # fmt: skip


def evaluate_tasks(target: Target, plan: Plan, settings: StudySettings, cache: Cache,
                   quiet: bool) -> tuple[list[dict], dict, list[str]]:  # fmt: skip
    """(one task record per revision, what was run, the revisions evaluated now)."""
    from strata.study.run import load_revision

    tasks = Tasks(settings.tasks)
    ran, records, evaluated = what_runs(settings, tasks), [], []
    tokenizer = Tokenizer.load(plan.dataset / "tokenizer")
    device = settings.torch_device().type
    show = not quiet and sys.stderr.isatty()
    for rev in tqdm(target.revisions, desc="tasks", unit="rev", disable=not show):
        blob = json.dumps({"v": STUDY_VERSION, "ran": ran, "weights": rev.weights_sha256(),
                           "device": device}, sort_keys=True)  # fmt: skip
        key, name = hashlib.sha256(blob.encode()).hexdigest(), f"{rev.name}.tasks"
        record = cache.get(name, key)
        if record is None:
            model = load_revision(rev, plan, settings)
            record = run_tasks(model, tokenizer, plan.index["vocab_size"], tasks, settings)
            cache.put(name, key, record)
            evaluated.append(rev.name)
        records.append(record)
    ran["chance"] = records[-1]["chance"] if records else {}
    return records, ran, evaluated
