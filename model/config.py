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
- Validation happens once, in `__post_init__`. Every error is one line naming the
  field and what was expected, and every error is a `ValueError` (wrong types
  included), so callers need to catch one exception type.
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

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from strata.model.presets import PRESETS

# The allowed values of each string field.
CHOICES: dict[str, tuple[str, ...]] = {
    "family": ("llama", "neox", "olmo2", "olmoe"),
    "norm": ("rmsnorm", "layernorm"),
    "mlp": ("swiglu", "gelu"),
    "norm_placement": ("pre", "post"),
    "init": ("llama", "neox", "olmo2"),
}
# Fields that must be > 0 (the rest of the numbers may be 0, or are checked apart).
_POSITIVE = (
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len",
    "rope_theta", "norm_eps", "init_std", "vocab_multiple",
)  # fmt: skip
_NON_NEGATIVE = ("z_loss", "loss_chunk_size")
BALANCE = ("aux_loss", "bias")


@dataclass
class MoEConfig:
    """Mixture-of-experts feed-forward layers (model/moe.py): token-choice top-k, dropless."""

    num_experts: int
    """Routed experts per MoE layer."""
    top_k: int
    """Experts each token is sent to (1 <= top_k <= num_experts)."""
    d_ff_expert: int
    """Hidden size of each (SwiGLU) expert."""
    every: int = 1
    """MoE replaces the MLP of block i when (i + 1) % every == 0; 1: every block."""
    shared_experts: int = 0
    """Always-on experts (DeepSeekMoE); stored as one SwiGLU of shared_experts * d_ff_expert."""
    norm_topk_probs: bool = False
    """Renormalise the top-k router probabilities to sum to 1 (OLMoE: false)."""
    aux_loss_coef: float = 0.01
    """Weight of the load-balancing loss E * sum_i f_i * P_i (mean over MoE layers)."""
    z_loss_coef: float = 0.001
    """Weight of the router z-loss mean(logsumexp(router logits)^2) (mean over MoE layers)."""
    balance: str = "aux_loss"
    """"aux_loss"; or "bias": DeepSeek-V3 selection bias, updated by `MoE.update_bias`."""
    bias_update_rate: float = 1e-3
    """Step of the "bias" update: bias += rate * sign(mean load - load)."""
    capacity_factor: float | None = None
    """None: dropless; else each expert takes at most ceil(cf * tokens * top_k / E) tokens."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f"moe.{f.name}", getattr(self, f.name), f.type)
            if f.type.startswith("float") and getattr(self, f.name) is not None:
                setattr(self, f.name, float(getattr(self, f.name)))
        for name in ("num_experts", "d_ff_expert", "every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.moe.{name}={getattr(self, name)} must be > 0")
        for name in ("shared_experts", "aux_loss_coef", "z_loss_coef", "bias_update_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.moe.{name}={getattr(self, name)} must be >= 0")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(
                f"ModelConfig.moe.top_k={self.top_k} must be in [1, num_experts={self.num_experts}]"
            )
        if self.balance not in BALANCE:
            raise ValueError(
                f"ModelConfig.moe.balance={self.balance!r} must be one of {list(BALANCE)}"
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(
                f"ModelConfig.moe.capacity_factor={self.capacity_factor} must be > 0 "
                "(or None: dropless)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEConfig:
        """From a plain dict (TOML `[model.moe]`, JSON); unknown or missing keys raise."""
        _check_keys(d, "key", cls, "ModelConfig.moe")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in d]
        if missing:
            raise ValueError(f"ModelConfig.moe is missing required field(s) {missing}")
        return cls(**d)


@dataclass
class ModelConfig:
    """Architecture of a decoder-only transformer (Llama layout unless told otherwise)."""

    vocab_size: int
    """Number of real tokens (the tokenizer's vocabulary size)."""
    d_model: int
    """Width of the residual stream."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Number of query heads; must divide d_model."""
    n_kv_heads: int
    """Number of key/value heads (grouped-query attention); must divide n_heads."""
    d_ff: int
    """Hidden size of the MLP (SwiGLU: per branch; GELU: the 4 * d_model of GPT-NeoX)."""
    max_seq_len: int
    """Longest sequence the model accepts; rotary tables are precomputed to this length."""
    rope_theta: float = 10000.0
    """Base of the rotary frequencies."""
    norm_eps: float = 1e-5
    """Epsilon of every norm (RMSNorm or LayerNorm)."""
    tie_embeddings: bool = False
    """Share the token embedding matrix with the output projection (lm_head)."""
    init_std: float = 0.02
    """Std of the normal init for the "llama" and "olmo2" schemes ("neox" derives its own)."""
    vocab_multiple: int = 64
    """Embedding/output rows are padded to a multiple of this (1 disables padding)."""
    family: str = "llama"
    """Hugging Face class this maps to: "llama" (Llama), "neox" (GPT-NeoX), "olmo2" (OLMo 2)."""
    norm: str = "rmsnorm"
    """Norm type: "rmsnorm" or "layernorm"."""
    norm_bias: bool = False
    """Give every LayerNorm a bias (GPT-NeoX); needs norm="layernorm"."""
    mlp: str = "swiglu"
    """MLP type: "swiglu" (w2(silu(w1 x) * w3 x)) or "gelu" (w2(gelu(w1 x)), GPT-NeoX)."""
    bias: bool = False
    """Biases on the attention q/k/v/o projections and the MLP linears."""
    parallel_residual: bool = False
    """GPT-NeoX residual: x + attn(norm1(x)) + mlp(norm2(x)) instead of two sequential adds."""
    rotary_pct: float = 1.0
    """Fraction of each head's dims that rotate (the first ones; Pythia: 0.25)."""
    qk_norm: bool = False
    """Norm over the whole q and k projections (all heads together) before rotary (OLMo 2)."""
    norm_placement: str = "pre"
    """Where norms go: "pre", x + f(norm(x)); "post", x + norm(f(x)), no input norm (OLMo 2)."""
    init: str = "llama"
    """Init scheme: "llama", "neox" (small_init + wang_init) or "olmo2" (see model/init.py)."""
    z_loss: float = 0.0
    """Coefficient of PaLM's z-loss, mean of log(Z)^2 over real targets, added to the loss."""
    loss_chunk_size: int = 1024
    """> 0: lm_head fused into the loss over chunks of this many positions (logits never
    whole, gradients computed in forward; model/loss.py); 0: plain loss on whole logits."""
    document_mask: bool = False
    """When true the trainer passes segment ids so attention never crosses an EOS boundary."""
    moe: MoEConfig | None = None
    """Mixture-of-experts layers (a `MoEConfig`, or its dict); None: every block is dense."""

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = MoEConfig.from_dict(self.moe)
        if self.moe is not None and not isinstance(self.moe, MoEConfig):
            raise ValueError(
                f"ModelConfig.moe={self.moe!r} must be a MoEConfig, a dict or None, "
                f"got {type(self.moe).__name__}"
            )
        for f in dataclasses.fields(self):
            if f.name != "moe":
                _check_type(f.name, getattr(self, f.name), f.type)
        # Accept ints for float fields (TOML writes `rope_theta = 10000`).
        for f in dataclasses.fields(self):
            if f.type == "float":
                setattr(self, f.name, float(getattr(self, f.name)))
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} must be > 0")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} must be >= 0")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"ModelConfig.{name}={getattr(self, name)!r} must be one of {list(choices)}"
                )
        self._check_shapes()
        self._check_moe()

    def _check_moe(self) -> None:
        if self.moe is None:
            return
        if self.moe.every > self.n_layers:
            raise ValueError(
                f"ModelConfig.moe.every={self.moe.every} exceeds n_layers={self.n_layers}: "
                "no block would be MoE"
            )
        if self.mlp != "swiglu":
            raise ValueError(
                f"ModelConfig.moe needs mlp='swiglu' (experts are SwiGLU), got mlp={self.mlp!r}"
            )

    def moe_layer(self, i: int) -> bool:
        """Whether block i is a mixture-of-experts block: (i + 1) % moe.every == 0."""
        return self.moe is not None and (i + 1) % self.moe.every == 0

    def _check_shapes(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} must divide d_model={self.d_model}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"ModelConfig.rotary_pct={self.rotary_pct} must be in (0, 1]")
        if self.rotary_pct == 1.0 and self.head_dim % 2:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} gives odd head_dim={self.head_dim}; "
                "rotary embeddings need an even head_dim"
            )
        if self.rotary_dims % 2 or self.rotary_dims == 0:
            raise ValueError(
                f"ModelConfig.rotary_pct={self.rotary_pct} gives rotary_dims={self.rotary_dims} "
                f"of head_dim={self.head_dim}; rotary needs an even number > 0"
            )
        if self.norm_bias and self.norm != "layernorm":
            raise ValueError(
                f"ModelConfig.norm_bias=True needs norm='layernorm', got norm={self.norm!r}"
            )

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
            raise ValueError(f"unknown model preset {name!r}; valid presets: {cls.presets()}")
        _check_keys(overrides, "override")
        base = PRESETS[name]
        if isinstance(overrides.get("moe"), dict) and isinstance(base.get("moe"), dict):
            overrides = {**overrides, "moe": {**base["moe"], **overrides["moe"]}}
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values (JSON serialisable); `moe` is a nested dict or None."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict` (`moe` may be a nested dict); unknown or missing keys raise."""
        _check_keys(d, "key")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in d]
        if missing:
            raise ValueError(f"ModelConfig is missing required field(s) {missing}")
        return cls(**d)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_keys(d: dict[str, Any], what: str, cls: type | None = None, owner: str = "") -> None:
    """Reject keys that are not fields of `cls` (ModelConfig), suggesting the closest valid one."""
    valid = [f.name for f in dataclasses.fields(cls or ModelConfig)]
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown {owner or 'ModelConfig'} {what} {key!r}; {hint}valid fields: {valid}"
            )


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
          "float | None": (int, float, type(None))}  # fmt: skip


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Check a field against its (string) annotation: int, float, bool, str or float | None."""
    expected = _TYPES[str(annotation)]
    # bool is a subclass of int: `n_layers=True` is a mistake, not a 1.
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)):
        raise ValueError(
            f"ModelConfig.{name}={value!r} must be of type {annotation}, got {type(value).__name__}"
        )
