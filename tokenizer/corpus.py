"""The embedded default corpus: the Python standard library's own source files.

Design choices:
- Present wherever Python is, so the quickstart needs no download. The corpus is
  every `.py` file under `sysconfig.get_paths()["stdlib"]`, excluding third-party
  code (`site-packages`, `dist-packages`) and anything inside a virtual environment
  (a folder holding `pyvenv.cfg`).
- Files are taken in sorted relative-POSIX-path order; file number i of that order
  goes to validation when `i % val_every == val_every - 1`, else to training. The
  index counts every file found, so the split of a file does not depend on whether
  other files were skipped.
- Files that are not valid UTF-8 (a handful of deliberately mis-encoded test files)
  are skipped and counted in the returned stats; nothing is decoded with
  replacement characters.
- Output is `train.jsonl` and `val.jsonl`, one `{"text", "source"}` object per file,
  written to temporary files and renamed into place. Same Python, same bytes.
- `iter_documents` (re-exported here) reads this and any other corpus.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path
from typing import IO

from .documents import iter_documents

__all__ = ["build_stdlib_corpus", "iter_documents", "stdlib_files"]

_EXCLUDED_PARTS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_files() -> list[tuple[Path, str]]:
    """(absolute path, relative POSIX path) of every stdlib `.py` file, sorted by the latter."""
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # prune third-party folders and virtual environments in place
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _EXCLUDED_PARTS and not (here / d / "pyvenv.cfg").exists()
        ]
        for name in filenames:
            if name.endswith(".py"):
                path = here / name
                found.append((path, path.relative_to(root).as_posix()))
    found.sort(key=lambda item: item[1])
    return found


def build_stdlib_corpus(out_dir: str | Path, val_every: int = 50) -> dict[str, int]:
    """Write `out_dir/train.jsonl` and `out_dir/val.jsonl` from the stdlib; return stats.

    Stats: files (found), train_files, val_files, skipped (not UTF-8), bytes (UTF-8
    bytes of text written).
    """
    if not isinstance(val_every, int) or val_every < 2:
        raise ValueError(f"val_every must be an integer >= 2, got {val_every!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = stdlib_files()
    if not files:
        raise FileNotFoundError(
            f"no .py files under the stdlib folder {sysconfig.get_paths()['stdlib']}"
        )
    stats = {"files": len(files), "train_files": 0, "val_files": 0, "skipped": 0, "bytes": 0}
    final = {split: out_dir / f"{split}.jsonl" for split in ("train", "val")}
    tmp = {
        split: path.with_name(f".{path.name}.tmp-{os.getpid()}") for split, path in final.items()
    }
    try:
        with (
            open(tmp["train"], "w", encoding="utf-8") as ftrain,
            open(tmp["val"], "w", encoding="utf-8") as fval,
        ):
            for i, (path, rel) in enumerate(files):
                split_file = fval if i % val_every == val_every - 1 else ftrain
                _write_file(path, rel, split_file, stats, is_val=split_file is fval)
        for split in ("train", "val"):
            os.replace(tmp[split], final[split])
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    print(
        f"stdlib corpus -> {out_dir}: {stats['train_files']} train + {stats['val_files']} val "
        f"files, {stats['bytes'] / 1e6:.1f} MB, {stats['skipped']} skipped (not UTF-8)"
    )
    return stats


def _write_file(path: Path, rel: str, out: IO[str], stats: dict[str, int], is_val: bool) -> None:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        stats["skipped"] += 1
        return
    out.write(json.dumps({"text": text, "source": rel}, ensure_ascii=False) + "\n")
    stats["val_files" if is_val else "train_files"] += 1
    stats["bytes"] += len(data)
