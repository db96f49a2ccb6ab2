"""Finding the revisions to study: a run folder, its `checkpoints/`, or any `stepN` folders.

Design choices:
- What the path is comes from the run layer (`strata.run.locate`); a revision is a
  folder named `stepN` holding `strata.json` or a Hugging Face `config.json`; hidden
  `.stepN.tmp` folders of a publication in progress are ignored. Revisions are sorted by
  N, never by name.
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
from strata.run.layout import STUDY, WEIGHTS, is_revision, revision_step


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

    @property
    def default_out(self) -> Path:
        return (self.run_dir or self.source) / STUDY

    @property
    def name(self) -> str:
        run = self.run_config.get("run", {}).get("name")
        return str(run or (self.run_dir or self.source).resolve().name)


def _revisions_in(folder: Path) -> list[Revision]:
    found = []
    for child in folder.iterdir():
        step = revision_step(child.name)
        if step is None or not child.is_dir():
            continue
        if child.is_symlink():  # could point anywhere: refuse rather than follow
            raise ValueError(f"{child}: a symbolic link, not a revision folder; not followed")
        if is_revision(child):
            found.append(Revision(child.name, step, child, RevisionMeta.read(child)))
    return sorted(found, key=lambda r: r.step)


def discover(path: str | Path) -> Target:
    """The revisions under `path`, in step order; a clear error when there are none."""
    path = Path(path)
    none = ValueError(
        f"{path}: no revision folders (stepN with strata.json or config.json); expected a "
        "run folder, its checkpoints/ folder or a folder of stepN revisions"
    )
    try:
        where = locate(path)
    except ValueError:
        if path.is_dir():
            raise none from None
        raise
    if where.kind == "revision":
        raise ValueError(f"{path}: is one revision; pass the folder that holds the stepN folders")
    folder = where.checkpoints
    revisions = _revisions_in(folder) if folder is not None and folder.is_dir() else []
    if where.kind == "resume" or not revisions:
        raise none
    cfg = where.run.read_config() if where.run is not None else None
    run_config = cfg.to_dict() if cfg is not None else {}
    if not run_config:  # a copy of the resolved config travels in every strata.json
        run_config = next((r.meta.run for r in revisions if r.meta and r.meta.run), {})
    return Target(path, where.run.root if where.run else None, revisions, run_config)
