"""Map our `GPT` configs to and from Hugging Face: Llama, GPT-NeoX (Pythia), OLMo 2 and
OLMoE (`hf_config`, `config_from_hf`, `check_hf_compatible`); the weights' names and
layouts are mapped by `checkpoints/hf_weights.py` from the same family records.

Design choices:
- Pure functions over dicts and tensors: no file I/O and no `transformers` import,
  so exporting works without transformers installed; writing files is the
  caller's job (safetensors + config.json).
- `ModelConfig.family` picks the HF class; each family is one `_Family` record (class,
  parameter names, the layout switches it requires). A config whose switches the
  class cannot express (e.g. "llama" with parallel_residual, "neox" with qk_norm)
  raises ValueError naming the field.
- Our rotary embeddings use HF's rotate_half convention (partial rotary as in
  GPT-NeoX: the first rotary_dims of each head), so weights map by name only, except
  GPT-NeoX's fused `attention.query_key_value`, whose rows are interleaved per head:
  viewed as (n_heads, 3, head_dim, d) they are [q_h; k_h; v_h] for each head h. Our
  separate wq/wk/wv are stacked on dim 1 to fuse, unbound to split (biases alike).
- GPT-NeoX's output matrix is written as `embed_out.weight`, its name in the
  published Pythia checkpoints (transformers 4.x's attribute; 5.x renames it to
  `lm_head` when loading); import accepts either name.
- The exported `vocab_size` is the real vocabulary's (the tokenizer's), not
  `padded_vocab_size`: the padding rows are never trained (our model slices its logits
  to the real vocabulary, in the loss and in generation), so a client that saw them
  would give them probability and sample them (an untrained row's logit is near 0, far
  above a well-trained model's unlikely tokens). No Hugging Face class can mask rows to
  -inf, and training rows that no data ever contains down is wasted compute, so they
  are left out: the embedding and output matrices are written with their first
  `vocab_size` rows and padded back with zeros on import (`checkpoints/hf_weights.py`).
  Revisions written before this rule, with padded matrices, still load.
- `config.json` carries both the transformers 4.x rope keys (`rope_theta`, GPT-NeoX's
  `rotary_pct` / `rotary_emb_base`) and the 5.x `rope_parameters` dict (with
  `partial_rotary_factor` for GPT-NeoX), so it loads in transformers 4.45+ and 5.x.
- Tied embeddings: the output matrix is omitted on export (HF re-ties it from
  `tie_word_embeddings`) and recreated from the embedding on import.
- Training-only fields (init, z_loss, loss_chunk_size, document_mask, moe.z_loss_coef,
  moe.bias_update_rate) have no HF counterpart; `config_from_hf` sets `init` to the
  family's own scheme and leaves those at their defaults.
- OLMoE (`OlmoeForCausalLM`, family "olmoe"): pre-norm, qk-norm over the full q and k
  projections, every block a top-k MoE of SwiGLU experts without shared experts,
  capacity or selection bias; any other `moe` setting is refused naming the field.
  The router is `mlp.gate`. Experts are written one tensor per expert and projection,
  `mlp.experts.{j}.{gate,up,down}_proj.weight` (= our stacked `w1`, `w3`, `w2` [j],
  transposed), the layout of the published OLMoE checkpoints, which transformers 4.x
  loads as is and 5.x fuses on load. Import also reads 5.x's fused in-memory layout
  (`mlp.experts.gate_up_proj` (E, 2 * d_ff, d), `mlp.experts.down_proj` (E, d, d_ff)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strata.model import ModelConfig


@dataclass(frozen=True)
class _Family:
    hf_class: str
    model_type: str
    layer_prefix: str
    """HF prefix of layer i, with `{i}`."""
    norms: tuple[tuple[str, str], ...]
    """(our module, HF module) for the norms inside a layer."""
    linears: tuple[tuple[str, str], ...]
    """(our module, HF module) for the linears inside a layer."""
    top: tuple[str, str, str]
    """HF modules of the embedding, the final norm and the output matrix."""
    fused_qkv: str | None = None
    """HF module of the fused q/k/v linear (GPT-NeoX), fused from our wq, wk, wv."""
    experts: bool = False
    """Every block's MLP is a mixture of experts (`mlp.experts.*`, OLMoE)."""
    layout: dict[str, Any] = field(default_factory=dict)
    """ModelConfig values this class requires."""


_ATTN = (("attn.wq", "self_attn.q_proj"), ("attn.wk", "self_attn.k_proj"),
         ("attn.wv", "self_attn.v_proj"), ("attn.wo", "self_attn.o_proj"))  # fmt: skip
_SWIGLU = (("mlp.w1", "mlp.gate_proj"), ("mlp.w3", "mlp.up_proj"), ("mlp.w2", "mlp.down_proj"))
_LLAMA_TOP = ("model.embed_tokens", "model.norm", "lm_head")
_PLAIN = dict(parallel_residual=False, rotary_pct=1.0, norm="rmsnorm", mlp="swiglu")

FAMILIES: dict[str, _Family] = {
    "llama": _Family(
        "LlamaForCausalLM", "llama", "model.layers.{i}.",
        norms=(("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")),
        linears=_ATTN + _SWIGLU, top=_LLAMA_TOP,
        layout=dict(_PLAIN, qk_norm=False, norm_placement="pre"),
    ),
    "neox": _Family(
        "GPTNeoXForCausalLM", "gpt_neox", "gpt_neox.layers.{i}.",
        norms=(("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")),
        linears=(("attn.wo", "attention.dense"), ("mlp.w1", "mlp.dense_h_to_4h"),
                 ("mlp.w2", "mlp.dense_4h_to_h")),
        top=("gpt_neox.embed_in", "gpt_neox.final_layer_norm", "embed_out"),
        fused_qkv="attention.query_key_value",
        layout=dict(norm="layernorm", norm_bias=True, mlp="gelu", bias=True, qk_norm=False,
                    norm_placement="pre"),
    ),
    "olmo2": _Family(
        "Olmo2ForCausalLM", "olmo2", "model.layers.{i}.",
        norms=(("attn_norm", "post_attention_layernorm"),
               ("mlp_norm", "post_feedforward_layernorm"),
               ("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm")),
        linears=_ATTN + _SWIGLU, top=_LLAMA_TOP,
        layout=dict(_PLAIN, bias=False, qk_norm=True, norm_placement="post"),
    ),
    "olmoe": _Family(
        "OlmoeForCausalLM", "olmoe", "model.layers.{i}.",
        norms=(("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"),
               ("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm")),
        linears=_ATTN + (("mlp.router", "mlp.gate"),), top=_LLAMA_TOP, experts=True,
        layout=dict(_PLAIN, bias=False, qk_norm=True, norm_placement="pre"),
    ),
}  # fmt: skip
# MoE settings OLMoE can express (the rest of MoEConfig maps onto its config or is training-only).
_OLMOE_MOE = {"every": (1, ""), "shared_experts": (0, " (OLMoE has no shared experts)"),
              "capacity_factor": (None, " (OLMoE is dropless)"),
              "balance": ("aux_loss", " (OLMoE's router has no selection bias)")}  # fmt: skip
# (our stacked expert weight, HF per-expert projection)
_EXPERTS = (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj"))
_FAMILY_OF_MODEL_TYPE = {fam.model_type: name for name, fam in FAMILIES.items()}
_FAMILY_OF_CLASS = {fam.hf_class: name for name, fam in FAMILIES.items()}


def check_hf_compatible(config: ModelConfig) -> _Family:
    """The config's `_Family`; ValueError naming the first field its HF class cannot express."""
    fam = FAMILIES[config.family]
    required = dict(fam.layout)
    if config.family == "neox":  # GPT-NeoX has no grouped-query attention
        required["n_kv_heads"] = config.n_heads
    for name, value in required.items():
        if getattr(config, name) != value:
            raise ValueError(
                f"ModelConfig.{name}={getattr(config, name)!r} has no equivalent in "
                f"{fam.hf_class}: family {config.family!r} needs {name}={value!r}"
            )
    _check_moe_compatible(config, fam)
    return fam


def _check_moe_compatible(config: ModelConfig, fam: _Family) -> None:
    where = f"has no equivalent in {fam.hf_class}: family {config.family!r}"
    if not fam.experts:
        if config.moe is not None:
            raise ValueError(
                f"ModelConfig.moe=<{config.moe.num_experts} experts> {where} needs moe=None "
                "(mixture-of-experts configs export as family='olmoe')"
            )
        return
    if config.moe is None:
        raise ValueError(f"ModelConfig.moe=None {where} needs a moe config")
    for name, (value, why) in _OLMOE_MOE.items():
        got = getattr(config.moe, name)
        if got != value:
            raise ValueError(f"ModelConfig.moe.{name}={got!r} {where} needs {name}={value!r}{why}")


def hf_config(
    config: ModelConfig,
    *,
    bos_id: int | None,
    eos_id: int | None,
    pad_id: int | None = None,
    family: _Family | None = None,
) -> dict[str, Any]:
    """A `config.json` dict that the family's HF class / `AutoModelForCausalLM` loads.
    `family`: the config's `check_hf_compatible` result when the caller already has it."""
    fam = family or check_hf_compatible(config)
    theta = config.rope_theta
    out = {
        "architectures": [fam.hf_class],
        "model_type": fam.model_type,
        "vocab_size": config.vocab_size,  # the padding rows are not exported
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "max_position_embeddings": config.max_seq_len,
        "rope_theta": theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},  # 5.x
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": config.bias,
        "attention_dropout": 0.0,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    if config.family == "neox":
        out["rope_parameters"]["partial_rotary_factor"] = config.rotary_pct
        return {**out, "hidden_act": "gelu", "layer_norm_eps": config.norm_eps,
                "rotary_pct": config.rotary_pct, "rotary_emb_base": theta,
                "use_parallel_residual": config.parallel_residual,
                "hidden_dropout": 0.0}  # fmt: skip
    out.update(num_key_value_heads=config.n_kv_heads, hidden_act="silu",
               rms_norm_eps=config.norm_eps, rope_scaling=None)  # fmt: skip
    if config.family == "llama":
        out.update(head_dim=config.head_dim, mlp_bias=config.bias)
    if config.family == "olmoe":
        m = config.moe
        out.update(intermediate_size=m.d_ff_expert, num_experts=m.num_experts,
                   num_experts_per_tok=m.top_k, norm_topk_prob=m.norm_topk_probs,
                   router_aux_loss_coef=m.aux_loss_coef, output_router_logits=False,
                   clip_qkv=None)  # fmt: skip
    return out


def _hf_family(hf: dict[str, Any]) -> str:
    """Our family for an HF config dict: by model_type, else by architecture (else Llama)."""
    model_type = hf.get("model_type")
    if model_type is None:
        arch = (hf.get("architectures") or ["LlamaForCausalLM"])[0]
        if arch not in _FAMILY_OF_CLASS:
            raise ValueError(
                f"config_from_hf: architecture {arch!r} is not supported; "
                f"supported: {list(_FAMILY_OF_CLASS)}"
            )
        return _FAMILY_OF_CLASS[arch]
    if model_type not in _FAMILY_OF_MODEL_TYPE:
        raise ValueError(
            f"config_from_hf: model_type={model_type!r} is not supported; "
            f"supported: {list(_FAMILY_OF_MODEL_TYPE)}"
        )
    return _FAMILY_OF_MODEL_TYPE[model_type]


_Checks = dict[str, tuple[Any, Any]]  # HF key -> (value found, the only value we support)


def _family_fields(
    family: str, hf: dict[str, Any], rope: dict[str, Any]
) -> tuple[dict[str, Any], _Checks]:
    """(ModelConfig fields that differ between families, HF values that must match)."""
    heads = hf["num_attention_heads"]
    if family == "neox":
        pct = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
        fields = dict(n_kv_heads=heads, rotary_pct=float(pct), bias=True,
                      parallel_residual=bool(hf.get("use_parallel_residual", True)),
                      norm="layernorm", norm_bias=True, mlp="gelu", init="neox",
                      norm_eps=float(hf.get("layer_norm_eps", 1e-5)))  # fmt: skip
        checks = {"hidden_act": (hf.get("hidden_act", "gelu"), "gelu"),
                  "attention_bias": (hf.get("attention_bias", True), True)}  # fmt: skip
        return fields, checks
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    eps = hf.get("rms_norm_eps", 1e-6 if family == "llama" else 1e-5)  # HF defaults
    fields = dict(n_kv_heads=hf.get("num_key_value_heads") or heads, norm_eps=float(eps))
    checks = {"hidden_act": (hf.get("hidden_act", "silu"), "silu"),
              "head_dim": (head_dim, hf["hidden_size"] // heads),
              "partial_rotary_factor": (rope.get("partial_rotary_factor", 1.0), 1.0)}  # fmt: skip
    if family == "olmo2":
        checks["attention_bias"] = (hf.get("attention_bias", False), False)
        fields.update(qk_norm=True, norm_placement="post", init="olmo2")
    elif family == "olmoe":
        checks["attention_bias"] = (hf.get("attention_bias", False), False)
        checks["clip_qkv"] = (hf.get("clip_qkv"), None)
        fields.update(qk_norm=True, norm_placement="pre", init="olmo2", moe=_olmoe_moe(hf))
    else:
        bias = hf.get("attention_bias", False)
        checks["mlp_bias"] = (hf.get("mlp_bias", False), bias)  # our one `bias` covers both
        fields.update(bias=bool(bias))
    return fields, checks


def _olmoe_moe(hf: dict[str, Any]) -> dict[str, Any]:
    """MoEConfig fields of an OLMoE config.json (HF OlmoeConfig defaults where absent)."""
    return dict(
        num_experts=hf.get("num_experts", 64),
        top_k=hf.get("num_experts_per_tok", 8),
        d_ff_expert=hf["intermediate_size"],
        norm_topk_probs=bool(hf.get("norm_topk_prob", False)),
        aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.01)),
    )


def config_from_hf(hf: dict[str, Any], *, vocab_size: int | None = None) -> ModelConfig:
    """ModelConfig for a Llama / GPT-NeoX / OLMo 2 / OLMoE `config.json` dict; ValueError if
    it cannot map.

    `vocab_size` (the tokenizer's real size) may be given when the HF vocab is a
    padded one (revisions written before the padding rows were left out, or a foreign
    padded model); it must pad back to exactly the HF vocab_size. An HF vocabulary that
    is the real one gets Strata's default padding (`vocab_multiple` 64; the matrices are
    padded with zero rows on import).
    """
    family = _hf_family(hf)
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    fields, checks = _family_fields(family, hf, rope)
    checks["rope_type"] = (rope.get("rope_type", rope.get("type", "default")), "default")
    for key, (got, expected) in checks.items():
        if got != expected:
            raise ValueError(
                f"config_from_hf: {key}={got!r} is not supported, expected {expected!r}"
            )
    theta = rope.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    hf_vocab = hf["vocab_size"]
    real_vocab = hf_vocab if vocab_size is None else vocab_size
    config = ModelConfig(
        vocab_size=real_vocab,
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_theta=float(theta),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        vocab_multiple=64 if real_vocab == hf_vocab or hf_vocab % 64 == 0 else hf_vocab,
        family=family,
        **fields,
    )
    if real_vocab != hf_vocab and config.padded_vocab_size != hf_vocab:
        raise ValueError(
            f"config_from_hf: vocab_size={real_vocab} pads to {config.padded_vocab_size}, "
            f"expected the HF vocab_size {hf_vocab}"
        )
    return config
