"""Map our Llama-style `GPT` to and from Hugging Face `LlamaForCausalLM`.

Design choices:
- Pure functions over dicts and tensors: no file I/O and no `transformers` import,
  so exporting works without transformers installed; writing files is the
  caller's job (safetensors + config.json).
- Our rotary embeddings already use HF's rotate_half convention, so every weight
  maps by name only: no permutation of wq/wk, no reshaping.
- The exported `vocab_size` is `padded_vocab_size` (the real shape of the matrices);
  the tokenizer's true vocabulary size lives in our own `strata.json`.
- `config.json` carries both the transformers 4.x rope keys (`rope_theta`, no
  scaling) and the 5.x `rope_parameters` dict, so it loads in transformers 4.45+.
- Tied embeddings: `lm_head.weight` is omitted on export (HF re-ties it from
  `tie_word_embeddings`) and recreated from the embedding on import.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from model import ModelConfig

# Our per-layer parameter name -> HF's, under `layers.{i}.` / `model.layers.{i}.`.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w3.weight": "mlp.up_proj.weight",
    "mlp.w2.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def hf_config(
    config: ModelConfig, *, bos_id: int | None, eos_id: int | None, pad_id: int | None = None
) -> dict[str, Any]:
    """A `config.json` dict that `LlamaForCausalLM` / `AutoModelForCausalLM` loads."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x
        "rope_scaling": None,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # 5.x
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }


def config_from_hf(hf: dict[str, Any], *, vocab_size: int | None = None) -> ModelConfig:
    """ModelConfig for a Llama `config.json` dict; raises ValueError if it cannot map.

    `vocab_size` (the tokenizer's real size) may be given when the HF vocab is a
    padded one; it must pad back to exactly the HF vocab_size.
    """
    if hf.get("model_type", "llama") != "llama":
        raise ValueError(f"config_from_hf: model_type={hf['model_type']!r}, expected 'llama'")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    unsupported = {
        "hidden_act": (hf.get("hidden_act", "silu"), "silu"),
        "attention_bias": (hf.get("attention_bias", False), False),
        "mlp_bias": (hf.get("mlp_bias", False), False),
        "rope_type": (rope.get("rope_type", rope.get("type", "default")), "default"),
        "head_dim": (
            hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            hf["hidden_size"] // hf["num_attention_heads"],
        ),
    }
    for key, (got, expected) in unsupported.items():
        if got != expected:
            raise ValueError(
                f"config_from_hf: {key}={got!r} is not supported, expected {expected!r}"
            )
    hf_vocab = hf["vocab_size"]
    real_vocab = hf_vocab if vocab_size is None else vocab_size
    multiple = 64 if hf_vocab % 64 == 0 else hf_vocab
    config = ModelConfig(
        vocab_size=real_vocab,
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        vocab_multiple=multiple,
    )
    if config.padded_vocab_size != hf_vocab:
        raise ValueError(
            f"config_from_hf: vocab_size={real_vocab} pads to {config.padded_vocab_size}, "
            f"expected the HF vocab_size {hf_vocab}"
        )
    return config


def _expected_names(config: ModelConfig) -> dict[str, str]:
    """Our state_dict name -> HF name, for every weight of `config` (in layer order)."""
    names = {"tok_embeddings.weight": _TOP_NAMES["tok_embeddings.weight"]}
    for i in range(config.n_layers):
        for ours, theirs in _LAYER_NAMES.items():
            names[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    names["norm.weight"] = _TOP_NAMES["norm.weight"]
    names["lm_head.weight"] = _TOP_NAMES["lm_head.weight"]
    return names


def _check_keys(given: set[str], expected: set[str], where: str) -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise KeyError(f"{where}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def to_hf_state_dict(
    state_dict: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Our `GPT.state_dict()` -> HF Llama names (contiguous; lm_head omitted when tied)."""
    names = _expected_names(config)
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    _check_keys(set(state_dict) | optional, set(names), "to_hf_state_dict")
    out = {}
    for ours, theirs in names.items():
        if ours in optional:
            continue
        out[theirs] = state_dict[ours].detach().contiguous()
    return out


def from_hf_state_dict(
    hf_state_dict: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """HF Llama weights -> a state_dict `GPT(config).load_state_dict` accepts (strict)."""
    names = {theirs: ours for ours, theirs in _expected_names(config).items()}
    # HF keeps rotary inv_freq as a buffer in some versions; it is recomputed, not loaded.
    hf_sd = {k: v for k, v in hf_state_dict.items() if not re.search(r"rotary_emb\.", k)}
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    _check_keys(set(hf_sd) | optional, set(names), "from_hf_state_dict")
    out = {ours: hf_sd[theirs].contiguous() for theirs, ours in names.items() if theirs in hf_sd}
    if config.tie_embeddings:
        out["lm_head.weight"] = out["tok_embeddings.weight"]
    return out
