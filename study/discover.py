"""Finding the revisions to study: a run folder, its `checkpoints/`, or any `stepN` folders.

Design choices:
- A revision is a folder named `stepN` (N an integer) holding `strata.json` or a
  Hugging Face `config.json`; hidden `.stepN.tmp` folders of a publication in progress
  are ignored. Revisions are sorted by N, never by name.
- The input may be a run folder (`runs/<name>` with `checkpoints/`), its
  `checkpoints/` folder, or any folder of `stepN` revisions (for example Hugging Face
  revisions of a family Strata imports). The run folder, when there is one, supplies
  `config.toml`; the default output is `<run>/study/`, else `<folder>/study/`.
- A revision's identity for caching is the sha256 of its weights: the digest recorded
  in `strata.json` when there is one, else computed from the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from strata.checkpoints.files import sha256_file
from strata.checkpoints.load import read_metadata

STEP_DIR = re.compile(r"step(\d+)")
WEIGHTS = "model.safetensors"


@dataclass
class Revision:
    """One published (or Hugging Face) revision folder."""

    name: str
    step: int
    path: Path
    meta: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def tokens(self) -> int | None:
        return (self.meta or {}).get("tokens")

    def weights_sha256(self) -> str:
        recorded = (self.meta or {}).get("sha256", {}).get(WEIGHTS)
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

    @property
    def default_out(self) -> Path:
        return (self.run_dir or self.source) / "study"

    @property
    def name(self) -> str:
        run = self.run_config.get("run", {}).get("name")
        return str(run or (self.run_dir or self.source).resolve().name)


def _revisions_in(folder: Path) -> list[Revision]:
    found = []
    for child in folder.iterdir():
        match = STEP_DIR.fullmatch(child.name)
        if not match or not child.is_dir():
            continue
        if child.is_symlink():  # could point anywhere: refuse rather than follow
            raise ValueError(f"{child}: a symbolic link, not a revision folder; not followed")
        if (child / "strata.json").is_file() or (child / "config.json").is_file():
            found.append(Revision(child.name, int(match.group(1)), child, read_metadata(child)))
    return sorted(found, key=lambda r: r.step)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None


def discover(path: str | Path) -> Target:
    """The revisions under `path`, in step order; a clear error when there are none."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; expected a run, its checkpoints/ or stepN folders")
    if STEP_DIR.fullmatch(path.name) and not _revisions_in(path):
        raise ValueError(f"{path}: is one revision; pass the folder that holds the stepN folders")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    revisions = _revisions_in(folder)
    if not revisions:
        raise ValueError(
            f"{path}: no revision folders (stepN with strata.json or config.json); expected a "
            "run folder, its checkpoints/ folder or a folder of stepN revisions"
        )
    run_dir = folder.parent if folder.name == "checkpoints" else None
    config = run_dir / "config.toml" if run_dir else None
    run_config = _read_toml(config) if config and config.is_file() else {}
    if not run_config:  # a copy of the resolved config travels in every strata.json
        run_config = next((r.meta["run"] for r in revisions if r.meta and "run" in r.meta), {})
    return Target(path, run_dir, revisions, run_config)
