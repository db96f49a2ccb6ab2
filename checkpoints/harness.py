"""Downstream tasks through lm-evaluation-harness (`strata study RUN --tasks ...` and
`train.eval_tasks`).

Design choices:
- The harness runs the tasks itself (`lm_eval.simple_evaluate`: its prompts, few-shot
  sampling, metrics and stderr); Strata supplies the model as an `lm_eval` LM
  (`StrataLM`) over our own `GPT` and the dataset's tokenizer, so a revision needs no
  Hugging Face class. Requests follow the harness's `HFLM` for a causal model: a
  context's trailing spaces move to the continuation, the pair is encoded whole and the
  context's tokens split off, an empty context is the EOS token, no BOS is added, and
  inputs longer than the model's positions keep their last tokens.
- Task names are the harness's own; a `.yaml` file or a folder of them is added to
  its task manager (`include_path`), and the tasks they define are run, so tasks whose
  data sit in local files (`dataset_path: json`, `data_files`) run offline.
- Each task's config as the harness resolved it (sorted JSON) is hashed; the hash, the
  harness version, the few-shot count and seed and the example limit key the cache and
  are recorded in `study.json`, so a study says exactly what it ran.
- `lm_eval` is an optional extra (`pip install -e '.[eval]'`): without it `--tasks` is
  one line saying so.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from strata.model.generate import generate
from strata.tokenizer import Tokenizer

try:  # the optional extra: without it, `require_harness` says how to install it
    from lm_eval.api.model import LM as _Base
except ImportError:  # pragma: no cover - exercised by the missing-extra test
    _Base = object

MISSING = "strata study --tasks needs lm-evaluation-harness: pip install -e '.[eval]'"


@dataclass(frozen=True)
class TaskRun:
    """How tasks are run (the study's `StudySettings` has the same fields)."""

    batch_size: int = 16
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    task_limit: int | None = None


def require_harness():
    """The `lm_eval` module; ImportError with one line when it is not installed."""
    try:
        import lm_eval
    except ImportError:
        raise ImportError(MISSING) from None
    return lm_eval


def harness_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("lm_eval")


def task_spec(spec: str) -> tuple[list[str], str | None]:
    """(task names, include path) of `--tasks`: names, a YAML file or a folder of them."""
    names, include = [], None
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        path = Path(item)
        if path.suffix in (".yaml", ".yml") or path.is_dir():
            if not path.exists():
                raise FileNotFoundError(f"--tasks {item}: no such file or folder")
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            names += [_task_name(f) for f in files]
            include = str(path if path.is_dir() else path.parent)
        else:
            names.append(item)
    if not names:
        raise ValueError(f"--tasks {spec!r}: expected task names or YAML files")
    return names, include


def _task_name(path: Path) -> str:
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("task"), str):
        raise ValueError(f"{path}: expected a harness task YAML with a `task:` name")
    return raw["task"]


class StrataLM(_Base):
    """An lm-evaluation-harness model over a Strata `GPT` (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, vocab: int, batch: int,
                 forward: Any = None) -> None:  # fmt: skip
        """`forward(inputs) -> logits` (default: the model; the trainer passes its own,
        under autocast)."""
        super().__init__()
        self.model, self.tok, self.vocab, self.batch = model, tokenizer, vocab, batch
        self.forward = forward or model
        self.max_len = model.config.max_seq_len
        self.where = next(model.parameters()).device

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.tok.eos_id], self.tok.encode(continuation)
        whole, head = self.tok.encode(context + continuation), self.tok.encode(context)
        return head, whole[len(head) :]

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        out = []
        for start in range(0, len(pairs), self.batch):
            chunk = [(c + t)[-(self.max_len + 1) :] for c, t in pairs[start : start + self.batch]]
            width = max(len(s) for s in chunk) - 1
            x = torch.zeros(len(chunk), width, dtype=torch.long)  # right-padded (causal)
            for i, s in enumerate(chunk):
                x[i, : len(s) - 1] = torch.tensor(s[:-1])
            logp = F.log_softmax(self.forward(x.to(self.where))[..., : self.vocab].float(), -1)
            for i, (s, (_, cont)) in enumerate(zip(chunk, pairs[start:], strict=False)):
                n = len(cont)
                rows = logp[i, len(s) - 1 - n : len(s) - 1]  # (n, V): predictions of `cont`
                target = torch.tensor(s[-n:], device=rows.device)
                total = rows.gather(1, target[:, None]).sum().item()
                out.append((total, bool((rows.argmax(-1) == target).all())))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self._score([self._pair(*r.args) for r in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        totals = []
        for r in requests:
            ids, total = [self.tok.eos_id, *self.tok.encode(r.args[0])], 0.0
            for start in range(0, len(ids) - 1, self.max_len):
                piece = ids[start : start + self.max_len + 1]
                total += self._score([(piece[:1], piece[1:])])[0][0]
            totals.append(total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        out = []
        for r in requests:
            context, kwargs = r.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until
            ids = self.tok.encode(context)[-(self.max_len - 1) :] or [self.tok.eos_id]
            budget = min(int(kwargs.get("max_gen_toks", 256)), self.max_len - len(ids))
            x = torch.tensor([ids], device=self.where)
            new = generate(self.model, x, max(budget, 1), temperature=0.0, vocab=self.vocab)
            text = self.tok.decode(new[0, len(ids) :].tolist())
            cut = min([text.find(u) for u in until if u in text] or [len(text)])
            out.append(text[:cut])
        return out


def _manager(names: list[str], include: str | None):
    """The harness's task manager: only the given YAMLs when every task is one of them
    (indexing the harness's own thousands of tasks takes seconds), else all."""
    from lm_eval.tasks import TaskManager

    if include is None:
        return TaskManager(verbosity="ERROR")
    local = TaskManager(verbosity="ERROR", include_path=include, include_defaults=False)
    if all(name in local.all_tasks for name in names):
        return local
    return TaskManager(verbosity="ERROR", include_path=include)


class Tasks:
    """The tasks of `--tasks`, loaded once for a whole study (`load_tasks`)."""

    def __init__(self, spec: str) -> None:
        require_harness()
        from lm_eval.tasks import get_task_dict

        self.names, include = task_spec(spec)
        self.manager = _manager(self.names, include)
        loaded = _flat(get_task_dict(self.names, self.manager))
        self.configs = {name: _hash(task.dump_config()) for name, task in loaded.items()}


def _flat(tasks: dict) -> dict:
    out = {}
    for key, value in tasks.items():
        name = getattr(value, "task_name", key)
        out |= _flat(value) if isinstance(value, dict) else {name: value}
    return out


def _hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def run_tasks(model: torch.nn.Module, tokenizer: Tokenizer, vocab: int, tasks: Tasks,
              settings: TaskRun, forward: Any = None) -> dict[str, Any]:  # fmt: skip
    """Every task on `model`: {"columns": {task/<task>/<metric>: value, ..._stderr},
    "examples": {task: [{doc_id, correct, loglikelihood}]}, "chance": {task: level}}."""
    lm_eval = require_harness()
    results = lm_eval.simple_evaluate(
        model=StrataLM(model, tokenizer, vocab, settings.batch_size, forward), tasks=tasks.names,
        num_fewshot=settings.num_fewshot, limit=settings.task_limit, log_samples=True,
        task_manager=tasks.manager, random_seed=settings.fewshot_seed,
        numpy_random_seed=settings.fewshot_seed, torch_random_seed=settings.fewshot_seed,
        fewshot_random_seed=settings.fewshot_seed, bootstrap_iters=1000, verbosity="ERROR",
    )  # fmt: skip
    columns, examples, chance = {}, {}, {}
    for task, values in results["results"].items():
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if filt and isinstance(value, int | float) and not isinstance(value, bool):
                name = metric if filt == "none" else f"{metric}_{filt}"
                columns[f"task/{task}/{name}"] = _finite(value)
        samples = results.get("samples", {}).get(task, [])
        examples[task] = [_example(s) for s in samples]
        chance[task] = _chance(samples)
    return {"columns": columns, "examples": examples, "chance": chance}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _example(sample: dict) -> dict:
    """One task example: its id, whether it was right, the log-likelihood of the target."""
    resps = [r[0] if isinstance(r, tuple) else r for r in sample.get("filtered_resps", [])]
    target = sample.get("target")
    ll = resps[target] if isinstance(target, int) and 0 <= target < len(resps) else None
    correct = sample.get("acc", sample.get("exact_match"))
    return {"doc_id": sample["doc_id"], "correct": None if correct is None else float(correct),
            "loglikelihood": ll if isinstance(ll, float) else None}  # fmt: skip


def _chance(samples: list[dict]) -> float | None:
    """The mean of 1 / choices over a multiple-choice task's examples (None otherwise)."""
    counts = [len(s["filtered_resps"]) for s in samples if isinstance(s.get("target"), int)]
    return float(np.mean([1 / c for c in counts])) if counts and min(counts) > 1 else None
