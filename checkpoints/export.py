"""Move weights between Strata and Hugging Face folders: `strata export` / `strata import`.

Export takes a published revision (`checkpoints/stepN/`), a resume checkpoint
(`resume/step-XXXXXXXX/`), a run's `resume/` folder or a run folder (its latest resume
checkpoint) and writes a Hugging Face folder: `model.safetensors`, `config.json`, the
tokenizer files and `strata.json`. That is the same layout as a published revision, so
the result is also a Strata checkpoint.

Import reads a local Hugging Face folder (`config.json` plus `model.safetensors` or
sharded `model-*.safetensors` with their index) of a family Strata knows, and writes it
as a Strata checkpoint; `load_any` (`strata generate`) reads a sharded folder through the
same `read_hf_model`, so each shard the index names must be a plain file name inside the
folder and a regular file (`own_file`), never a link elsewhere. Only safetensors are
read; a folder holding only pickled `pytorch_model.bin` weights is refused. Resume
checkpoints are read through `checkpoints/safe_dcp.py` (allow-listed metadata unpickler,
`weights_only` values), so a planted DCP file is refused, never run. A truncated or
corrupt weight file is a ValueError naming it.

Both write into a temporary folder and rename it into place; an existing output is
never overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from strata.checkpoints import safe_dcp
from strata.checkpoints.files import own_file
from strata.checkpoints.hf import config_from_hf
from strata.checkpoints.hf_weights import from_hf_state_dict
from strata.checkpoints.load import build_empty, load, read_metadata
from strata.checkpoints.publish import hf_incompatibility, write_revision
from strata.checkpoints.resume import read_trainer_state
from strata.model import GPT, ModelConfig
from strata.run import Located, RunPaths
from strata.run.jsonfile import read_object
from strata.run.layout import (
    HF_CONFIG,
    REVISION_META,
    TRAINER_STATE,
    WEIGHTS,
    WEIGHTS_INDEX,
    is_revision,
)
from strata.tokenizer import Tokenizer


def _tokenizer_in(folder: Path) -> Tokenizer | None:
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        return Tokenizer.load(folder)
    return None


def resolve_resume(path: Path) -> Path:
    """A resume checkpoint folder from itself, a `resume/` folder or a run folder."""
    return Located("resume", path, None).resume_checkpoint()


def from_resume(path: Path) -> tuple[GPT, Tokenizer | None, dict[str, Any]]:
    """Model weights of a DCP resume checkpoint (the optimizer state is not read)."""
    trainer = path / TRAINER_STATE
    state = read_trainer_state(path)
    try:
        config = ModelConfig.from_dict(state["model_config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{trainer}: no usable model_config ({err!r})") from None
    model = build_empty(config)
    target = {"model": model.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        safe_dcp.load(target, path, no_dist=True, model_config=config.to_dict())
    model.load_state_dict(target["model"])
    run = RunPaths(path.parent.parent)  # resume/step-XXXXXXXX/ of a run
    info = {"step": state["step"], "tokens": state.get("tokens"), "exported_from": str(path)}
    return model, _tokenizer_in(run.tokenizer), info


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    file = own_file(path)  # a link to a file elsewhere is never read
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def _shard_names(index: Path) -> list[str]:
    try:
        names = sorted(set(read_object(index)["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{index}: not a safetensors index ({err!r})") from None
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{index}: names {name!r}, not a file inside {index.parent}")
    return names


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face folder: one safetensors file or an indexed set."""
    single = folder / WEIGHTS
    if single.is_file() or single.is_symlink():
        return _safetensors(single)
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        weights: dict[str, torch.Tensor] = {}
        for name in _shard_names(index):
            weights.update(_safetensors(folder / name))
        return weights
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ValueError(
            f"{folder}: only pickled weights (*.bin/*.pt) found; Strata reads safetensors only"
        )
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def _write_new(out: Path, model: GPT, tokenizer: Tokenizer | None, info: dict) -> Path:
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose another --out")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_revision(tmp, model, model.config, tokenizer, info)
        tmp.rename(out)
    except BaseException:  # disk full, interrupted: no half-written folder stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _sharded_hf(folder: Path) -> bool:
    """A Hugging Face folder (no strata.json) whose weights are indexed shards only."""
    single = folder / WEIGHTS
    return (
        (folder / WEIGHTS_INDEX).is_file()
        and not (single.exists() or single.is_symlink())
        and not (folder / REVISION_META).exists()
    )


def load_any(src: str | Path) -> tuple[GPT, Tokenizer | None]:
    """Model and tokenizer of a revision, HF folder (one safetensors file or sharded),
    resume checkpoint or run folder."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such checkpoint folder")
    if is_revision(src) and _sharded_hf(src):  # what `strata import` reads, read the same way
        return read_hf_model(src).eval(), _tokenizer_in(src)
    if is_revision(src):
        return load(src), _tokenizer_in(src)
    model, tokenizer, _ = from_resume(resolve_resume(src))
    return model.eval(), tokenizer


def export_hf(src: str | Path, out: str | Path) -> Path:
    """Write `src` (revision, resume checkpoint or run) as a Hugging Face folder `out`."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such checkpoint folder")
    meta = read_metadata(src)
    if meta is not None:
        keep = ("step", "tokens", "last_batch_loss", "val_loss", "data", "run")
        info = {k: v for k, v in meta.to_dict().items() if k in keep}
        info["exported_from"] = str(src)
        model, tokenizer = load(src, verify=True), _tokenizer_in(src)
    else:
        model, tokenizer, info = from_resume(resolve_resume(src))
    reason = hf_incompatibility(model.config)
    if reason is not None:
        raise ValueError(f"{src}: cannot be written as a Hugging Face model: {reason}")
    return _write_new(out, model, tokenizer, info)


def read_hf_model(src: Path) -> GPT:
    """Our `GPT` (on the CPU) from a local Hugging Face folder: `config.json` plus one
    `model.safetensors` or an indexed set of shards (`read_hf_weights`)."""
    cfg_path = src / HF_CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; expected a Hugging Face model folder")
    weights = read_hf_weights(src)
    try:
        config = config_from_hf(read_object(cfg_path))
    except KeyError as err:
        raise ValueError(f"{cfg_path}: missing key {err}") from None
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ValueError(f"{cfg_path}: not a Hugging Face config ({err})") from None
    held = sum(t.numel() * t.element_size() for t in weights.values())
    model = build_empty(config, "cpu", held, cfg_path)
    try:
        model.load_state_dict(from_hf_state_dict(weights, config))
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{src}: weights do not fit {cfg_path.name} ({first})") from None
    return model


def import_hf(src: str | Path, out: str | Path) -> Path:
    """Read a local Hugging Face folder into a Strata checkpoint folder `out`."""
    src, out = Path(src), Path(out)
    model = read_hf_model(src)
    match = re.fullmatch(r"step(\d+)", src.name)
    info = {"step": int(match.group(1)) if match else None, "imported_from": str(src)}
    return _write_new(out, model, _tokenizer_in(src), info)
