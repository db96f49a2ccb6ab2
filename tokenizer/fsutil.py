"""File helpers shared by tokenizer training, `prepare`, shards and checkpoints:
atomic folder replacement and file hashing."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def temp_sibling(final: Path) -> Path:
    """An empty `<final>.tmp-<pid>` folder next to `final` (same filesystem: rename is atomic)."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an older `final` if any."""
    if final.exists():
        trash = final.with_name(f"{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
