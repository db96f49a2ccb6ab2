"""`strata verify`'s checks of the training states kept with revisions
(`publish.training_state`: `resume/step-XXXXXXXX` of every published step).

Design choices:
- Reported, never raised. A revision's `training_state` must name exactly its own
  step's resume folder (`resume/step-XXXXXXXX`, nothing else: no `..`, no absolute
  path), else `bad-training-state`; that folder must be a real directory (not a link)
  holding DCP's `.metadata` and a valid `trainer.json` of the same step, else
  `missing-training-state`, as is a revision without one in a run whose `config.toml`
  sets `publish.training_state`. The manifest entry must name the same state.
- Only names and small files are read: the shards' bytes are DCP's to check on load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from strata.checkpoints.resume import read_trainer_state
from strata.run import Manifest
from strata.run.config import Config
from strata.run.layout import RESUME, REVISION_META, resume_name
from strata.run.meta import RevisionMeta

Add = Callable[[str, Path | str, str], None]


def check_states(root: Path | None, cfg: Config | None, metas: dict[str, RevisionMeta],
                 ckpt: Path, add: Add) -> None:  # fmt: skip
    """Every check above, for the revisions `metas` (by folder name) under `ckpt`."""
    wanted = cfg is not None and cfg.publish.training_state
    entries = {e.revision: e for e in _entries(ckpt)}
    for name, meta in sorted(metas.items()):
        value, where = meta.extra.get("training_state"), ckpt / name / REVISION_META
        if value is None:
            if wanted:
                add("missing-training-state", where, "publish.training_state is on, but "
                    "strata.json names no training state")  # fmt: skip
            continue
        expected = f"{RESUME}/{resume_name(meta.step)}"
        if value != expected:
            add("bad-training-state", where, f"training_state {value!r:.80}: expected "
                f"{expected!r}")  # fmt: skip
            continue
        if name in entries and entries[name].training_state != value:
            add("bad-training-state", ckpt / "manifest.json",
                f"{name}: training_state {entries[name].training_state!r:.80}, strata.json "
                f"has {value!r}")  # fmt: skip
        if root is not None and (problem := state_problem(root / value, meta.step)):
            add("missing-training-state", root / value, problem)


def _entries(ckpt: Path) -> list:
    try:
        return Manifest.read(ckpt).revisions
    except (OSError, ValueError):
        return []  # reported by the manifest check


def state_problem(folder: Path, step: int) -> str | None:
    """Why `folder` is not a complete resume checkpoint of `step`, or None."""
    if folder.is_symlink() or not folder.is_dir():
        return "a link, not a folder" if folder.is_symlink() else "missing (pruned or moved?)"
    metadata = folder / ".metadata"
    if metadata.is_symlink() or not metadata.is_file():
        return "no DCP .metadata: not a complete checkpoint"
    try:
        state = read_trainer_state(folder)
    except ValueError as err:
        return str(err).split(": ", 1)[-1]
    return None if state["step"] == step else f"trainer.json step {state['step']}, not {step}"
