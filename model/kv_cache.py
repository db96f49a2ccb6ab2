"""Key/value cache for incremental decoding.

Design choices:
- One preallocated buffer per layer, (B, Hkv, max_len, D) for keys and for values, so
  decoding never reallocates; `length` counts the positions already written and is
  shared by every layer (the model advances it once per forward pass).
- Keys are cached after the rotary rotation, so a cached key never changes.
- The cache holds no policy: the attention module writes its new keys and values and
  attends to everything written so far.
"""

from __future__ import annotations

import torch


class LayerCache:
    """The cached keys and values of one attention layer."""

    def __init__(self, parent: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.parent, self.k, self.v = parent, k, v  # (B, Hkv, max_len, D)

    @property
    def start(self) -> int:
        """Position of the first token of the current forward pass."""
        return self.parent.length

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hkv, T, D) at the current position; return all keys/values so far."""
        start, T = self.parent.length, k.size(2)
        if start + T > self.k.size(2):
            raise ValueError(f"KV cache holds {self.k.size(2)} positions; {start + T} needed")
        self.k[:, :, start : start + T] = k
        self.v[:, :, start : start + T] = v
        return self.k[:, :, : start + T], self.v[:, :, : start + T]  # (B, Hkv, S, D)


class KVCache:
    """Per-layer key/value buffers plus the number of positions filled."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.length = 0
        self.layers = [
            LayerCache(
                self,
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
            )
            for _ in range(n_layers)
        ]

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> KVCache:
        c = model.config
        weight = model.tok_embeddings.weight
        return cls(
            c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim, weight.device, weight.dtype
        )

    def advance(self, n: int) -> None:
        self.length += n
