"""The transformer: `Block` (attention + MLP with residuals) and `GPT` (the whole model).

Design choices:
- One block class whose layout comes from the config (`model/config.py`):
  token embedding -> n_layers x block -> final norm -> lm_head, where a block is
  pre-norm sequential (Llama): x = x + attn(norm1(x)); x = x + mlp(norm2(x)),
  pre-norm parallel (GPT-NeoX): x = x + attn(norm1(x)) + mlp(norm2(x)), or
  post-norm (OLMo 2, "reordered norm"): x = x + norm1(attn(x)); x = x + norm2(mlp(x)).
  No dropout, no absolute positions. Parameter names (`tok_embeddings`,
  `layers.{i}.attn_norm`, `layers.{i}.attn.wq`, ..., `layers.{i}.mlp_norm`,
  `layers.{i}.mlp.w1`, `norm`, `lm_head`) are a contract: checkpoints and
  `checkpoints/hf_weights.py` rely on them. `attn_norm` / `mlp_norm` name the norm that
  belongs to each sublayer, whether it sits before it (pre) or after it (post).
- The embedding and lm_head have `padded_vocab_size` rows; logits are sliced to
  `vocab_size` before they are returned or used in the loss, so the padding rows
  never receive probability mass.
- Rotary cos/sin tables (`rotary_dims` wide) live once on the model as
  non-persistent buffers (not in the state_dict) and are passed to each block.
- Two-phase construction so big models can be built on the meta device, sharded,
  then materialised: `GPT(config)` under `torch.device("meta")` allocates nothing;
  after `model.to_empty(device=...)` the caller runs `model.init_weights(seed)`,
  which fills every parameter (scheme `config.init`, see `model/init.py`) and
  recomputes the rotary buffers. Built on a real device, `__init__` calls
  `init_weights()` itself (global RNG, so `torch.manual_seed` makes it reproducible).
- The loss (`model/loss.py`) is mean cross-entropy in float32 with ignore_index=-100,
  plus PaLM's z-loss when `config.z_loss > 0`; forward returns the total and keeps
  the z term (already scaled by z_loss, detached) in `model.last_z_loss` for logging.
  With `config.loss_chunk_size > 0` (the default) the loss is computed in chunks from
  the hidden states, the lm_head fused into it, and forward returns `(None, loss)`:
  the whole-batch logits are never built. `loss_chunk_size = 0` returns them.
- `segment_ids` (B, T) pass straight through to the attention kernel (document
  masking); the model never builds them.
- Mixture of experts (`config.moe`, model/moe.py): block i holds an `MoE` instead of the
  MLP, under the same name `mlp`, when `config.moe_layer(i)`. Each MoE forward leaves
  its unweighted losses and counts on the module (`MoE.last_aux`); after the blocks,
  `GPT.forward` collects them (so activation checkpointing, compile and FSDP wrappers
  around a block change nothing) and adds aux_loss_coef * mean over MoE layers of the
  load-balancing loss plus z_loss_coef * mean over MoE layers of the router z-loss to
  the returned loss whenever targets are given. The weighted terms (detached, 0-dim
  float32, zero for dense models) are `last_moe_aux_loss` / `last_moe_z_loss`, and
  `last_moe_counts` maps "layers.<i>" to that layer's (E,) assignment counts, so
  cross-entropy = loss - last_z_loss - last_moe_aux_loss - last_moe_z_loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from strata.model.attention import Attention
from strata.model.config import ModelConfig
from strata.model.init import init_parameters
from strata.model.kv_cache import KVCache, LayerCache
from strata.model.loss import IGNORE_INDEX, chunked_loss, loss_from_logits
from strata.model.mlp import make_mlp
from strata.model.moe import MoE
from strata.model.norms import make_norm
from strata.model.rope import rope_tables

__all__ = ["GPT", "IGNORE_INDEX", "Block", "MoE"]


class Block(nn.Module):
    """One transformer layer: pre- or post-norm, sequential or parallel residual."""

    def __init__(self, config: ModelConfig, layer_id: int = 0) -> None:
        super().__init__()
        self.attn_norm = make_norm(config, config.d_model)
        self.attn = Attention(config)
        self.mlp_norm = make_norm(config, config.d_model)
        self.is_moe = config.moe_layer(layer_id)
        self.mlp = MoE(config) if self.is_moe else make_mlp(config)
        self.parallel = config.parallel_residual
        self.post_norm = config.norm_placement == "post"

    def _attn(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        seg: torch.Tensor | None,
        cache: LayerCache | None,
    ) -> torch.Tensor:
        if self.post_norm:
            return self.attn_norm(self.attn(x, cos, sin, seg, cache))
        return self.attn(self.attn_norm(x), cos, sin, seg, cache)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP, or the MoE's output alone (its aux stays on the module, `MoE.last_aux`)."""
        return self.mlp(x)[0] if self.is_moe else self.mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_norm(self._ffn(x)) if self.post_norm else self._ffn(self.mlp_norm(x))

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        if self.parallel:
            return x + self._attn(x, cos, sin, segment_ids, cache) + self._mlp(x)  # (B, T, C)
        x = x + self._attn(x, cos, sin, segment_ids, cache)  # (B, T, C)
        return x + self._mlp(x)  # (B, T, C)


class GPT(nn.Module):
    """Decoder-only language model (Llama, GPT-NeoX or OLMo 2 layout, from the config)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        V, C = config.padded_vocab_size, config.d_model
        self.tok_embeddings = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config, C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self._tie_weights()
        self.last_z_loss: torch.Tensor | None = None  # z term of the last loss, detached
        self.last_moe_aux_loss: torch.Tensor | None = None  # weighted, detached, 0-dim
        self.last_moe_z_loss: torch.Tensor | None = None  # weighted, detached, 0-dim
        self.last_moe_counts: dict[str, torch.Tensor] = {}  # "layers.<i>" -> (E,) counts
        cos, sin = rope_tables(config.rotary_dims, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, R)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_seq_len, R)
        if self.tok_embeddings.weight.device.type != "meta":
            self.init_weights()

    def _tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Initialise every parameter (scheme `config.init`) and the rotary buffers, in place.

        With `seed`, a private generator is used (same seed -> same weights, whatever
        the global RNG state); with None, the global RNG. Re-ties lm_head to the
        embedding, because `to_empty()` breaks parameter sharing.
        """
        self.init_buffers()
        device = self.tok_embeddings.weight.device
        gen = None
        if seed is not None and device.type != "meta":
            gen = torch.Generator(device=device).manual_seed(seed)
        init_parameters(self, self.config, gen)

    @torch.no_grad()
    def init_buffers(self) -> None:
        """Everything `init_weights` does but the random draws: re-tie lm_head, zero the
        routing biases, fill the rotary tables (buffers are garbage after `to_empty()`)."""
        self._tie_weights()
        for _, moe in self.moe_layers():
            moe.router.reset_bias()
        c = self.config
        device = self.rope_cos.device
        cos, sin = rope_tables(c.rotary_dims, c.max_seq_len, c.rope_theta, device=device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor]:
        """idx (B, T) int64 -> logits (B, T, vocab_size); with targets, (logits, loss).

        segment_ids (B, T): document ids for the attention kernel (model/attention.py).
        With targets and `config.loss_chunk_size > 0` no logits are built: (None, loss).
        The loss includes the z-loss; the z term alone (detached) is `self.last_z_loss`.
        With MoE layers it also includes the weighted router losses (`last_moe_aux_loss`,
        `last_moe_z_loss`; see the module docstring).
        With a `KVCache` (model/kv_cache.py), idx continues the cached positions.
        """
        B, T = idx.shape
        c = self.config
        start = cache.length if cache is not None else 0
        if start + T > c.max_seq_len:
            raise ValueError(
                f"sequence length {start + T} exceeds ModelConfig.max_seq_len={c.max_seq_len}"
            )
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, R)
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            x = layer(x, cos, sin, segment_ids, layer_cache)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        moe_loss = self._moe_losses(x)  # () weighted router losses, 0 when dense
        x = self.norm(x)  # (B, T, C)
        if targets is not None and c.loss_chunk_size > 0:
            loss, self.last_z_loss = chunked_loss(
                x, self.lm_head.weight, targets, c.vocab_size, c.z_loss, c.loss_chunk_size
            )
            return None, self._add_moe(loss, moe_loss)
        logits = self.lm_head(x)[..., : c.vocab_size]  # (B, T, V)
        if targets is None:
            return logits
        loss, self.last_z_loss = loss_from_logits(logits, targets, c.z_loss)
        return logits, self._add_moe(loss, moe_loss)

    def _add_moe(self, loss: torch.Tensor, moe_loss: torch.Tensor) -> torch.Tensor:
        return loss + moe_loss if self.config.moe is not None else loss  # dense: untouched

    def moe_layers(self) -> Iterator[tuple[str, MoE]]:
        """("layers.<i>", MoE module) for every mixture-of-experts block, in order."""
        for i, block in enumerate(self.layers):
            if isinstance(block.mlp, MoE):  # also through checkpoint/compile wrappers
                yield f"layers.{i}", block.mlp

    def _moe_losses(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted router losses of the forward that just ran (mean over MoE layers);
        records `last_moe_aux_loss`, `last_moe_z_loss`, `last_moe_counts`."""
        zero = x.new_zeros((), dtype=torch.promote_types(x.dtype, torch.float32))
        auxes = {name: moe.last_aux for name, moe in self.moe_layers()}
        for _, moe in self.moe_layers():
            moe.last_aux = None  # do not keep the graph alive until the next forward
        if not auxes:
            self.last_moe_aux_loss, self.last_moe_z_loss, self.last_moe_counts = zero, zero, {}
            return zero
        m = self.config.moe
        aux = m.aux_loss_coef * torch.stack([a.aux_loss for a in auxes.values()]).mean()
        z = m.z_loss_coef * torch.stack([a.z_loss for a in auxes.values()]).mean()
        self.last_moe_aux_loss, self.last_moe_z_loss = aux.detach(), z.detach()
        self.last_moe_counts = {name: a.counts for name, a in auxes.items()}
        return aux + z

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

        6 * N for the matmul weights a token uses plus 12 * n_layers * d_model * seq_len
        for the attention scores and values (no causal discount). N counts the active
        parameters (`active_params`: top_k of each MoE layer's routed experts) with
        lm_head but not the embedding lookup, which is no matmul; for a dense model with
        tied embeddings N is simply num_params(), as in nanoGPT.
        """
        c = self.config
        n_matmul = self.active_params(exclude_embeddings=True) + self.lm_head.weight.numel()
        return 6.0 * n_matmul + 12.0 * c.n_layers * c.d_model * seq_len

    def active_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters one token uses: num_params() less the routed experts it skips
        (E - top_k per MoE layer); router, shared experts and dense parts all count."""
        n = self.num_params(exclude_embeddings)
        for _, moe in self.moe_layers():
            per_expert = sum(p.numel() for p in moe.experts.parameters()) // moe.num_experts
            n -= (moe.num_experts - moe.top_k) * per_expert
        return n
