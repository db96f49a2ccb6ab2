"""`train.eval_tasks`: lm-evaluation-harness tasks at every publication step.

Design choices:
- The same evaluation as `strata study --tasks` (checkpoints/harness.py): the harness runs the
  tasks over our model, here through the trainer's own forward (autocast, document
  masks), batched by `train.micro_batch_size`, zero-shot, with the study's default
  seeds, so the numbers a revision records are the ones the study computes for it
  (tests/train/test_eval_tasks.py compares them).
- Every process runs every request (the harness sees one process): under FSDP each
  forward is a collective, and the requests come in the same order everywhere. Rank 0
  writes the record: a metrics.jsonl line `{"step", task/<task>/<metric>...}` (and
  wandb), and `tasks` in the revision's `strata.json`: {columns, harness, configs, limit}.
- The tasks are loaded once, before the run folder exists (`check_tasks`), so a missing
  extra or an unknown task is one line naming `train.eval_tasks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from strata.checkpoints.harness import TaskRun, Tasks, harness_version, run_tasks
from strata.run.config import Config, ConfigError
from strata.tokenizer import Tokenizer


def check_tasks(cfg: Config) -> Tasks | None:
    """The tasks of `train.eval_tasks` (None when off); ConfigError in one line."""
    spec = cfg.train.eval_tasks
    if not spec:
        return None
    try:
        return Tasks(spec)
    except ImportError as err:
        raise ConfigError(f"train.eval_tasks = {spec!r}: {err}") from None
    except (KeyError, ValueError, FileNotFoundError) as err:
        raise ConfigError(f"train.eval_tasks = {spec!r}: {err}") from None


class LoopTasks:
    """The tasks evaluated at publication steps."""

    def __init__(self, cfg: Config, tasks: Tasks) -> None:
        self.tasks, t = tasks, cfg.train
        self.settings = TaskRun(batch_size=t.micro_batch_size, task_limit=t.eval_tasks_limit)

    def run(self, model: torch.nn.Module, forward: Callable, tokenizer: Tokenizer,
            vocab: int) -> dict[str, Any]:  # fmt: skip
        """{columns, harness, configs, limit} of the model as it is now."""
        result = run_tasks(model, tokenizer, vocab, self.tasks, self.settings, forward)
        return {"columns": result["columns"], "harness": harness_version(),
                "configs": self.tasks.configs, "limit": self.settings.task_limit}  # fmt: skip
