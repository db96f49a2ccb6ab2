"""Published revisions: `checkpoints/stepN/` folders that any Hugging Face tool can read.

Each revision holds `model.safetensors` (Hugging Face parameter names), `config.json`
(loadable by `transformers.AutoModelForCausalLM`), the tokenizer files, and
`strata.json`: the native model config, step, tokens seen, the data cursor, train and
validation loss, the code's git commit and the sha256 of every other file.
`checkpoints/manifest.json` lists every revision once, in step order.

Writes are atomic: the revision is assembled in `.stepN.tmp/` and renamed into place,
then the manifest is rewritten through a temporary file. A crash leaves either the
previous state or the complete new revision, never a half-written one in the manifest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from checkpoints.files import git_commit, replace_dir, sha256_file, write_json_atomic
from checkpoints.hf import hf_config, to_hf_state_dict
from model import ModelConfig
from tokenizer import Tokenizer

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def special_ids(tokenizer: Tokenizer | None) -> dict[str, int | None]:
    if tokenizer is None:
        return {"bos_id": None, "eos_id": None, "pad_id": None}
    return {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id}


def write_revision(
    out: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write a complete revision folder at `out` (which must not exist); returns strata.json."""
    out.mkdir(parents=True)
    weights = to_hf_state_dict(_cpu_state_dict(model), config)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_json_atomic(out / "config.json", hf_config(config, **special_ids(tokenizer)))
    if tokenizer is not None:
        tokenizer.save(out)
    digests = {f.name: sha256_file(f) for f in sorted(out.iterdir()) if f.is_file()}
    meta = {
        "format_version": FORMAT_VERSION,
        **info,
        "git_commit": git_commit(),
        "model_config": config.to_dict(),
        "sha256": digests,
    }
    write_json_atomic(out / "strata.json", meta)
    return meta


def publish_revision(
    checkpoints_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
) -> Path:
    """Publish `checkpoints_dir/step{step}` atomically and record it in the manifest."""
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step{step}"
    tmp = root / f".step{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    info = {"revision": final.name, "step": step, **info}
    meta = write_revision(tmp, model, config, tokenizer, info)
    replace_dir(tmp, final)
    update_manifest(root, meta)
    return final


def read_manifest(checkpoints_dir: str | Path) -> dict[str, Any]:
    path = Path(checkpoints_dir) / MANIFEST
    if not path.is_file():
        return {"format_version": FORMAT_VERSION, "revisions": []}
    try:
        manifest = json.loads(path.read_text())
        revisions = manifest["revisions"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid manifest ({err})") from None
    for entry in revisions:
        rev = str(entry.get("revision", ""))
        if not rev or "/" in rev or "\\" in rev or rev.startswith("."):
            raise ValueError(f"{path}: revision {rev!r} must name a folder inside {path.parent}")
    return manifest


def update_manifest(checkpoints_dir: Path, meta: dict[str, Any]) -> None:
    """Add or replace the manifest entry for this revision, keeping step order."""
    manifest = read_manifest(checkpoints_dir)
    keys = ("revision", "step", "tokens", "train_loss", "val_loss")
    entry = {k: meta.get(k) for k in keys}
    revisions = [r for r in manifest["revisions"] if r["revision"] != entry["revision"]]
    revisions.append(entry)
    manifest["revisions"] = sorted(revisions, key=lambda r: r["step"])
    write_json_atomic(checkpoints_dir / MANIFEST, manifest)
