"""What the trainer records in a published revision beside its weights (`strata.json`):
the data cursor and the parent revision; and the rule that keeps published revisions
immutable across resumes (`already_published`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from strata.checkpoints.publish import read_manifest, update_manifest
from strata.train import dist
from strata.run.config import Config


def data_cursor(
    cfg: Config, step: int, fingerprint: str, tokenizer_sha256: str, n_windows: int
) -> dict[str, Any]:
    """`strata.json` `data`: where revision `step` stands in the data-order contract."""
    t = cfg.train
    return {
        "dataset": str(cfg.data.dataset),
        "dataset_fingerprint": fingerprint,
        "tokenizer_sha256": tokenizer_sha256,
        "seed": t.seed,
        "seq_len": t.seq_len,
        "global_batch_size": t.global_batch_size,
        "batches_seen": step,
        "next_batch": step,
        "windows_consumed": step * t.global_batch_size,
        "n_windows": n_windows,
    }


def parent_revision(checkpoints_dir: Path, step: int) -> str | None:
    """The latest revision published before `step` (None for the first one)."""
    revisions = read_manifest(checkpoints_dir)["revisions"]
    earlier = [r for r in revisions if r["step"] < step]
    return max(earlier, key=lambda r: r["step"])["revision"] if earlier else None


def already_published(checkpoints_dir: Path, step: int, device: torch.device) -> bool:
    """Published revisions are immutable: after a resume, a revision that is already
    there (folders are renamed into place complete) is kept, and only re-entered in the
    manifest in case a kill came between the rename and the manifest update. Rank 0's
    view decides for every process (a collective)."""
    folder = checkpoints_dir / f"step{step}"
    exists = (folder / "strata.json").is_file()
    if not dist.rank0_decides(exists, device):
        return False
    if dist.is_rank0():
        update_manifest(checkpoints_dir, json.loads((folder / "strata.json").read_text()))
    dist.barrier()
    return True
