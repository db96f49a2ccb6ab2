"""What the trainer measures of mixture-of-experts layers (the model itself only
leaves its losses and counts on `GPT.last_moe_*`; it never logs).

- `extra_losses`: the weighted terms the last forward added to cross-entropy (z-loss,
  MoE load-balancing loss, router z-loss), so the logged loss is cross-entropy alone.
- `routing`: `model.moe.routing_stats` per MoE layer from (E,) assignment counts,
  summed over processes when asked (every process must then call it).
- `update_router_bias`: `moe.balance = "bias"`, after each update, nudges each router's
  selection bias toward uniform load from the step's counts summed over processes.
"""

from __future__ import annotations

import torch

from strata.model import GPT
from strata.model.moe import routing_stats
from strata.train import dist


def extra_losses(model: GPT) -> torch.Tensor:
    """(z-loss, MoE aux loss, MoE z-loss) of the last forward: (3,) float32, detached."""
    terms = (model.last_z_loss, model.last_moe_aux_loss, model.last_moe_z_loss)
    return torch.stack([t.float() for t in terms])


def routing(counts: dict[str, torch.Tensor], reduce: bool) -> dict[str, dict]:
    """{"layers.<i>": routing_stats} from (E,) counts per layer, summed over processes if
    `reduce` (a collective)."""
    if not counts:
        return {}
    names = sorted(counts, key=lambda n: int(n.split(".")[1]))
    stacked = torch.stack([counts[n] for n in names]).float()  # (L, E)
    if reduce:
        stacked = dist.all_reduce_sum(stacked)
    return {n: routing_stats(c) for n, c in zip(names, stacked.cpu(), strict=True)}


def update_router_bias(
    model: GPT, counts: dict[str, torch.Tensor], keep: torch.Tensor | None = None
) -> None:
    """Bias balancing after an update, from this step's counts summed over processes;
    `keep` () 0.0 cancels it on the device (a skipped step)."""
    moe = model.config.moe
    if moe is None or moe.balance != "bias":
        return
    layers = list(model.moe_layers())
    summed = dist.all_reduce_sum(torch.stack([counts[n] for n, _ in layers]).float())  # (L, E)
    for (_, layer), layer_counts in zip(layers, summed, strict=True):
        layer.update_bias(layer_counts, keep=keep)
