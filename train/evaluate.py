"""The validation loss of the model at a step: the mean cross-entropy over every predicted
token of the fixed validation windows (`train/data.py` `validation_batches`, in
micro-batches), shared out over the processes and combined into the global mean, the
same whatever the micro-batch size and the number of processes (up to fp rounding)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from strata.model import ModelOutput
from strata.train import dist


def eval_dtype(dtype: torch.dtype, param_dtype: str) -> str:
    """ "fp32", or "bf16" when autocast (`dtype`) or, under FSDP, the parameters
    (`train.param_dtype`) compute in bf16: recorded with each revision's val_loss."""
    half = dtype != torch.float32 or (dist.world_size() > 1 and param_dtype == "bf16")
    return "bf16" if half else "fp32"


@torch.no_grad()
def validation_loss(
    forward: Callable[..., ModelOutput], val_batches: list[torch.Tensor], device: torch.device
) -> float | None:
    """Mean per-token loss of `forward` (the model in eval mode) over every window of
    the fixed validation batches (None when there is no val split).

    Every process calls it: process r evaluates batches r, r + W, ... and the sums
    (each batch's mean times its rows; every window has seq_len targets) are combined
    in float64. Forwards are collectives under FSDP, so every process runs the same
    number; one with fewer batches runs a spare forward that counts for nothing.
    """
    if not val_batches:
        return None
    n, world = len(val_batches), dist.world_size()
    total = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of losses, windows)
    for i in range(dist.rank(), math.ceil(n / world) * world, world):
        rows = val_batches[i % n].to(device)
        ce = forward(rows[:, :-1], rows[:, 1:]).ce.double()  # mean cross-entropy only
        windows = float(len(rows)) if i < n else 0.0  # a spare forward counts for nothing
        total += torch.stack([ce * windows, ce.new_tensor(windows)])
    total = dist.all_reduce_mean(total)  # the ratio of two means is the global mean
    return (total[0] / total[1]).item()
