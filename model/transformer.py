"""The transformer: `Block` (pre-norm attention + SwiGLU) and `GPT` (the whole model).

Design choices:
- Llama layout: token embedding -> n_layers x [x + attn(norm(x)); x + mlp(norm(x))]
  -> final RMSNorm -> lm_head. No biases, no dropout, no absolute positions.
  Parameter names (`tok_embeddings`, `layers.{i}.attn.wq`, ..., `norm`, `lm_head`)
  are a contract: checkpoints and `checkpoints/hf.py` rely on them.
- The embedding and lm_head have `padded_vocab_size` rows; logits are sliced to
  `vocab_size` before they are returned or used in the loss, so the padding rows
  never receive probability mass.
- Rotary cos/sin tables live once on the model as non-persistent buffers (not in
  the state_dict) and are passed to each block.
- Two-phase construction so big models can be built on the meta device, sharded,
  then materialised: `GPT(config)` under `torch.device("meta")` allocates nothing;
  after `model.to_empty(device=...)` the caller runs `model.init_weights(seed)`,
  which fills every parameter and recomputes the rotary buffers. Built on a real
  device, `__init__` calls `init_weights()` itself (global RNG, so
  `torch.manual_seed` makes it reproducible).
- Init: normal(0, init_std) for embeddings and linears; the residual output
  projections (`wo`, `w2`) use init_std / sqrt(2 * n_layers) (GPT-2); norm gains 1.
- The loss is mean cross-entropy computed in float32 with ignore_index=-100.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import Attention
from model.config import ModelConfig
from model.mlp import SwiGLU
from model.norms import RMSNorm
from model.rope import rope_tables

IGNORE_INDEX = -100


class Block(nn.Module):
    """One pre-norm transformer layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)  # (B, T, C)
        x = x + self.mlp(self.mlp_norm(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """Llama-style decoder-only language model."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        V, C = config.padded_vocab_size, config.d_model
        self.tok_embeddings = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(C, config.norm_eps)
        self.lm_head = nn.Linear(C, V, bias=False)
        self._tie_weights()
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, D)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_seq_len, D)
        if self.tok_embeddings.weight.device.type != "meta":
            self.init_weights()

    def _tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Initialise every parameter and recompute the rotary buffers, in place.

        With `seed`, a private generator is used (same seed -> same weights, whatever
        the global RNG state); with None, the global RNG. Re-ties lm_head to the
        embedding, because `to_empty()` breaks parameter sharing.
        """
        self._tie_weights()
        device = self.tok_embeddings.weight.device
        gen = None
        if seed is not None and device.type != "meta":
            gen = torch.Generator(device=device).manual_seed(seed)
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        # named_parameters() lists a tied weight once, in a fixed order.
        for name, p in self.named_parameters():
            if isinstance(self.get_submodule(name.rsplit(".", 1)[0]), RMSNorm):
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=out_std, generator=gen)
            else:
                nn.init.normal_(p, mean=0.0, std=std, generator=gen)
        cos, sin = rope_tables(
            self.config.head_dim, self.config.max_seq_len, self.config.rope_theta, device=device
        )
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) int64 -> logits (B, T, vocab_size); with targets, (logits, loss)."""
        B, T = idx.shape
        if T > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {T} exceeds ModelConfig.max_seq_len={self.config.max_seq_len}"
            )
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D)
        for layer in self.layers:
            x = layer(x, cos, sin)  # (B, T, C)
        x = self.norm(x)
        logits = self.lm_head(x)[..., : self.config.vocab_size]  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        return logits, loss

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (a tied matrix counted once).

        exclude_embeddings drops the vocabulary matrices (tok_embeddings and lm_head),
        giving the "non-embedding" count of Kaplan et al. and Pythia.
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_embeddings.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), the PaLM / nanoGPT estimate.

        6 * N for the matmul weights plus 12 * n_layers * d_model * seq_len for the
        attention scores and values (no causal discount). N counts lm_head but not
        the embedding lookup, which is no matmul; with tied embeddings N is simply
        num_params(), as in nanoGPT.
        """
        c = self.config
        n_matmul = self.num_params(exclude_embeddings=True) + self.lm_head.weight.numel()
        return 6.0 * n_matmul + 12.0 * c.n_layers * c.d_model * seq_len
