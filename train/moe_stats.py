"""What the trainer measures of mixture-of-experts layers (the model itself only
returns its losses and counts, in `ModelOutput`; it never logs).

- `extra_losses`: the weighted terms a forward added to cross-entropy (z-loss, MoE
  load-balancing loss, router z-loss), stacked so that micro-batches sum on the device.
- `routing`: `model.moe.routing_stats` per MoE layer from (E,) assignment counts,
  summed over processes when asked (every process must then call it).
- `update_router_bias`: `moe.balance = "bias"`, after each update, nudges each router's
  selection bias toward uniform load from the step's counts summed over processes.
- `validation_routing`: the routing statistics a published revision records, on the
  first (fixed) validation batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from strata.model import GPT, ModelOutput
from strata.model.moe import routing_stats
from strata.train import dist


def extra_losses(out: ModelOutput) -> torch.Tensor:
    """(z-loss, MoE aux loss, MoE z-loss) of a forward: (3,) float32, detached."""
    terms = (out.z_loss, out.moe_aux_loss, out.moe_z_loss)
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


@torch.no_grad()
def validation_routing(
    forward: Callable[[torch.Tensor, torch.Tensor], ModelOutput],
    val_batches: list[torch.Tensor],
    device: torch.device,
) -> dict[str, dict] | None:
    """`routing` of one forward of the first validation batch (rows, T + 1), None without
    one. Every process runs the same batch (a collective forward under FSDP): no
    reduction."""
    if not val_batches:
        return None
    rows = val_batches[0].to(device)
    return routing(forward(rows[:, :-1], rows[:, 1:]).moe_counts, reduce=False)
