"""Model configuration: one typed dataclass plus named presets (`model/presets.py`).

Design choices:
- `ModelConfig` describes a decoder-only transformer whose layout is a handful of
  plain switches (norm type, MLP type, biases, residual form, norm placement,
  partial rotary, qk-norm). The defaults are the Llama layout (RMSNorm, SwiGLU, GQA,
  full rotary, pre-norm, no biases); GPT-NeoX / Pythia and OLMo 2 are other settings
  of the same switches, not other classes. `family` names the Hugging Face class a
  config exports to (`checkpoints/hf.py` checks the switches fit it); `init` names
  the initialisation scheme (`model/init.py`).
- Every field is a plain value so a config round-trips through TOML/JSON
  (`to_dict` / `from_dict`) and into a published checkpoint's `strata.json`. Fields
  added later have defaults, so older `strata.json` files still load.
- Both classes derive from the typed-config base (`model/typed.py`): types come from
  the annotations, choices and bounds are declared on the fields with `setting`, and
  the rules between fields (shapes, MoE placement) live in `check()`. Every error is
  one line, `model.n_heads = 5: expected a divisor of d_model (64)`, and a
  `ConfigError` (a `ValueError`, wrong types included), so callers catch one type.
- Presets are code: a dict of name -> keyword arguments. A preset's `vocab_size` is
  only a default; the trainer overrides it with the tokenizer's vocabulary size.
- The embedding and output matrices are padded to `padded_vocab_size` (a multiple
  of `vocab_multiple`) for matmul efficiency; the model slices logits back to
  `vocab_size`, so users never see the padding.
- Mixture of experts is one nested, optional dataclass, `ModelConfig.moe: MoEConfig |
  None` (None: dense). A dict is accepted in its place (TOML `[model.moe]`, JSON,
  presets) and turned into a `MoEConfig`; `from_preset` merges a partial `moe` dict
  over the preset's own. `to_dict` writes it as a nested dict (or None).
  MoE replaces the MLP of block i when (i + 1) % moe.every == 0 (every = 1: all
  blocks; 2: blocks 1, 3, 5, ...; the convention of GShard and HF `decoder_sparse_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata.model.presets import PRESETS
from strata.model.typed import ConfigError, Typed, setting, unknown_key


@dataclass
class MoEConfig(Typed):
    """Mixture-of-experts feed-forward layers (model/moe.py): token-choice top-k, dropless."""

    PREFIX = "model.moe."

    num_experts: int = setting(gt=0)
    """Routed experts per MoE layer."""
    top_k: int = setting(ge=1)
    """Experts each token is sent to (1 <= top_k <= num_experts)."""
    d_ff_expert: int = setting(gt=0)
    """Hidden size of each (SwiGLU) expert."""
    every: int = setting(1, gt=0)
    """MoE replaces the MLP of block i when (i + 1) % every == 0; 1: every block."""
    shared_experts: int = setting(0, ge=0)
    """Always-on experts (DeepSeekMoE); stored as one SwiGLU of shared_experts * d_ff_expert."""
    norm_topk_probs: bool = False
    """Renormalise the top-k router probabilities to sum to 1 (OLMoE: false)."""
    aux_loss_coef: float = setting(0.01, ge=0)
    """Weight of the load-balancing loss E * sum_i f_i * P_i (mean over MoE layers)."""
    z_loss_coef: float = setting(0.001, ge=0)
    """Weight of the router z-loss mean(logsumexp(router logits)^2) (mean over MoE layers)."""
    balance: str = setting("aux_loss", choices=("aux_loss", "bias"))
    """"aux_loss"; or "bias": DeepSeek-V3 selection bias, updated by `MoE.update_bias`."""
    bias_update_rate: float = setting(1e-3, ge=0)
    """Step of the "bias" update: bias += rate * sign(mean load - load)."""
    capacity_factor: float | None = setting(None, gt=0)
    """None: dropless; else each expert takes at most ceil(cf * tokens * top_k / E) tokens."""

    def check(self) -> None:
        if self.top_k > self.num_experts:
            self.fail("top_k", f"at most num_experts ({self.num_experts})")


@dataclass
class ModelConfig(Typed):
    """Architecture of a decoder-only transformer (Llama layout unless told otherwise)."""

    PREFIX = "model."

    vocab_size: int = setting(gt=0)
    """Number of real tokens (the tokenizer's vocabulary size)."""
    d_model: int = setting(gt=0)
    """Width of the residual stream."""
    n_layers: int = setting(gt=0)
    """Number of transformer blocks."""
    n_heads: int = setting(gt=0)
    """Number of query heads; must divide d_model."""
    n_kv_heads: int = setting(gt=0)
    """Number of key/value heads (grouped-query attention); must divide n_heads."""
    d_ff: int = setting(gt=0)
    """Hidden size of the MLP (SwiGLU: per branch; GELU: the 4 * d_model of GPT-NeoX)."""
    max_seq_len: int = setting(gt=0)
    """Longest sequence the model accepts; rotary tables are precomputed to this length."""
    rope_theta: float = setting(10000.0, gt=0)
    """Base of the rotary frequencies."""
    norm_eps: float = setting(1e-5, gt=0)
    """Epsilon of every norm (RMSNorm or LayerNorm)."""
    tie_embeddings: bool = False
    """Share the token embedding matrix with the output projection (lm_head)."""
    init_std: float = setting(0.02, gt=0)
    """Std of the normal init for the "llama" and "olmo2" schemes ("neox" derives its own)."""
    vocab_multiple: int = setting(64, gt=0)
    """Embedding/output rows are padded to a multiple of this (1 disables padding)."""
    family: str = setting("llama", choices=("llama", "neox", "olmo2", "olmoe"))
    """Hugging Face class this maps to: "llama" (Llama), "neox" (GPT-NeoX), "olmo2" (OLMo 2)."""
    norm: str = setting("rmsnorm", choices=("rmsnorm", "layernorm"))
    """Norm type: "rmsnorm" or "layernorm"."""
    norm_bias: bool = False
    """Give every LayerNorm a bias (GPT-NeoX); needs norm="layernorm"."""
    mlp: str = setting("swiglu", choices=("swiglu", "gelu"))
    """MLP type: "swiglu" (w2(silu(w1 x) * w3 x)) or "gelu" (w2(gelu(w1 x)), GPT-NeoX)."""
    bias: bool = False
    """Biases on the attention q/k/v/o projections and the MLP linears."""
    parallel_residual: bool = False
    """GPT-NeoX residual: x + attn(norm1(x)) + mlp(norm2(x)) instead of two sequential adds."""
    rotary_pct: float = setting(1.0, gt=0, le=1)
    """Fraction of each head's dims that rotate (the first ones; Pythia: 0.25)."""
    qk_norm: bool = False
    """Norm over the whole q and k projections (all heads together) before rotary (OLMo 2)."""
    norm_placement: str = setting("pre", choices=("pre", "post"))
    """Where norms go: "pre", x + f(norm(x)); "post", x + norm(f(x)), no input norm (OLMo 2)."""
    init: str = setting("llama", choices=("llama", "neox", "olmo2"))
    """Init scheme: "llama", "neox" (small_init + wang_init) or "olmo2" (see model/init.py)."""
    z_loss: float = setting(0.0, ge=0)
    """Coefficient of PaLM's z-loss, mean of log(Z)^2 over real targets, added to the loss."""
    loss_chunk_size: int = setting(1024, ge=0)
    """> 0: lm_head fused into the loss over chunks of this many positions (logits never
    whole, gradients computed in forward; model/loss.py); 0: plain loss on whole logits."""
    document_mask: bool = False
    """When true the trainer passes segment ids so attention never crosses an EOS boundary."""
    moe: MoEConfig | None = None
    """Mixture-of-experts layers (a `MoEConfig`, or its dict); None: every block is dense."""

    def check(self) -> None:
        self._check_shapes()
        if self.moe is None:
            return
        if self.moe.every > self.n_layers:
            self.moe.fail("every", f"at most n_layers ({self.n_layers}): else no block is MoE")
        if self.mlp != "swiglu":
            self.fail("mlp", "'swiglu' when model.moe is set (experts are SwiGLU)")

    def moe_layer(self, i: int) -> bool:
        """Whether block i is a mixture-of-experts block: (i + 1) % moe.every == 0."""
        return self.moe is not None and (i + 1) % self.moe.every == 0

    def _check_shapes(self) -> None:
        if self.d_model % self.n_heads:
            self.fail("n_heads", f"a divisor of d_model ({self.d_model})")
        if self.n_heads % self.n_kv_heads:
            self.fail("n_kv_heads", f"a divisor of n_heads ({self.n_heads})")
        if self.rotary_pct == 1.0 and self.head_dim % 2:
            self.fail(
                "n_heads", f"an even head_dim (d_model / n_heads = {self.head_dim}) for rotary"
            )
        if self.rotary_dims % 2 or self.rotary_dims == 0:
            self.fail(
                "rotary_pct",
                f"an even number > 0 of rotary dims (head_dim {self.head_dim} gives "
                f"{self.rotary_dims})",
            )
        if self.norm_bias and self.norm != "layernorm":
            self.fail("norm_bias", f"false with norm = {self.norm!r} (a bias needs 'layernorm')")

    @property
    def head_dim(self) -> int:
        """Width of one attention head (d_model // n_heads)."""
        return self.d_model // self.n_heads

    @property
    def rotary_dims(self) -> int:
        """Dims of each head that rotate: int(head_dim * rotary_pct), as Hugging Face computes."""
        return int(self.head_dim * self.rotary_pct)

    @property
    def padded_vocab_size(self) -> int:
        """vocab_size rounded up to a multiple of vocab_multiple."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by `from_preset`."""
        return list(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Build the named preset, replacing any fields given as keyword arguments."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; valid presets: {cls.presets()}")
        valid = list(cls.__dataclass_fields__)
        for key in overrides:
            if key not in valid:
                raise unknown_key(cls.spell(key), key, valid)
        base = PRESETS[name]
        if isinstance(overrides.get("moe"), dict) and isinstance(base.get("moe"), dict):
            overrides = {**overrides, "moe": {**base["moe"], **overrides["moe"]}}
        return cls(**{**base, **overrides})
