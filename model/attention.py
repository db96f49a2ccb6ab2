"""The multi-head attention module; the attention kernel itself is `model/attention_backend.py`.

Design choices:
- `attention(q, k, v, causal, segment_ids)` from `model.attention_backend` is the
  single entry point for the attention kernel (flash-attn or SDPA, grouped-query
  attention and document masking handled there). It is re-exported here and from
  `strata.model`, so `from strata.model import attention` keeps working; this module only builds
  q, k, v and calls it.
- `segment_ids` (B, T) is passed through untouched: positions with different ids
  never attend to each other. The model does not build them (the trainer does,
  when `ModelConfig.document_mask` is set).
- Projections `wq`, `wk`, `wv`, `wo` are separate linears (GPT-NeoX's fused
  query_key_value is split on import, fused on export); `bias` adds biases to all four.
- qk-norm (OLMo 2): one norm over the whole q projection (d_q = n_heads * head_dim)
  and one over the whole k projection (n_kv_heads * head_dim), applied before the
  split into heads and before rotary, as Hugging Face `Olmo2Attention` does.
- Rotary may be partial: the cos/sin tables are `rotary_dims` wide and only the
  first `rotary_dims` dims of each head rotate (see `model/rope.py`).
- Incremental decoding: with a `LayerCache` (model/kv_cache.py) the new keys and
  values are appended to the cache and the queries attend to everything cached. A
  prompt is prefilled from position 0 (causal); later calls add one position each.
- Layout is (B, H, T, D) throughout; no dropout; the softmax scale is 1/sqrt(head_dim).
"""

from __future__ import annotations

import torch
from strata.model.attention_backend import attention
from strata.model.config import ModelConfig
from strata.model.kv_cache import LayerCache
from strata.model.norms import make_norm
from strata.model.rope import apply_rotary
from torch import nn

__all__ = ["Attention", "attention"]


class Attention(nn.Module):
    """Causal multi-head self-attention with GQA, rotary embeddings and optional qk-norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        d_q, d_kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.wq = nn.Linear(config.d_model, d_q, bias=config.bias)
        self.wk = nn.Linear(config.d_model, d_kv, bias=config.bias)
        self.wv = nn.Linear(config.d_model, d_kv, bias=config.bias)
        self.wo = nn.Linear(d_q, config.d_model, bias=config.bias)  # output projection
        self.q_norm = make_norm(config, d_q) if config.qk_norm else None
        self.k_norm = make_norm(config, d_kv) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, C)
        q, k, v = self.wq(x), self.wk(x), self.wv(x)  # (B, T, H*D), (B, T, Hkv*D) x 2
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # over all heads at once
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        # rotary while the heads are still contiguous, then heads first for the kernel
        q, k = apply_rotary(q, cos, sin, seq_dim=1), apply_rotary(k, cos, sin, seq_dim=1)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, D), (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        causal = True
        if cache is not None:
            if cache.start > 0 and T > 1:
                raise ValueError("KV cache: after the prompt, feed one position at a time")
            causal = cache.start == 0  # a prefill is causal; one new query sees all keys
            k, v = cache.update(k, v)  # (B, Hkv, S, D), S = cached + T
        y = attention(q, k, v, causal=causal, segment_ids=segment_ids)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.wo(y)  # (B, T, C)
