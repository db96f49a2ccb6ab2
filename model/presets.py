"""Named model presets: plain dicts of `ModelConfig` keyword arguments.

Design choices:
- Presets are code, one dict per name, so a preset states exactly what it builds.
  Each published preset reproduces its model's architecture and exact parameter
  count (tests/model/test_family_presets.py recounts every one from its formula).
- A preset's `vocab_size` is the published (already padded) matrix size; the trainer
  replaces it with the tokenizer's size, which is padded again to `vocab_multiple`.
- Families share a layout dict (`_NEOX`, `_OLMO2`); a preset adds only its sizes.
- Sources: Pythia = EleutherAI/pythia-* `config.json` (GPT-NeoX layout, partial
  rotary 25%, parallel residual, vocab 50304, except 6.9b: 50432 and 12b: 50688, as
  published). Llama 60m..1b = the GaLore / ReLoRA `configs/llama_*.json` (untied,
  rms eps 1e-6, 1,024 positions; the counts round to the nominal names).
  `llama-7b` is Llama-2-7B (an alias of `llama2-7b`). OLMo 2 = allenai/OLMo-2-0425-1B
  and allenai/OLMo-2-1124-7B (post-norm, qk-norm, rope theta 500000, rms eps 1e-6).
  OLMoE = allenai/OLMoE-1B-7B-0924 `config.json` (pre-norm, qk-norm over the full q and
  k projections, 64 SwiGLU experts of 1024, top-8 without renormalisation, rope theta
  10000, rms eps 1e-5) with the paper's loss weights (load balancing 0.01, router z
  0.001) and OLMo's truncated-normal(0.02) init. `d_ff` equals `d_ff_expert` there: no
  block is dense, and the Hugging Face `intermediate_size` is the expert size.
- A nested `moe` entry is a plain dict of `MoEConfig` keyword arguments.
"""

from __future__ import annotations

from typing import Any

# GPT-NeoX / Pythia layout: LayerNorm with bias, biases everywhere, parallel residual,
# 25% rotary, GELU MLP of 4 * d, untied embeddings, GPT-NeoX small_init / wang_init.
_NEOX: dict[str, Any] = dict(
    family="neox", norm="layernorm", norm_bias=True, mlp="gelu", bias=True,
    parallel_residual=True, rotary_pct=0.25, init="neox", max_seq_len=2048,
    vocab_size=50304,
)  # fmt: skip

# OLMo 2 layout: RMSNorm on the sublayer outputs, RMSNorm over full q and k, SwiGLU.
_OLMO2: dict[str, Any] = dict(
    family="olmo2", qk_norm=True, norm_placement="post", init="olmo2", vocab_size=100352,
    max_seq_len=4096, rope_theta=500000.0, norm_eps=1e-6,
)  # fmt: skip

# OLMoE layout: pre-norm RMSNorm, qk-norm, every block a dropless top-k MoE of SwiGLU experts.
_OLMOE: dict[str, Any] = dict(
    family="olmoe", qk_norm=True, init="olmo2", vocab_size=50304, max_seq_len=4096,
    rope_theta=10000.0, norm_eps=1e-5,
)  # fmt: skip

# GaLore / ReLoRA Llama sizes.
_GALORE: dict[str, Any] = dict(vocab_size=32000, max_seq_len=1024, norm_eps=1e-6)


def _pythia(d: int, layers: int, heads: int, **extra: Any) -> dict[str, Any]:
    return dict(_NEOX, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=heads, d_ff=4 * d,
                **extra)  # fmt: skip


def _galore(d: int, layers: int, heads: int, d_ff: int) -> dict[str, Any]:
    return dict(_GALORE, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=heads, d_ff=d_ff)


_LLAMA2_7B: dict[str, Any] = dict(
    vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008,
    max_seq_len=4096,
)  # fmt: skip

# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny, for tests: builds and runs in milliseconds.
    "debug": dict(
        vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192,
        max_seq_len=256,
    ),
    # Tiny OLMoE-layout MoE, for tests and CPU runs: 8 experts, top-2, every block.
    "debug-moe": dict(
        _OLMOE, vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
        max_seq_len=256, moe=dict(num_experts=8, top_k=2, d_ff_expert=64),
    ),
    # Small Llama-style model that trains on a 2-core CPU in minutes (~4.0M params).
    "quickstart": dict(
        vocab_size=4096, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, d_ff=688,
        max_seq_len=512, tie_embeddings=True,
    ),
    # HuggingFaceTB/SmolLM-135M: 134,515,008 parameters.
    "smollm-135m": dict(
        vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
        max_seq_len=2048, tie_embeddings=True,
    ),
    # TinyLlama/TinyLlama-1.1B: 1,100,048,384 parameters.
    "tinyllama-1.1b": dict(
        vocab_size=32000, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, d_ff=5632,
        max_seq_len=2048,
    ),
    # meta-llama/Llama-2-7b: 6,738,415,616 parameters.
    "llama2-7b": _LLAMA2_7B,
    # meta-llama/Meta-Llama-3-8B: 8,030,261,248 parameters.
    "llama3-8b": dict(
        vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
        max_seq_len=8192, rope_theta=500000.0,
    ),
    # GaLore / ReLoRA Llama sizes (parameter counts in the comments).
    "llama-60m": _galore(512, 8, 8, 1376),  # 58,073,600
    "llama-130m": _galore(768, 12, 12, 2048),  # 134,105,856
    "llama-350m": _galore(1024, 24, 16, 2736),  # 367,969,280
    "llama-1b": _galore(2048, 24, 32, 5461),  # 1,339,082,752
    "llama-7b": _LLAMA2_7B,  # Llama-2-7B: 6,738,415,616
    # EleutherAI Pythia suite (GPT-NeoX), published parameter counts in the comments.
    "pythia-14m": _pythia(128, 6, 4),  # 14,067,712
    "pythia-31m": _pythia(256, 6, 8),  # 30,494,720
    "pythia-70m": _pythia(512, 6, 8),  # 70,426,624
    "pythia-160m": _pythia(768, 12, 12),  # 162,322,944
    "pythia-410m": _pythia(1024, 24, 16),  # 405,334,016
    "pythia-1b": _pythia(2048, 16, 8),  # 1,011,781,632
    "pythia-1.4b": _pythia(2048, 24, 16),  # 1,414,647,808
    "pythia-2.8b": _pythia(2560, 32, 32),  # 2,775,208,960
    "pythia-6.9b": _pythia(4096, 32, 32, vocab_size=50432),  # 6,857,302,016
    "pythia-12b": _pythia(5120, 36, 40, vocab_size=50688),  # 11,846,072,320
    # allenai/OLMo-2-0425-1B: 1,484,916,736 parameters.
    "olmo2-1b": dict(_OLMO2, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, d_ff=8192),
    # allenai/OLMo-2-1124-7B: 7,298,617,344 parameters.
    "olmo2-7b": dict(_OLMO2, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008),
    # allenai/OLMoE-1B-7B-0924: 6,919,161,856 parameters, 1,282,017,280 active per token.
    "olmoe-1b-7b": dict(
        _OLMOE, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, d_ff=1024,
        moe=dict(num_experts=64, top_k=8, d_ff_expert=1024, norm_topk_probs=False,
                 aux_loss_coef=0.01, z_loss_coef=0.001),
    ),
}
# fmt: on
