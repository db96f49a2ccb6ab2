"""Finding the revisions to study: a run folder, its `checkpoints/`, or any `stepN` folders.

Design choices:
- What the path is comes from the run layer (`strata.run.locate`); a revision is a
  folder named `stepN` (the run layer's `revision_step`: no leading zeros) holding
  `strata.json` or a Hugging Face `config.json`; hidden `.stepN.tmp` folders of a
  publication in progress are ignored. Revisions are sorted by N, never by name.
- The step is the folder's name, and a `strata.json` that records another step is an
  error naming the folder and both steps (a mislabelled revision would put its numbers
  at the wrong point of every curve). A revision-like folder with a non-canonical name
  (`step01`) is not a revision, as `strata verify` has it: it is left out, listed in
  `Target.ignored`, and never counts as a second step 1 (its `strata.json`, when it
  records another step, is still refused).
- The input may be a run folder (`runs/<name>` with `checkpoints/`), its
  `checkpoints/` folder, or any folder of `stepN` revisions (for example Hugging Face
  revisions of a family Strata imports). The run folder, when there is one, supplies
  `config.toml` (read with the real schema and defaults); else the resolved config that
  travels in every `strata.json` stands in. The default output is `<run>/study/`, else
  `<folder>/study/`.
- A revision's identity for caching is the sha256 of its weights: the digest recorded
  in `strata.json` when there is one, else computed from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.checkpoints.files import sha256_file
from strata.run import RevisionMeta, locate
from strata.run.layout import STUDY, WEIGHTS, is_revision, named_step, revision_step


@dataclass
class Revision:
    """One published (or Hugging Face) revision folder."""

    name: str
    step: int
    path: Path
    meta: RevisionMeta | None = field(default=None, repr=False)

    @property
    def tokens(self) -> int | None:
        return self.meta.tokens if self.meta else None

    def weights_sha256(self) -> str:
        recorded = self.meta.sha256.get(WEIGHTS) if self.meta else None
        if recorded:
            return recorded
        weights = self.path / WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing")
        return sha256_file(weights)


@dataclass
class Target:
    """What `strata study` was pointed at."""

    source: Path
    run_dir: Path | None
    revisions: list[Revision]
    run_config: dict[str, Any]
    """The run's resolved config as a dict (every default written out), or {}."""
    ignored: list[Path] = field(default_factory=list)
    """Folders named like revisions but not canonically (`step01`): not studied."""

    @property
    def notes(self) -> list[str]:
        """One line per ignored folder, for the user."""
        return [
            f"{p}: not a revision name (stepN, no leading zeros); ignored" for p in self.ignored
        ]

    @property
    def default_out(self) -> Path:
        return (self.run_dir or self.source) / STUDY

    @property
    def name(self) -> str:
        run = self.run_config.get("run", {}).get("name")
        return str(run or (self.run_dir or self.source).resolve().name)


def _named(child: Path, meta: RevisionMeta | None) -> int:
    """The step `child`'s name spells; ValueError when its strata.json records another."""
    named = named_step(child.name)
    if meta is not None and meta.step is not None and meta.step != named:
        raise ValueError(
            f"{child}: the folder name says step {named} but its strata.json says step {meta.step}"
        )
    return named


def _misnamed_meta(child: Path) -> RevisionMeta | None:
    """The strata.json of a folder that is not a revision, if it reads (a link: never)."""
    if child.is_symlink():
        return None
    try:  # not a revision: only a step its name contradicts is the study's business
        return RevisionMeta.read(child)
    except (OSError, ValueError):
        return None


def _revisions_in(folder: Path) -> tuple[list[Revision], list[Path]]:
    """(the revisions in `folder` by step, the `step01`-like folders that are not one)."""
    found, ignored = [], []
    for child in sorted(folder.iterdir()):
        if named_step(child.name) is None or not child.is_dir():
            continue
        if revision_step(child.name) is None:  # as `strata verify` has it: not a revision
            ignored.append(child)
            _named(child, _misnamed_meta(child))
        elif child.is_symlink():  # could point anywhere: refuse rather than follow
            raise ValueError(f"{child}: a symbolic link, not a revision folder; not followed")
        elif is_revision(child):
            meta = RevisionMeta.read(child)
            found.append(Revision(child.name, _named(child, meta), child, meta))
    return sorted(found, key=lambda r: r.step), ignored


def _none(path: Path, ignored: list[Path]) -> ValueError:
    why = f"; {', '.join(p.name for p in ignored)}: not stepN (no leading zeros)" if ignored else ""
    return ValueError(
        f"{path}: no revision folders (stepN with strata.json or config.json); expected a "
        f"run folder, its checkpoints/ folder or a folder of stepN revisions{why}"
    )


def discover(path: str | Path) -> Target:
    """The revisions under `path`, in step order; a clear error when there are none, or
    when a folder's name and its strata.json disagree on the step."""
    path = Path(path)
    try:
        where = locate(path)
    except ValueError:
        if path.is_dir():  # no stepN folder: still name a mislabelled or misnamed one
            raise _none(path, _revisions_in(path)[1]) from None
        raise
    if where.kind == "revision":
        raise ValueError(f"{path}: is one revision; pass the folder that holds the stepN folders")
    folder = where.checkpoints
    found = _revisions_in(folder) if folder is not None and folder.is_dir() else ([], [])
    revisions, ignored = found
    if where.kind == "resume" or not revisions:
        raise _none(path, ignored)
    cfg = where.run.read_config() if where.run is not None else None
    run_config = cfg.to_dict() if cfg is not None else {}
    if not run_config:  # a copy of the resolved config travels in every strata.json
        run_config = next((r.meta.run for r in revisions if r.meta and r.meta.run), {})
    run_dir = where.run.root if where.run else None
    return Target(path, run_dir, revisions, run_config, ignored)
