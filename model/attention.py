"""Attention: the one attention function, and the multi-head attention module.

Design choices:
- `attention(q, k, v, causal)` is the single entry point for the attention kernel.
  Everything that needs attention calls it, so adding a backend (flash-attn,
  varlen document masking) happens here and nowhere else. Today it calls
  `torch.nn.functional.scaled_dot_product_attention`, which picks FlashAttention /
  memory-efficient kernels on GPUs and a fused kernel on CPU.
- Grouped-query attention: each key/value head serves n_heads / n_kv_heads
  consecutive query heads (query head h uses kv head h // group), as in Hugging
  Face's `repeat_kv`. K/V are expanded before SDPA rather than relying on
  `enable_gqa`, which only some SDPA backends and torch versions support.
- Layout is (B, H, T, D) throughout; no dropout (pretraining runs without it);
  no biases; the softmax scale is 1/sqrt(head_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.rope import apply_rotary


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, T, D) -> (B, Hkv * n_rep, T, D), each kv head repeated n_rep times in place."""
    if n_rep == 1:
        return x
    B, Hkv, T, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, T, D).reshape(B, Hkv * n_rep, T, D)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
) -> torch.Tensor:
    """Scaled dot-product attention with grouped-query support.

    q: (B, H, T, D); k, v: (B, Hkv, S, D) with Hkv dividing H. Returns (B, H, T, D).
    With causal=True, query t attends to keys 0..t (requires T == S).
    """
    H, Hkv = q.size(1), k.size(1)
    if H % Hkv:
        raise ValueError(f"attention: kv heads ({Hkv}) must divide query heads ({H})")
    if causal and q.size(2) != k.size(2):
        raise ValueError(f"attention: causal needs equal q/k lengths, got {q.size(2)}, {k.size(2)}")
    k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)  # (B, H, S, D)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


class Attention(nn.Module):
    """Causal multi-head self-attention with GQA and rotary embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        d_q, d_kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.wq = nn.Linear(config.d_model, d_q, bias=False)
        self.wk = nn.Linear(config.d_model, d_kv, bias=False)
        self.wv = nn.Linear(config.d_model, d_kv, bias=False)
        self.wo = nn.Linear(d_q, config.d_model, bias=False)  # output projection

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, C)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attention(q, k, v, causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.wo(y)  # (B, T, C)
