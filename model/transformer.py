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
- Two return types, on purpose: `model(idx)` (no targets: inference, generation, the
  study, Hugging Face comparisons) returns the plain logits tensor (B, T, vocab_size);
  `model(idx, targets)` (training, evaluation) returns a `ModelOutput`, a frozen
  dataclass read by name: `loss` (the total to backpropagate), `ce` (cross-entropy
  alone), the weighted extra terms `z_loss`, `moe_aux_loss`, `moe_z_loss` (detached,
  0-dim, zero when off, so loss = ce + z_loss + moe_aux_loss + moe_z_loss up to
  rounding), `moe_counts` ("layers.<i>" -> (E,) assignments) and `logits`. A dataclass
  and not a tuple so that it cannot be unpacked or indexed by position by mistake;
  FSDP2, activation checkpointing and torch.compile all traverse dataclass outputs.
  The model keeps no state from one forward to the next and never logs.
- The loss (`model/loss.py`) is mean cross-entropy in float32 with ignore_index=-100,
  plus PaLM's z-loss when `config.z_loss > 0`. With `config.loss_chunk_size > 0` (the
  default) it is computed in chunks from the hidden states, the lm_head fused into it,
  and `ModelOutput.logits` is None: the whole-batch logits are never built.
  `loss_chunk_size = 0` returns them.
- `segment_ids` (B, T) pass straight through to the attention kernel (document
  masking); the model never builds them.
- Mixture of experts (`config.moe`, model/moe.py): block i holds an `MoE` instead of the
  MLP, under the same name `mlp`, when `config.moe_layer(i)`. Every block returns
  (x, MoEAux or None): an MoE returns its unweighted losses and counts from forward and
  the block passes them up, so nothing is left on a module (activation checkpointing,
  compile and FSDP wrappers around a block see a plain output). With targets,
  `GPT.forward` adds aux_loss_coef * mean over MoE layers of the load-balancing loss
  plus z_loss_coef * mean over MoE layers of the router z-loss to the loss; a dense
  model's loss is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from strata.model.attention import Attention
from strata.model.config import ModelConfig
from strata.model.init import init_parameters
from strata.model.kv_cache import KVCache, LayerCache
from strata.model.loss import IGNORE_INDEX, chunked_loss, loss_from_logits
from strata.model.mlp import make_mlp
from strata.model.moe import MoE, MoEAux
from strata.model.norms import make_norm
from strata.model.rope import rope_tables
from torch import nn

__all__ = ["GPT", "IGNORE_INDEX", "Block", "MoE", "ModelOutput"]


@dataclass(frozen=True)
class ModelOutput:
    """What `GPT.forward(idx, targets)` returns; every loss field is 0-dim float32 (or
    float64 for a float64 model). Only `loss` carries a gradient."""

    loss: torch.Tensor
    """The total to backpropagate: ce + z_loss + moe_aux_loss + moe_z_loss."""
    ce: torch.Tensor
    """Mean cross-entropy over real targets alone (what the trainer logs), detached."""
    z_loss: torch.Tensor
    """`config.z_loss` * mean log(Z)^2, detached; zero when z_loss = 0."""
    moe_aux_loss: torch.Tensor
    """moe.aux_loss_coef * mean over MoE layers of the load-balancing loss, detached;
    zero for a dense model."""
    moe_z_loss: torch.Tensor
    """moe.z_loss_coef * mean over MoE layers of the router z-loss, detached; zero when dense."""
    moe_counts: dict[str, torch.Tensor]
    """"layers.<i>" -> (E,) int64 token-assignments of that MoE layer; {} when dense."""
    logits: torch.Tensor | None
    """(B, T, vocab_size) with `loss_chunk_size = 0`; None with the fused chunked loss."""


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

    def _ffn(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEAux | None]:
        """(the MLP's output, None), or the MoE's (output, MoEAux)."""
        return self.mlp(x) if self.is_moe else (self.mlp(x), None)

    def _mlp(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEAux | None]:
        if not self.post_norm:
            return self._ffn(self.mlp_norm(x))
        out, aux = self._ffn(x)
        return self.mlp_norm(out), aux

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> tuple[torch.Tensor, MoEAux | None]:
        """(x (B, T, C) after the layer, the MoE's unweighted losses and counts or None)."""
        if self.parallel:
            attn = self._attn(x, cos, sin, segment_ids, cache)  # (B, T, C)
            mlp, aux = self._mlp(x)  # (B, T, C)
            return x + attn + mlp, aux
        x = x + self._attn(x, cos, sin, segment_ids, cache)  # (B, T, C)
        mlp, aux = self._mlp(x)  # (B, T, C)
        return x + mlp, aux


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
    ) -> torch.Tensor | ModelOutput:
        """idx (B, T) int64 -> logits (B, T, vocab_size); with targets (B, T), a `ModelOutput`.

        segment_ids (B, T): document ids for the attention kernel (model/attention.py).
        With targets and `config.loss_chunk_size > 0` no logits are built (`logits` None).
        With a `KVCache` (model/kv_cache.py), idx continues the cached positions.
        """
        c = self.config
        x, auxes = self._hidden(idx, segment_ids, cache)  # (B, T, C), {"layers.<i>": MoEAux}
        if targets is None:
            return self.lm_head(x)[..., : c.vocab_size]  # (B, T, V)
        if c.loss_chunk_size > 0:
            logits = None
            loss, z = chunked_loss(
                x, self.lm_head.weight, targets, c.vocab_size, c.z_loss, c.loss_chunk_size
            )
        else:
            logits = self.lm_head(x)[..., : c.vocab_size]  # (B, T, V)
            loss, z = loss_from_logits(logits, targets, c.z_loss)
        return self._output(loss, z, logits, auxes)

    def _hidden(
        self, idx: torch.Tensor, segment_ids: torch.Tensor | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, dict[str, MoEAux]]:
        """(final-norm hidden states (B, T, C), each MoE layer's unweighted aux by name)."""
        B, T = idx.shape
        c = self.config
        start = cache.length if cache is not None else 0
        if start + T > c.max_seq_len:
            raise ValueError(
                f"sequence length {start + T} exceeds ModelConfig.max_seq_len={c.max_seq_len}"
            )
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, R)
        auxes: dict[str, MoEAux] = {}
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            x, aux = layer(x, cos, sin, segment_ids, layer_cache)  # (B, T, C)
            if aux is not None:
                auxes[f"layers.{i}"] = aux
        if cache is not None:
            cache.advance(T)
        return self.norm(x), auxes  # (B, T, C)

    def _output(
        self,
        loss: torch.Tensor,
        z: torch.Tensor,
        logits: torch.Tensor | None,
        auxes: dict[str, MoEAux],
    ) -> ModelOutput:
        """The `ModelOutput` of a loss (with its z term) and the MoE layers' aux: the
        weighted router losses (means over MoE layers) are added to the loss."""
        ce = (loss - z).detach()
        if not auxes:  # dense: the loss untouched
            zero = ce.new_zeros(())
            return ModelOutput(loss, ce, z, zero, zero, {}, logits)
        m = self.config.moe
        aux = m.aux_loss_coef * torch.stack([a.aux_loss for a in auxes.values()]).mean()
        router_z = m.z_loss_coef * torch.stack([a.z_loss for a in auxes.values()]).mean()
        counts = {name: a.counts for name, a in auxes.items()}
        total = loss + (aux + router_z)
        return ModelOutput(total, ce, z, aux.detach(), router_z.detach(), counts, logits)

    def moe_layers(self) -> Iterator[tuple[str, MoE]]:
        """("layers.<i>", MoE module) for every mixture-of-experts block, in order."""
        for i, block in enumerate(self.layers):
            if isinstance(block.mlp, MoE):  # also through checkpoint/compile wrappers
                yield f"layers.{i}", block.mlp

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
