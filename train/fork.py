"""Forks: a new run started from the exact training state of a published revision.

    strata train CONFIG --from RUN/checkpoints/stepN [section.key=value ...]

Design choices:
- The parent's revision must name its training state (`publish.training_state`): the
  resume checkpoint of step N, which holds the model, the optimizer, the schedule
  position, the RNG and the data cursor. The fork links (hard links, else copies) that
  folder into its own `resume/` as `latest`, so the trainer resumes at step N by the
  ordinary path, and with no change of config trains steps N+1.. exactly as the
  parent did (the data order is a pure function of the step).
- The fork's data ledger starts as the parent's first N steps (its chunks copied, cut
  at N on open), so the fork's ledger tells what its weights have seen since step 0.
- What a fork may change: everything a resume may (`train/resume_check.RESUMABLE`:
  `train.max_steps`, publication, logging, checkpoints, how it runs), the whole
  optimizer section (the schedule: `optim.schedule = "wsd"` from the fork step, the
  learning rate, ...), the data edits (`data.exclude_docs`, `data.inject`: from the
  fork step on) and a mixture's weights (the same sources; the pattern restarts at
  the fork with each source's draws so far). Any other change (the model's shape,
  the sequence length, the seed, the global batch, the datasets, the tokenizer) is
  refused with one line naming every such key: the state of step N cannot hold it.
- `RUN/fork.json` records {parent_run, parent_revision, step, changed: {key: [parent,
  fork]}, order: {weights, start_sample, offsets}: the mixture of steps N..}; every
  revision's `strata.json` and the ledger's index.json carry it as `fork`, and the
  fork always publishes its step N (the fork point `strata verify` compares with the
  parent's revision).
- A fork that stopped resumes from its own checkpoints: the same command again (with or
  without `--from`, which must then name the same revision).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata.checkpoints.fork_check import FORK_FILE
from strata.checkpoints.state_check import state_problem
from strata.run import RevisionMeta, RunPaths, locate
from strata.run.config import Config, ConfigError
from strata.run.jsonfile import read_object, write_atomic
from strata.run.layout import LATEST, resume_name
from strata.run.ledger import INDEX, LEDGER_DIR
from strata.tokenizer.mixture import Mixture, integer_weights, ordered
from strata.train import dist
from strata.train.resume_check import RESUMABLE, recorded_config

DATA_EDITS = {"exclude_docs", "exclude_docs_file", "inject"}
FORKABLE = {**RESUMABLE, "optim": None, "data": RESUMABLE["data"] | DATA_EDITS}
"""Config keys a fork may change (None: the whole section); `data.sources` too when
only weights and max_repetition change (`_same_sources`)."""


@dataclass
class ForkPoint:
    """A published revision with its training state."""

    parent: RunPaths
    revision: str
    step: int
    state: Path
    config: Config
    tokenizer_sha256: str | None
    fingerprint: str | None  # the dataset's (or mixture's) `data.dataset_fingerprint`
    sources: list  # a mixture's source records ([] for one dataset)
    order: dict  # the mixture the parent trained its last steps with (`fork_order`)


def fork_point(source: str | Path) -> ForkPoint:
    """The revision `source` names (RUN/checkpoints/stepN); ValueError in one line when
    it is not a run's revision or keeps no complete training state."""
    where = locate(source)
    if where.kind != "revision" or where.run is None:
        raise ValueError(f"--from {source}: expected a run's published revision, "
                         "RUN/checkpoints/stepN")  # fmt: skip
    meta = RevisionMeta.read(where.path)
    state = meta.extra.get("training_state") if meta is not None else None
    if meta is None or meta.step is None or not isinstance(state, str):
        raise ValueError(f"--from {source}: the revision keeps no training state (its run "
                         "needs publish.training_state = true)")  # fmt: skip
    folder = where.run.root / state
    if state != f"resume/{resume_name(meta.step)}" or (why := state_problem(folder, meta.step)):
        raise ValueError(f"--from {source}: training state {folder}: {why or 'misnamed'}")
    cfg = recorded_config(where.run)
    if cfg is None:
        raise ValueError(f"--from {source}: the parent run records no config")
    data = meta.data
    tok, fp = (data.tokenizer_sha256, data.dataset_fingerprint) if data else (None, None)
    sources = meta.extra.get("sources") if isinstance(meta.extra.get("sources"), list) else []
    own = where.run.root / FORK_FILE
    order = read_object(own).get("order") if own.is_file() else None
    weights = [s.weight for s in cfg.data.sources]
    order = order or {"weights": list(integer_weights(weights) if weights else (1,)),
                      "start_sample": 0, "offsets": []}  # fmt: skip
    return ForkPoint(where.run, where.path.name, meta.step, folder, cfg, tok, fp, sources, order)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


def _forkable(key: str) -> bool:
    section, _, name = key.partition(".")
    allowed = FORKABLE.get(section, set())
    return allowed is None or name.split(".")[0] in allowed


def changes(parent: Config, fork: Config) -> dict[str, list]:
    """{key: [parent value, fork value]} of every differing key but run.name/out_dir."""
    old, new = _flat(parent.to_dict()), _flat(fork.to_dict())
    keys = sorted((old.keys() | new.keys()) - {"run.name", "run.out_dir"})
    return {k: [old.get(k), new.get(k)] for k in keys if old.get(k) != new.get(k)}


def _same_sources(point: ForkPoint, cfg: Config) -> bool:
    """The same datasets, names and order: only weights and max_repetition changed."""
    kept = [[(s.dataset, s.label) for s in c.data.sources] for c in (point.config, cfg)]
    return kept[0] == kept[1]


def check_fork(point: ForkPoint, cfg: Config, data: tuple, source: str) -> dict:
    """The fork record; ConfigError naming every change the state cannot support.
    `data`: the fork's (tokenizer sha256, dataset fingerprint, source records)."""
    changed = changes(point.config, cfg)
    weights_only = _same_sources(point, cfg)
    refused = [f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()
               if not _forkable(k) and not (k == "data.sources" and weights_only)]  # fmt: skip
    tok, fingerprint, records = data
    old_fp = point.fingerprint
    if point.sources and records:  # a mixture: each source's content (weights may change)
        fingerprint = [(r["name"], r["fingerprint"]) for r in records]
        old_fp = [(r.get("name"), r.get("fingerprint")) for r in point.sources]
    for what, old, new in (("the tokenizer", point.tokenizer_sha256, tok),
                           ("the dataset's content", old_fp, fingerprint)):  # fmt: skip
        if old not in (None, new):
            refused.append(f"{what} ({str(old)[:40]} -> {str(new)[:40]})")
    if refused:
        raise ConfigError(
            f"--from {source}: a fork cannot change {', '.join(refused)}: the training state "
            f"of {point.revision} holds the parent's model, tokenizer and data order; a fork "
            "may change optim.* (the schedule), train.max_steps and how the run is recorded"
        )
    return {"parent_run": str(point.parent.root), "parent_revision": point.revision,
            "step": point.step, "changed": changed}  # fmt: skip


def fork_order(point: ForkPoint, mixture: Mixture, batch: int) -> dict:
    """The mixture of the fork's steps N..: the parent's when the integer weights are
    the same, else the fork's weights restarted at sample N * batch with the parent's
    draws of each source before it (tokenizer/mixture.py)."""
    weights, o = list(mixture.weights), point.order
    if weights == o["weights"]:
        return o
    draws = ordered(o, mixture).draws_before(point.step * batch).tolist()
    return {"weights": weights, "start_sample": point.step * batch, "offsets": draws}


def start_fork(run: RunPaths, cfg: Config, source: str | None, data: tuple,
               mixture: Mixture) -> dict:  # fmt: skip
    """The fork record of `run` ({} for a run that is no fork). With `source`, checks
    the fork (every process) and, on a new fork, rank 0 links the parent's state and
    ledger into `run` before every process goes on."""
    recorded = read_object(run.root / FORK_FILE) if (run.root / FORK_FILE).is_file() else {}
    if source is None:
        return recorded
    point = fork_point(source)
    if point.parent.root.resolve() == run.root.resolve():
        raise ConfigError(f"--from {source}: a fork needs its own run.name (it is {run.root})")
    record = check_fork(point, cfg, data, source)
    record["order"] = fork_order(point, mixture, cfg.train.global_batch_size)
    started = recorded or run.checkpoints.is_dir() or (run.resume / LATEST).exists()
    dist.barrier()  # every process has looked before rank 0 writes
    if started:
        same = {k: recorded.get(k) for k in ("parent_run", "step")}
        if same != {"parent_run": record["parent_run"], "step": record["step"]}:
            raise ConfigError(f"--from {source}: {run.root} is another run (its "
                              f"{FORK_FILE}: {same}); choose a new run.name")  # fmt: skip
        return recorded  # a fork resumed: its own config.toml rules (resume_check)
    if dist.is_rank0():
        _link_state(point, run)
        write_atomic(run.root / FORK_FILE, record)
    dist.barrier()
    dist.print0(f"forked from {source} at step {point.step}")
    return record


def _link_state(point: ForkPoint, run: RunPaths) -> None:
    """The parent's state as `run`'s latest resume checkpoint; its ledger's chunks."""
    target = run.resume / resume_name(point.step)
    _copy_tree(point.state, target)
    (run.resume / f".{LATEST}.tmp").write_text(target.name + "\n")
    (run.resume / f".{LATEST}.tmp").replace(run.resume / LATEST)
    ledger = point.parent.root / LEDGER_DIR
    if (ledger / INDEX).is_file():
        _copy_tree(ledger, run.root / LEDGER_DIR)  # cut at step N when the trainer opens it


def _copy_tree(source: Path, target: Path) -> None:
    """Hard links of `source`'s regular files in `target` (copies across file systems)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".tmp"):
            try:
                os.link(path, tmp / path.name)
            except OSError:
                shutil.copy2(path, tmp / path.name)
    tmp.rename(target)
