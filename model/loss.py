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
  states and the lm_head weight, `chunk_size` positions at a time, with the lm_head
  matmul fused into the loss (as Liger's and torchtune's fused linear cross-entropy):
  when a gradient is wanted, each chunk's gradient is computed in the forward pass,
  right after its logits, from the closed form
      d/dlogits [lse - logit_target + z * lse^2] = softmax * (1 + 2 z lse) - onehot,
  and turned at once into that chunk's share of the hidden-state gradient (G @ W) and
  of the weight gradient (G^T @ h, summed over chunks in float32). Backward then only
  scales the two saved gradients by the incoming one. So at most one chunk's (chunk_size,
  V) logits exist at a time, no logits are recomputed, and the lm_head costs the same
  three matmuls as the plain form; what it saves is memory and the separate softmax,
  log-softmax-backward and zero-filled gradient passes over the whole (N, V) logits.
  Under autocast the matmuls run in the autocast dtype as `F.linear` would; the
  returned gradients have the inputs' dtypes. Without a gradient (no_grad, eval) it
  only sums the loss. Sums per chunk, one division by the number of real targets at
  the end: equal to the plain loss and its gradients up to float rounding. The
  whole-batch logits are never built, so the model returns None in their place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half-precision logits go to float32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sums(logits: torch.Tensor, targets: torch.Tensor, z_loss: float):
    """(sum of cross-entropy, sum of z_loss * log(Z)^2) over real targets; logits (N, V)."""
    logits = _upcast(logits)  # (N, V)
    real = targets != IGNORE_INDEX  # (N,)
    lse = logits.logsumexp(dim=-1)  # (N,) log Z
    picked = logits.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)  # (N,)
    return ((lse - picked) * real).sum(), z_loss * (lse.square() * real).sum()


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


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype `F.linear(hidden, weight)` would compute in (autocast's when it is on)."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _loss_and_grad_in_place(logits: torch.Tensor, targets: torch.Tensor, z: float):
    """(sum of ce, sum of z * lse^2, their gradient wrt logits) over real targets; the
    gradient, softmax * (1 + 2 z lse) - onehot, is written over `logits` (n, V), which
    must be at least float32. A few passes over the chunk and no temporaries of its size."""
    real = (targets != IGNORE_INDEX).to(logits.dtype)  # (n,)
    index = targets.clamp(min=0)[:, None]  # (n, 1)
    picked = logits.gather(-1, index).squeeze(-1)  # (n,)
    top = logits.amax(dim=-1)  # (n,)
    probs = logits.sub_(top[:, None]).exp_()  # (n, V) unnormalised softmax
    total = probs.sum(dim=-1)  # (n,)
    lse = top + total.log()  # (n,) log Z
    probs.mul_((real * (1.0 + 2.0 * z * lse) / total)[:, None])
    # minus one at each target, through the flat view: a 1-D scatter_add_ is
    # deterministic on CUDA too (train.deterministic)
    n, V = probs.shape
    flat = torch.arange(n, device=probs.device) * V + index.squeeze(-1)  # (n,)
    probs.view(-1).scatter_add_(0, flat, -real)
    return ((lse - picked) * real).sum(), z * (lse.square() * real).sum(), probs


class _FusedLinearLoss(torch.autograd.Function):
    """(sum of ce + z term, sum of z term) from hidden (N, C), weight (V_pad, C), targets
    (N,); the gradients are computed in forward, chunk by chunk (module docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, vocab: int, z_loss: float, chunk: int, dtype):
        need_h, need_w = ctx.needs_input_grad[:2]
        acc = torch.promote_types(dtype, torch.float32)  # sums and the weight gradient
        w = weight[:vocab].to(dtype)  # (V, C)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, C)
        grad_w = weight.new_zeros(weight.shape, dtype=acc) if need_w else None  # (V_pad, C)
        ce = z = hidden.new_zeros((), dtype=acc)
        for start in range(0, hidden.size(0), chunk):
            h, t = hidden[start : start + chunk].to(dtype), targets[start : start + chunk]
            ce_c, z_c, g = _loss_and_grad_in_place(_upcast(h @ w.T), t, z_loss)  # g (n, V)
            ce, z, g = ce + ce_c, z + z_c, g.to(dtype)
            if need_h:
                grad_h[start : start + chunk] = g @ w  # (n, C)
            if need_w and acc == dtype:
                grad_w[:vocab].addmm_(g.T, h)  # (V, C), in place
            elif need_w:
                grad_w[:vocab] += (g.T @ h).to(acc)  # (V, C), half-precision product
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        return ce + z, z

    @staticmethod
    def backward(ctx, grad_total, _grad_z):
        grad_h, grad_w = ctx.saved_tensors
        scaled = [None if g is None else g * grad_total.to(g.dtype) for g in (grad_h, grad_w)]
        return *scaled, None, None, None, None, None


def _loss_only(hidden, weight, targets, vocab: int, z_loss: float, chunk: int, dtype):
    """The sums of `_FusedLinearLoss` without any gradient work (no_grad, eval)."""
    w = weight[:vocab].to(dtype)  # (V, C)
    ce = z = hidden.new_zeros((), dtype=torch.promote_types(dtype, torch.float32))
    for start in range(0, hidden.size(0), chunk):
        h, t = hidden[start : start + chunk].to(dtype), targets[start : start + chunk]
        ce_c, z_c = _sums(h @ w.T, t, z_loss)
        ce, z = ce + ce_c, z + z_c
    return ce + z, z


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
    at a time; when a gradient is wanted, each chunk's gradient is computed as it goes
    (see the module docstring).
    """
    hidden, targets = hidden.flatten(0, 1), targets.flatten()  # (N, C), (N,)
    dtype = _compute_dtype(hidden, weight)
    args = (hidden, weight, targets, vocab_size, z_loss, chunk_size, dtype)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit here
        total, z = _FusedLinearLoss.apply(*args) if grad else _loss_only(*args)
    n = (targets != IGNORE_INDEX).sum()
    return total / n, (z / n).detach()
