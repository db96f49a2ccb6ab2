"""Validation loss and bits per byte of one revision, overall and per source.

Definitions (docs/study.md repeats them):
- `val_loss` = mean cross-entropy, in nats, over every predicted token of the fixed
  validation windows (the targets `window[1:]`), EOS targets included, computed in
  float32 from the logits over the dataset's vocabulary (its `index.json` `vocab_size`),
  for every revision: a folder whose config declares padded outputs (a foreign or older
  export) is scored over the same tokens as a Strata revision of the same weights.
- `val_bpb` = (sum of those cross-entropies in nats) / (ln 2 * B), where B is the number
  of UTF-8 bytes the predicted tokens stand for (tokenizer/tokbytes.py: exact per token; special
  tokens such as EOS are 0 bytes, so their loss is charged to the text's bytes, as when
  compressing the concatenated corpus with its document boundaries).
- Per source group the same two numbers over that group's predicted tokens. For a
  mixture run the groups are its sources, and val_loss / val_bpb are over the first
  source's windows alone (`EvalSet.main_rows`), the run's own val_loss.
Sums are kept in float64 so the per-source numbers add up to the totals.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from strata.study.data import EvalSet


def autocast(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def token_losses(
    model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, batch_size: int, vocab: int
) -> np.ndarray:
    """(N, T) float64 cross-entropy in nats of each target token, over the first `vocab`
    outputs (the dataset's vocabulary, whatever the revision's config says)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        x = torch.from_numpy(inputs[start : start + batch_size]).to(device)
        y = torch.from_numpy(targets[start : start + batch_size]).to(device)
        with autocast(device):
            logits = model(x)[..., :vocab]  # (B, T, V)
        ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        out.append(ce.view_as(y).double().cpu().numpy())
    return np.concatenate(out)


def bpb(ce_sum: float, nbytes: int) -> float | None:
    """Bits per byte from a sum of cross-entropies in nats; None without bytes."""
    return ce_sum / (math.log(2) * nbytes) if nbytes > 0 else None


def summarise(ce: np.ndarray, data: EvalSet) -> tuple[dict, list[dict]]:
    """(the revision's val_loss / val_bpb columns, one dict per source group)."""
    main, nbytes_main = ce[: data.main_rows], data.nbytes[: data.main_rows]  # (n, T)
    row = {
        "val_loss": float(main.mean()),
        "val_bpb": bpb(float(main.sum()), int(nbytes_main.sum())),
        "val_tokens": int(main.size),
        "val_bytes": int(nbytes_main.sum()),
    }
    size = len(data.sources)
    group = data.group.ravel()
    loss = np.bincount(group, weights=ce.ravel(), minlength=size)
    count = np.bincount(group, minlength=size)
    nbytes = np.bincount(group, weights=data.nbytes.ravel(), minlength=size).astype(np.int64)
    sources = [
        {
            "source": name,
            "eval_tokens": int(count[i]),
            "eval_bytes": int(nbytes[i]),
            "loss": float(loss[i] / count[i]),
            "bpb": bpb(float(loss[i]), int(nbytes[i])),
        }
        for i, name in enumerate(data.sources)
        if count[i] > 0
    ]
    return row, sources


def evaluate(
    model: torch.nn.Module, data: EvalSet, batch_size: int, vocab: int
) -> tuple[dict, list[dict]]:
    """(val columns, per-source rows) of `model` on `data`, scored over `vocab` outputs."""
    return summarise(token_losses(model, data.inputs, data.targets, batch_size, vocab), data)
