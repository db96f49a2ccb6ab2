"""The validation loss of the model at a step: the fixed validation batches
(`train/data.py` `validation_batches`), shared out over the processes and combined into
the global mean, the same whatever the number of processes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from strata.model import ModelOutput
from strata.train import dist


@torch.no_grad()
def validation_loss(
    forward: Callable[..., ModelOutput], val_batches: list[torch.Tensor], device: torch.device
) -> float | None:
    """Mean loss of `forward` (the model in eval mode) over the fixed validation batches
    (None when there is no val split).

    Every process calls it: process r evaluates batches r, r + W, ... and the sums
    are combined. Forwards are collectives under FSDP, so every process runs the
    same number; one with fewer batches runs a spare forward that counts for nothing.
    """
    if not val_batches:
        return None
    n, world = len(val_batches), dist.world_size()
    total = torch.zeros(2, device=device)  # (sum of batch losses, batches)
    for i in range(dist.rank(), math.ceil(n / world) * world, world):
        rows = val_batches[i % n].to(device)
        ce = forward(rows[:, :-1], rows[:, 1:]).ce.float()  # cross-entropy only
        weight = float(i < n)
        total += torch.stack([ce * weight, ce.new_tensor(weight)])
    total = dist.all_reduce_mean(total)  # the ratio of two means is the global mean
    return (total[0] / total[1]).item()
