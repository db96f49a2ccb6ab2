"""Load any published revision (or Hugging Face Llama folder) back into our `GPT`.

`load(path)` accepts a revision folder `checkpoints/stepN/`. The architecture comes
from `strata.json` (the native config, including the real vocabulary size) or, for a
plain Hugging Face folder, from `config.json`. Weights are read with safetensors only:
nothing is unpickled, and pickled `pytorch_model.bin` / `*.pt` files next to the weights
are never opened. With `verify=True` every file's sha256 is checked against the
digests recorded in `strata.json` before anything is loaded. The model is built empty
(`build_empty`, shared with export/import: meta device, `to_empty`, buffers only, no
random init) and every parameter is filled by a strict `load_state_dict`.

Untrusted or damaged folders fail with one `ValueError` naming the file: invalid JSON, a
`strata.json` or `config.json` without a usable model config, a truncated or corrupt
`model.safetensors`, weights that do not fit the config, and names in `strata.json` that
are not plain file names inside the folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from strata.checkpoints.files import own_file, sha256_file
from strata.checkpoints.hf import config_from_hf
from strata.checkpoints.hf_weights import from_hf_state_dict
from strata.model import GPT, ModelConfig
from strata.run import RevisionMeta
from strata.run.jsonfile import read_object
from strata.run.layout import HF_CONFIG, REVISION_META, WEIGHTS

PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Suffixes of pickled weight files: never opened, named when they stand in for safetensors."""


def read_metadata(path: str | Path) -> RevisionMeta | None:
    """A revision's strata.json (typed), or None for a folder that has none."""
    return RevisionMeta.read(path)


def verify_revision(path: str | Path) -> None:
    """Raise ValueError naming the first file whose sha256 differs from strata.json."""
    path = Path(path)
    meta = read_metadata(path)
    if meta is None:
        raise ValueError(f"{path}: no strata.json to verify against")
    if not meta.sha256:
        raise ValueError(f"{path / REVISION_META}: no 'sha256' map of the revision's files")
    for name, digest in meta.sha256.items():
        target = path / name
        if Path(name).name != name or name in (".", "..") or not target.is_file():
            raise ValueError(f"{path}: strata.json lists {name!r}, which is not in the folder")
        if sha256_file(target) != digest:
            raise ValueError(f"{target}: sha256 differs from the digest in strata.json")


def load_config(path: str | Path) -> ModelConfig:
    """The native config of a revision (strata.json) or Hugging Face folder (config.json)."""
    path = Path(path)
    meta = read_metadata(path)
    if meta is not None:
        return _config_from(path / REVISION_META, ModelConfig.from_dict, meta.model_config)
    hf = path / HF_CONFIG
    if not hf.exists() and not hf.is_symlink():  # anything else: read_object judges it
        raise FileNotFoundError(
            f"{path}: expected a revision folder with strata.json or config.json"
        )
    return _config_from(hf, config_from_hf, read_object(hf))


def _config_from(source: Path, build: Callable[[dict], ModelConfig], raw: Any) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: no model config in it")
    try:
        return build(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: no usable model config ({err})") from None


def _native(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A natively named state dict; a tied lm_head is stored once, as the embedding."""
    if config.tie_embeddings and "tok_embeddings.weight" in state:
        state = {**state, "lm_head.weight": state["tok_embeddings.weight"]}
    return state


def build_empty(
    config: ModelConfig,
    device: str | torch.device = "cpu",
    weight_bytes: int | None = None,
    source: str | Path = "the config",
) -> GPT:
    """`GPT(config)` allocated on `device`, to be filled by a strict `load_state_dict`.

    Built on the meta device, then `to_empty` + `init_buffers()` (rotary tables, tied
    lm_head, zero routing biases): no random numbers are drawn. The parameters hold
    uninitialised memory until loaded; a strict load (every caller's) refuses weights
    that lack any of them, so none is ever used unfilled. Before anything is allocated,
    the bytes the model needs are checked against `weight_bytes` (what the weights files
    hold) and the memory of the machine: an absurd config fails in one line."""
    with torch.device("meta"):
        model = GPT(config)
    _check_size(model, device, weight_bytes, source)
    model.to_empty(device=device)
    model.init_buffers()
    return model


SLACK = 64 << 20  # buffers, a padded vocabulary's rows


def memory_bytes(device: str | torch.device) -> int | None:
    """The memory of `device` (GPU memory, or the machine's RAM), None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_size(model: GPT, device, weight_bytes: int | None, source) -> None:
    """Refuse a model (on meta) larger than its weights could fill or the device holds."""
    need = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    size = f"{need / 1e9:.3g} GB in fp32"
    if weight_bytes is not None and need > 2 * weight_bytes + SLACK:  # bf16 files: half
        raise ValueError(
            f"{source}: describes a model of {size}, but its weights hold "
            f"{weight_bytes / 1e6:.3g} MB; the config does not belong to these weights"
        )
    have = memory_bytes(device)
    if have is not None and need > have:
        raise ValueError(f"{source}: describes a model of {size}; this machine has "
                         f"{have / 1e9:.3g} GB")  # fmt: skip


def load(path: str | Path, device: str | torch.device = "cpu", verify: bool = False) -> GPT:
    """Our `GPT` with the weights of the revision at `path`, in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint folder")
    if verify:
        verify_revision(path)
    config = load_config(path)
    weights = own_file(path / WEIGHTS)  # never a link to a file elsewhere
    if not weights.is_file():
        pickled = sorted(p.name for p in path.glob("*") if p.suffix in PICKLED)
        why = f"; {', '.join(pickled)} not loaded: pickled weights are refused" if pickled else ""
        raise FileNotFoundError(f"{weights}: missing{why}")
    try:
        hf_sd = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    held = sum(t.numel() * t.element_size() for t in hf_sd.values())
    model = build_empty(config, device, held, path)
    meta = read_metadata(path)
    try:
        if meta is not None and meta.native_weights:  # our own names (no HF class fits)
            model.load_state_dict(_native(hf_sd, config))
        else:
            model.load_state_dict(from_hf_state_dict(hf_sd, config))
    except (KeyError, RuntimeError, ValueError) as err:
        why = " ".join(str(err).split())[:400] or repr(err)  # one line, naming the keys
        raise ValueError(f"{weights}: weights do not fit the model config ({why})") from None
    return model.eval()
