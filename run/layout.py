"""The run folder on disk: every path of the run-directory contract, spelled once.

    runs/<name>/
      config.toml  metrics.jsonl  trainer.json? tokenizer/  spikes/  study/
      resume/step-XXXXXXXX/ (trainer.json + DCP shards)  resume/latest
      checkpoints/stepN/ (model.safetensors, config.json, tokenizer files, strata.json)
      checkpoints/manifest.json

Design choices:
- `RunPaths(root)` names every file and folder of a run; code elsewhere never joins
  these names by hand, so the layout can be read (and changed) here alone.
- `locate(path)` is the one function that says what a path handed to a command is: a
  run folder, its `checkpoints/` folder, one published (or Hugging Face) revision, a
  resume checkpoint, or any folder of `stepN` revisions. It reads nothing but names and
  the presence of marker files, follows no symbolic links out of a folder, and fails
  with one line naming the path and what was expected.
- Revision folders are `stepN` with N a plain ASCII decimal (`step01` is not a revision
  name: two folders could otherwise both be step 1; `named_step` reads the step such a
  name spells, for messages only); resume folders are `step-%08d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from strata.tokenizer.fsutil import read_own

if TYPE_CHECKING:
    from strata.run.config import Config

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
TOKENIZER = "tokenizer"
RESUME = "resume"
LATEST = "latest"
TRAINER_STATE = "trainer.json"
CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
REVISION_META = "strata.json"
HF_CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
STUDY = "study"
SPIKES = "spikes"

STEP_DIR = re.compile(r"step(0|[1-9][0-9]*)")  # ASCII digits: `int` reads others too
STEP_LIKE = re.compile(r"step([0-9]+)")
RESUME_DIR = re.compile(r"step-(\d{8})")
TMP_REVISION = re.compile(r"\.step\d+\.tmp")


def revision_name(step: int) -> str:
    """The folder name of published revision `step`: `step{N}`."""
    return f"step{step}"


def revision_step(name: str) -> int | None:
    """N of a revision folder name `stepN`, or None when `name` is not one."""
    match = STEP_DIR.fullmatch(name)
    return int(match[1]) if match else None


def named_step(name: str) -> int | None:
    """The step any `step<digits>` name spells (`step01` -> 1), or None: what a folder's
    name claims, for messages. Only `revision_step` says whether it is a revision."""
    match = STEP_LIKE.fullmatch(name)
    return int(match[1]) if match else None


def resume_name(step: int) -> str:
    """The folder name of the resume checkpoint of `step`: `step-XXXXXXXX`."""
    return f"step-{step:08d}"


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run folder (`runs/<name>/`)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def resume(self) -> Path:
        return self.root / RESUME

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def manifest(self) -> Path:
        return self.checkpoints / MANIFEST

    @property
    def study(self) -> Path:
        return self.root / STUDY

    @property
    def spikes(self) -> Path:
        return self.root / SPIKES

    def revision(self, step: int) -> Path:
        return self.checkpoints / revision_name(step)

    def read_config(self) -> Config | None:
        """The run's resolved `config.toml` with the real schema and defaults (None when
        the run has none); ValueError naming the file for a malformed one."""
        from strata.run.config import load_config

        if not self.config.is_file():
            return None
        try:
            return load_config(self.config)
        except ValueError as err:
            text = str(err)
            named = text.startswith(str(self.config))
            raise ValueError(text if named else f"{self.config}: {text}") from None

    def resume_step(self, step: int) -> Path:
        return self.resume / resume_name(step)


Kind = Literal["run", "checkpoints", "revisions", "revision", "resume"]


@dataclass(frozen=True)
class Located:
    """What a path given to a command is, and the run it belongs to (if any).

    kind: `run` (a run folder), `checkpoints` (a run's or any folder with a manifest or
    `stepN` revisions), `revisions` (the same without a run around it), `revision` (one
    folder with strata.json or a Hugging Face config.json), `resume` (a resume checkpoint).
    """

    kind: Kind
    path: Path
    run: RunPaths | None
    checkpoints: Path | None = None

    @property
    def name(self) -> str:
        return (self.run.root if self.run else self.path).resolve().name

    def resume_checkpoint(self) -> Path:
        """The resume checkpoint this path stands for: itself, the one a `resume/` folder's
        `latest` names, or a run's latest; FileNotFoundError when there is none."""
        if (self.path / TRAINER_STATE).is_file():
            return self.path
        for folder in (self.path, self.path / RESUME):
            if (folder / LATEST).is_file() and (found := latest_resume(folder)) is not None:
                return found
        raise FileNotFoundError(
            f"{self.path}: not a published revision (strata.json), a resume checkpoint "
            "(trainer.json) or a run folder with resume/latest"
        )


def latest_resume(resume_dir: str | Path) -> Path | None:
    """The folder named by `resume/latest`, or None when there is no checkpoint yet."""
    pointer = Path(resume_dir) / LATEST
    if not pointer.is_file():
        return None
    name = read_own(pointer, 4096).decode("utf-8", "replace").strip()
    path = Path(resume_dir) / name
    if "/" in name or ".." in name or not (path / TRAINER_STATE).is_file():
        raise ValueError(f"{pointer}: names {name!r}, which is not a complete checkpoint")
    return path


def _run_of(folder: Path) -> RunPaths | None:
    """The run folder holding `folder` (its parent) when that parent has a config.toml."""
    parent = folder.parent
    return RunPaths(parent) if (parent / CONFIG).is_file() else None


def is_revision(folder: Path) -> bool:
    return (folder / REVISION_META).is_file() or (folder / HF_CONFIG).is_file()


def _has_revisions(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or any(
        revision_step(p.name) is not None and p.is_dir() for p in folder.iterdir()
    )


def locate(path: str | Path) -> Located:
    """Say what `path` is (see `Located`); one-line error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; expected a run, its checkpoints/ or a revision")
    if is_revision(path):
        run = _run_of(path.parent) if path.parent.name == CHECKPOINTS else None
        return Located("revision", path, run, path.parent if run else None)
    if (path / TRAINER_STATE).is_file():
        run = _run_of(path.parent) if path.parent.name == RESUME else None
        return Located("resume", path, run)
    if (path / LATEST).is_file():  # a run's resume/ folder
        return Located("resume", path, _run_of(path))
    if (path / CONFIG).is_file() or (path / CHECKPOINTS).is_dir() or (path / RESUME).is_dir():
        run = RunPaths(path)
        return Located("run", path, run, run.checkpoints)
    if _has_revisions(path):
        run = _run_of(path) if path.name == CHECKPOINTS else None
        return Located("checkpoints" if run else "revisions", path, run, path)
    raise ValueError(
        f"{path}: not a run folder (config.toml, checkpoints/), a checkpoints folder, a "
        "folder of stepN revisions, a revision (strata.json or config.json) or a resume "
        "checkpoint (trainer.json)"
    )
