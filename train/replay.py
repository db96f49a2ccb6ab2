"""`strata verify RUN --replay stepN`: train again up to step N and compare the weights.

Design choices:
- The replay starts from the nearest training state before N: the newest resume
  checkpoint `resume/step-K` with K < N, else step 0, which the seed alone determines
  (the init and the data order are pure functions of the config). It runs in a
  temporary run folder (the run's own files are only read), one process, with the
  run's resolved config (`config.toml`, or the copy in revision N's `strata.json`):
  the same schedule, seed, data order and precision. Logging, wandb, evaluation and
  publication are off; only `Trainer.train_step` runs.
- The weights at N are compared with revision N's tensor by tensor. A run with
  `train.deterministic = true` must match bitwise; any other run within `atol`
  (default 1e-5, max absolute difference), because kernels may round differently
  between runs and a multi-process run reduces gradients in another order. The
  result states which rule applied and the largest difference found.
- A fork (`RUN/fork.json`) replays as a fork: its record and data ledger go with it
  into the temporary folder (its mixture order and data edits), and it never starts
  before its fork step: with no checkpoint of its own there, from its parent's
  training state of that step.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from strata.checkpoints.fork_check import FORK_FILE
from strata.checkpoints.load import load
from strata.run import RevisionMeta, RunPaths
from strata.run.config import Config
from strata.run.config import from_dict as config_from_dict
from strata.run.dataset import resolve_dataset
from strata.run.jsonfile import read_object
from strata.run.layout import LATEST, TRAINER_STATE, resume_name, revision_step
from strata.run.ledger import LEDGER_DIR

DEFAULT_ATOL = 1e-5


@dataclass
class Replay:
    step: int
    start: int
    bitwise: bool
    max_diff: float
    differing: list[str]
    atol: float

    @property
    def ok(self) -> bool:
        return not self.differing

    def summary(self) -> str:
        rule = "bitwise (train.deterministic)" if self.bitwise else f"within {self.atol:g}"
        where = f"resume step {self.start}" if self.start else "step 0 (the seed)"
        head = f"replayed {self.step - self.start} step(s) from {where}: "
        if self.ok:
            return head + f"weights equal {rule}; max |difference| {self.max_diff:.3g}"
        names = ", ".join(self.differing[:3]) + (" ..." if len(self.differing) > 3 else "")
        return (
            head
            + f"{len(self.differing)} tensor(s) differ beyond {rule} "
            + (f"(max |difference| {self.max_diff:.3g}: {names})")
        )


def _config(run: RunPaths, step: int) -> Config:
    cfg = run.read_config()
    if cfg is not None:
        return cfg
    meta = RevisionMeta.read(run.revision(step))
    if meta is None or not meta.run:
        raise ValueError(f"{run.root}: no config.toml and step{step} records no run config")
    return config_from_dict(meta.run)


def _start(run: RunPaths, step: int) -> int:
    """The newest resume checkpoint before `step` (0: none; step 0 itself is the init)."""
    steps = [
        s
        for p in (run.resume.iterdir() if run.resume.is_dir() else [])
        if p.name.startswith("step-") and p.name[5:].isdigit() and (p / "trainer.json").is_file()
        for s in [int(p.name[5:])]
        if s < step
    ]
    return max(steps, default=0)


def _fork_start(run: RunPaths, revision: str, fork: dict, start: int) -> tuple[int, Path | None]:
    """(start step, the parent's state to start from or None): a fork never replays from
    before its fork step."""
    n = fork.get("step", 0) if fork else 0
    if start >= n:
        return start, None
    state = Path(fork["parent_run"]) / "resume" / resume_name(n)
    if not (state / TRAINER_STATE).is_file():
        raise ValueError(f"--replay {revision}: {run.root} forks step {n} of its parent; "
                         f"the training state {state} is gone")  # fmt: skip
    return n, state


def _compare(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], atol: float | None):
    """(max |difference|, names beyond the rule); atol None: bitwise."""
    worst, differing = 0.0, []
    for name, want in theirs.items():
        got = ours[name].detach().to(want.device, want.dtype)
        diff = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
        worst = max(worst, diff)
        if (not torch.equal(got, want)) if atol is None else diff > atol:
            differing.append(name)
    return worst, differing


def replay(run_dir: str | Path, revision: str, atol: float = DEFAULT_ATOL) -> Replay:
    """Train the run in `run_dir` again up to `revision` (stepN) and compare."""
    from strata.train.trainer import Trainer

    run, step = RunPaths(Path(run_dir)), revision_step(revision)
    if step is None or not (run.revision(step) / "model.safetensors").is_file():
        raise ValueError(f"--replay {revision}: expected a published revision stepN of {run.root}")
    cfg = _config(run, step)
    fork = read_object(run.root / FORK_FILE) if (run.root / FORK_FILE).is_file() else {}
    start, state = _fork_start(run, revision, fork, _start(run, step))

    def found(path: str) -> str:  # resolved before the run folder moves to `tmp`
        return str(resolve_dataset(path, run.root, cfg.run.out_dir).resolve())

    sources = [dataclasses.replace(s, dataset=found(s.dataset)) for s in cfg.data.sources]
    data = dataclasses.replace(cfg.data, dataset=found(cfg.data.dataset), sources=sources)
    with tempfile.TemporaryDirectory(prefix="strata-replay-") as tmp:
        cfg = dataclasses.replace(
            cfg,
            run=dataclasses.replace(cfg.run, out_dir=tmp),
            data=data,
            log=dataclasses.replace(cfg.log, wandb_project="", progress=False),
        )
        if start:
            resume = Path(tmp) / cfg.run.name / "resume"
            shutil.copytree(state or run.resume_step(start), resume / resume_name(start))
            (resume / LATEST).write_text(resume_name(start) + "\n")
        if fork:  # its order and edits; its ledger holds the parent's steps before it
            shutil.copy2(run.root / FORK_FILE, Path(tmp) / cfg.run.name / FORK_FILE)
            if (run.root / LEDGER_DIR).is_dir():
                shutil.copytree(run.root / LEDGER_DIR, Path(tmp) / cfg.run.name / LEDGER_DIR)
        trainer = Trainer(cfg)
        if trainer.step != start:
            raise ValueError(f"--replay: resumed at step {trainer.step}, expected {start}")
        for s in range(start, step):
            trainer.train_step(s)
        bitwise = cfg.train.deterministic
        theirs = load(run.revision(step)).state_dict()
        worst, differing = _compare(trainer.model.state_dict(), theirs, None if bitwise else atol)
    return Replay(step, start, bitwise, worst, differing, atol)
