"""File helpers shared by tokenizer training, `prepare`, shards and checkpoints:
atomic folder replacement, finding what a killed replacement left, and file hashing.

A replacement of `final` writes `<final>.tmp-<pid>` and moves an older `final` to
`<final>.old-<pid>` for a moment; a process killed with `kill -9` leaves those behind.
`leftover_dirs` names them by that exact pattern, only when they are real folders (not
links) and the process `<pid>` is gone, so a later run can remove them.
"""

from __future__ import annotations

import hashlib
import os
import re
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


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True  # not in progress: this process makes one at a time (temp_sibling)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # someone else's running process, or cannot tell: keep it
    return False


def leftover_dirs(final: Path, complete: bool) -> list[Path]:
    """`<final>.tmp-<pid>` folders (and, when `final` is `complete`, `<final>.old-<pid>`)
    of processes that are gone. While `final` is incomplete an `.old-` folder may be the
    only copy of the replaced data, so it is kept."""
    kinds = "tmp|old" if complete else "tmp"
    pattern = re.compile(rf"{re.escape(final.name)}\.(?:{kinds})-([0-9]+)")
    if not final.parent.is_dir():
        return []
    found = []
    for path in sorted(final.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and _process_gone(int(match[1])):
            found.append(path)
    return found


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
