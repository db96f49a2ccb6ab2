"""Small file helpers for resume and published checkpoints: atomic JSON, git commit, and
`own_file` / `read_own`, the rule that a checkpoint's files are regular files, never
links (both from `tokenizer/fsutil.py`).

Folder replacement and file hashing are shared with `tokenizer/` (its `fsutil`), atomic
JSON with the run layer (`run/jsonfile.py`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from strata.run.jsonfile import write_atomic as write_json_atomic
from strata.tokenizer.fsutil import own_file, read_own, replace_dir, sha256_file

__all__ = [
    "git_commit",
    "own_file",
    "read_own",
    "replace_dir",
    "sha256_file",
    "write_json_atomic",
]


def git_commit() -> str | None:
    """The code's git commit (with `-dirty` when the tree has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=root, capture_output=True, text=True, timeout=10
        )
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
