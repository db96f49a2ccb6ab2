"""Which prepared dataset a run trained on: one resolution rule and its fingerprint.

Design choices:
- `data.dataset` is a path as the user wrote it. An absolute path is itself; a relative
  one is tried against the working directory first (where `strata train` runs), then
  against the folder the run was launched from (the run folder minus
  `run.out_dir/run.name`), so `strata batch`, `study` and `verify` find the data of a
  run from anywhere. The trainer and the offline tools use this same rule.
- A dataset's fingerprint is the sha256 of its `index.json` bytes: the index lists
  every shard's sha256, so one hash covers every token. Revisions record it in their
  data cursor, and a reader refuses another dataset under the same name.
"""

from __future__ import annotations

from pathlib import Path

from strata.tokenizer.fsutil import sha256_file

INDEX = "index.json"


def candidates(raw: str | Path, run_root: Path | None, out_dir: str | Path) -> list[Path]:
    """Where a relative `data.dataset` may be, in the order they are tried."""
    dataset = Path(raw)
    if dataset.is_absolute():
        return [dataset]
    tried = [Path.cwd() / dataset]
    out_dir = Path(out_dir)
    depth = len(out_dir.parts) + 1  # RUN = <launch dir>/<out_dir>/<name>
    if run_root is not None and not out_dir.is_absolute():
        parents = run_root.resolve().parents
        if depth <= len(parents):
            launch = parents[depth - 1] / dataset
            if launch not in tried:
                tried.append(launch)
    return tried


def resolve_dataset(
    raw: str | Path, run_root: Path | None = None, out_dir: str | Path = "runs"
) -> Path:
    """The prepared dataset folder `raw` names (see the module docstring)."""
    tried = candidates(raw, run_root, out_dir)
    for candidate in tried:
        if (candidate / INDEX).is_file():
            return candidate
    where = f" from {run_root / 'config.toml'}" if run_root is not None else ""
    raise FileNotFoundError(
        f"dataset {str(raw)!r}{where} not found: no {INDEX} in "
        f"{', '.join(map(str, tried))}; expected a folder written by `strata prepare`"
    )


def dataset_fingerprint(dataset_dir: str | Path) -> str:
    """sha256 of the dataset's `index.json` bytes (it lists every shard's sha256)."""
    path = Path(dataset_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no index.json; is {dataset_dir} a prepared dataset?")
    return sha256_file(path)
