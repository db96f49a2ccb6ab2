"""Rotary position embeddings (Su et al., 2021) in the Hugging Face Llama convention.

Design choices:
- "rotate_half" layout: dimension i of a head is rotated together with dimension
  i + head_dim/2 (not with its neighbour i+1 as in the original Meta code). This is
  what `transformers.LlamaForCausalLM` does, so our wq/wk weights export to it
  without any permutation.
- cos/sin tables are precomputed once for `max_seq_len` positions, in float32, as
  (T, head_dim) tensors; the model keeps them as non-persistent buffers and slices
  the first T rows per forward. They are cast to the activation dtype when applied.
- Full rotary (every dimension of the head rotates); partial rotary can be added
  here later without touching attention.
"""

from __future__ import annotations

import torch


def rope_tables(
    head_dim: int, seq_len: int, theta: float = 10000.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cos, sin), each (seq_len, head_dim) float32, for positions 0..seq_len-1."""
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


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position; cos/sin are (T, D) tables for those positions."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, D), broadcast over (B, H)
    return x * cos + rotate_half(x) * sin
