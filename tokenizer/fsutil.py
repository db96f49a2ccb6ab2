"""Atomic folder replacement shared by tokenizer training and `prepare`."""

from __future__ import annotations

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
