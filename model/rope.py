"""Rotary position embeddings (Su et al., 2021) in the Hugging Face Llama convention.

Design choices:
- "rotate_half" layout: dimension i of a head is rotated together with dimension
  i + head_dim/2 (not with its neighbour i+1 as in the original Meta code). This is
  what `transformers.LlamaForCausalLM` does, so our wq/wk weights export to it
  without any permutation.
- cos/sin tables are precomputed once for `max_seq_len` positions, in float32, as
  (T, head_dim) tensors; the model keeps them as non-persistent buffers and slices
  the first T rows per forward. They are cast to the activation dtype when applied.
- Partial rotary (GPT-NeoX / Pythia `rotary_pct`): the tables are built for the
  first `rotary_dims` dims of a head only, and `apply_rotary` rotates those dims
  (rotate_half within them) and passes the rest through, as Hugging Face GPT-NeoX
  does. The table width says how many dims rotate; full rotary is the case
  rotary_dims == head_dim.
"""

from __future__ import annotations

import torch


def rope_tables(
    head_dim: int, seq_len: int, theta: float = 10000.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cos, sin), each (seq_len, head_dim) float32, for positions 0..seq_len-1.

    `head_dim` here is the number of dims that rotate (`ModelConfig.rotary_dims`).
    """
    # Same arithmetic as HF's default rope init, so the tables match to the last bit.
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)  # (D/2,)
    positions = torch.arange(seq_len, dtype=torch.int64, device=device).float()  # (T,)
    freqs = torch.outer(positions, inv_freq)  # (T, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, D): dim i and i + D/2 share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), where x1/x2 are the first/second halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(x1 c - x2 s, x2 c + x1 s, rest) for x (..., D) and half tables c, s (T, [1,] R/2)
    that broadcast against x's leading dims."""
    h = c.size(-1)
    x1, x2 = x[..., :h], x[..., h : 2 * h]  # (..., R/2) each
    parts = [x1 * c - x2 * s, x2 * c + x1 * s]
    if 2 * h < x.size(-1):
        parts.append(x[..., 2 * h :])  # (..., D - R) pass through
    return torch.cat(parts, dim=-1)


class _Rotary(torch.autograd.Function):
    """Rotation by the position's angle; its gradient is the rotation by minus that angle.
    Keeps only the tables for backward, never x (autograd would keep x and build x's
    gradient from zero-filled slices)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(c, s)
        return _rotate(x, c, s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        c, s = ctx.saved_tensors
        return _rotate(grad, c, -s), None, None


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, seq_dim: int = -2
) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position; cos/sin are (T, R) tables, R <= D dims rotate.

    `seq_dim` is where T sits in x: -2 for (B, H, T, D), 1 for (B, T, H, D), the layout
    the projections come out in (contiguous, so the elementwise work streams through
    memory instead of striding over heads). With R < D only the first R dims of each head
    rotate; the other D - R pass through. Computed on the two halves directly,
    (x1 c - x2 s, x2 c + x1 s), which is bit for bit `x * cos + rotate_half(x) * sin`
    (a + (-b) == a - b) with half the multiplications and no negated copy. The backward
    pass is the same rotation with -sin (`_Rotary`).
    """
    h = cos.size(-1) // 2
    c, s = cos[:, :h].to(x.dtype), sin[:, :h].to(x.dtype)  # (T, R/2): the halves repeat
    between = x.dim() - 2 - seq_dim % x.dim()  # dims between T and D: 0, or 1 (heads)
    c, s = c.view(-1, *[1] * between, h), s.view(-1, *[1] * between, h)  # (T, [1,] R/2)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Rotary.apply(x, c, s)
    return _rotate(x, c, s)
