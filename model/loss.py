"""The language-model loss: cross-entropy, PaLM's z-loss, and a chunked form that bounds memory.

Design choices:
- The loss is the mean over real targets (ignore_index -100 excluded) of
  cross-entropy, computed in float32 (float64 stays float64), plus
  `z_loss * mean(log(Z)^2)` over the same targets when `z_loss > 0` (PaLM, Chowdhery
  et al. 2022: it keeps log Z near 0 so the softmax normaliser does not drift;
  log Z = logsumexp of a position's logits).
  Functions return (total loss, z term); the z term is already scaled by `z_loss`
  (zero when disabled), so total - z term is the cross-entropy.
- Plain form (`loss_from_logits`): from the (B, T, V) logits the model returns. With
  z_loss == 0 it is one `F.cross_entropy` call, exactly as before.
- Chunked form (`chunked_loss`), for `loss_chunk_size > 0`: from the final hidden
  states and the lm_head weight, `chunk_size` positions at a time. Each chunk's
  lm_head matmul, float32 cast, softmax statistics and gradient run inside
  `torch.utils.checkpoint` (non-reentrant), which keeps only the chunk's inputs (a
  view of the hidden states and the weight) and recomputes the logits in backward.
  So at most one chunk's (chunk_size, V) logits exist at a time, in forward and in
  backward, at the price of a second lm_head matmul per chunk. Sums per chunk, one
  division by the number of real targets at the end: equal to the plain loss (and
  its gradients) up to float rounding. The whole-batch logits are never built, so
  the model returns None in their place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half-precision logits go to float32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sums(logits: torch.Tensor, targets: torch.Tensor, z_loss: float):
    """(sum of cross-entropy, sum of z_loss * log(Z)^2) over real targets; logits (N, V)."""
    logits = _upcast(logits)  # (N, V)
    if z_loss == 0.0:
        ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        return ce, ce.new_zeros(())
    real = targets != IGNORE_INDEX  # (N,)
    lse = logits.logsumexp(dim=-1)  # (N,) log Z
    picked = logits.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)  # (N,)
    ce = ((lse - picked) * real).sum()
    return ce, z_loss * (lse.square() * real).sum()


def loss_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, z term) from logits (B, T, V) and targets (B, T)."""
    logits, targets = logits.flatten(0, 1), targets.flatten()  # (N, V), (N,)
    if z_loss == 0.0:
        ce = F.cross_entropy(_upcast(logits), targets, ignore_index=IGNORE_INDEX)
        return ce, ce.new_zeros(()).detach()
    ce, z = _sums(logits, targets, z_loss)
    n = (targets != IGNORE_INDEX).sum()
    return (ce + z) / n, (z / n).detach()


def _chunk_sums(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int, z_loss: float
):
    logits = F.linear(hidden, weight)[:, :vocab]  # (n, V): one chunk only
    return _sums(logits, targets, z_loss)


def chunked_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    vocab_size: int,
    z_loss: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, z term) from hidden (B, T, C), lm_head weight (V_pad, C), targets (B, T).

    Logits are `hidden @ weight.T` sliced to `vocab_size`, built `chunk_size` positions
    at a time and recomputed in backward (see the module docstring).
    """
    hidden, targets = hidden.flatten(0, 1), targets.flatten()  # (N, C), (N,)
    ce = z = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
    for start in range(0, hidden.size(0), chunk_size):
        end = start + chunk_size
        ce_c, z_c = checkpoint(
            _chunk_sums,
            hidden[start:end],
            weight,
            targets[start:end],
            vocab_size,
            z_loss,
            use_reentrant=False,
        )
        ce, z = ce + ce_c, z + z_c
    n = (targets != IGNORE_INDEX).sum()
    return (ce + z) / n, (z / n).detach()
