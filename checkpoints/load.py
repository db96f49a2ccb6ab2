"""Load any published revision (or Hugging Face Llama folder) back into our `GPT`.

`load(path)` accepts a revision folder `checkpoints/stepN/`. The architecture comes
from `strata.json` (the native config, including the real vocabulary size) or, for a
plain Hugging Face folder, from `config.json`. Weights are read with safetensors only:
nothing is unpickled. With `verify=True` every file's sha256 is checked against the
digests recorded in `strata.json` before anything is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from checkpoints.files import sha256_file
from checkpoints.hf import config_from_hf, from_hf_state_dict
from model import GPT, ModelConfig


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """A revision's strata.json, or None for a folder that has none."""
    meta = Path(path) / "strata.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta}: not valid JSON ({err})") from None


def verify_revision(path: str | Path) -> None:
    """Raise ValueError naming the first file whose sha256 differs from strata.json."""
    path = Path(path)
    meta = read_metadata(path)
    if meta is None:
        raise ValueError(f"{path}: no strata.json to verify against")
    for name, digest in meta["sha256"].items():
        target = path / name
        if Path(name).name != name or not target.is_file():
            raise ValueError(f"{path}: strata.json lists {name!r}, which is not in the folder")
        if sha256_file(target) != digest:
            raise ValueError(f"{target}: sha256 differs from the digest in strata.json")


def load_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    meta = read_metadata(path)
    if meta is not None:
        return ModelConfig.from_dict(meta["model_config"])
    hf = path / "config.json"
    if not hf.is_file():
        raise FileNotFoundError(
            f"{path}: expected a revision folder with strata.json or config.json"
        )
    return config_from_hf(json.loads(hf.read_text()))


def load(path: str | Path, device: str | torch.device = "cpu", verify: bool = False) -> GPT:
    """Our `GPT` with the weights of the revision at `path`, in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint folder")
    if verify:
        verify_revision(path)
    config = load_config(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing")
    try:
        hf_sd = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    model.init_weights(seed=0)  # fills rotary tables; weights are overwritten below
    model.load_state_dict(from_hf_state_dict(hf_sd, config))
    return model.eval()
