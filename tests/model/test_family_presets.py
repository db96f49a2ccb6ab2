"""Family presets: the published architecture numbers and exact parameter counts.

The expected counts are computed here from the published Hugging Face configs (the
numbers in `HF` below, copied from each model's config.json) with a formula per
architecture written independently of our model code, and checked against the
counts the model cards / papers publish.
"""

import pytest
import torch
from strata.model import GPT, ModelConfig

# name: (architecture, hidden, layers, heads, kv_heads, intermediate, vocab, tied, published)
HF = {
    "pythia-14m": ("gpt_neox", 128, 6, 4, 4, 512, 50304, False, 14_067_712),
    "pythia-31m": ("gpt_neox", 256, 6, 8, 8, 1024, 50304, False, 30_494_720),
    "pythia-70m": ("gpt_neox", 512, 6, 8, 8, 2048, 50304, False, 70_426_624),
    "pythia-160m": ("gpt_neox", 768, 12, 12, 12, 3072, 50304, False, 162_322_944),
    "pythia-410m": ("gpt_neox", 1024, 24, 16, 16, 4096, 50304, False, 405_334_016),
    "pythia-1b": ("gpt_neox", 2048, 16, 8, 8, 8192, 50304, False, 1_011_781_632),
    "pythia-1.4b": ("gpt_neox", 2048, 24, 16, 16, 8192, 50304, False, 1_414_647_808),
    "pythia-2.8b": ("gpt_neox", 2560, 32, 32, 32, 10240, 50304, False, 2_775_208_960),
    "pythia-6.9b": ("gpt_neox", 4096, 32, 32, 32, 16384, 50432, False, 6_857_302_016),
    "pythia-12b": ("gpt_neox", 5120, 36, 40, 40, 20480, 50688, False, 11_846_072_320),
    # GaLore / ReLoRA configs/llama_*.json: the published sizes are nominal (60M, ...).
    "llama-60m": ("llama", 512, 8, 8, 8, 1376, 32000, False, 60e6),
    "llama-130m": ("llama", 768, 12, 12, 12, 2048, 32000, False, 130e6),
    "llama-350m": ("llama", 1024, 24, 16, 16, 2736, 32000, False, 350e6),
    "llama-1b": ("llama", 2048, 24, 32, 32, 5461, 32000, False, 1.3e9),
    "llama-7b": ("llama", 4096, 32, 32, 32, 11008, 32000, False, 6_738_415_616),
    "llama2-7b": ("llama", 4096, 32, 32, 32, 11008, 32000, False, 6_738_415_616),
    "smollm-135m": ("llama", 576, 30, 9, 3, 1536, 49152, True, 134_515_008),
    "tinyllama-1.1b": ("llama", 2048, 22, 32, 4, 5632, 32000, False, 1_100_048_384),
    "llama3-8b": ("llama", 4096, 32, 32, 8, 14336, 128256, False, 8_030_261_248),
    "olmo2-1b": ("olmo2", 2048, 16, 16, 16, 8192, 100352, False, 1_484_916_736),
    "olmo2-7b": ("olmo2", 4096, 32, 32, 32, 11008, 100352, False, 7_298_617_344),
}


def hf_param_count(arch, d, layers, heads, kv_heads, ff, vocab, tied) -> int:
    """Parameters of the HF module tree, counted from its layer definitions."""
    kv = d // heads * kv_heads
    if arch == "gpt_neox":
        # 2 LayerNorms (w + b), fused qkv (w + b), dense (w + b), h_to_4h, 4h_to_h (w + b)
        layer = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d)
        final_norm = 2 * d
    else:
        # q, k, v, o; gate, up, down; two RMSNorms (+ q_norm and k_norm for OLMo 2)
        layer = d * d + 2 * d * kv + d * d + 3 * d * ff + 2 * d
        layer += d + kv if arch == "olmo2" else 0
        final_norm = d
    return layers * layer + final_norm + vocab * d * (1 if tied else 2)


@pytest.mark.parametrize("name", sorted(HF))
def test_preset_matches_published_count(name):
    arch, d, layers, heads, kv_heads, ff, vocab, tied, published = HF[name]
    expected = hf_param_count(arch, d, layers, heads, kv_heads, ff, vocab, tied)
    if isinstance(published, int):
        assert expected == published
    else:  # nominal size: within 10%
        assert abs(expected - published) / published < 0.1
    cfg = ModelConfig.from_preset(name)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff) == (
        d, layers, heads, kv_heads, ff,
    )  # fmt: skip
    assert cfg.padded_vocab_size == vocab and cfg.tie_embeddings == tied
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_params() == expected


@pytest.mark.parametrize("name", [n for n in HF if n.startswith("pythia")])
def test_pythia_layout(name):
    cfg = ModelConfig.from_preset(name)
    assert cfg.family == "neox" and cfg.init == "neox"
    assert (cfg.norm, cfg.norm_bias, cfg.mlp, cfg.bias) == ("layernorm", True, "gelu", True)
    assert cfg.parallel_residual and cfg.rotary_pct == 0.25 and not cfg.tie_embeddings
    assert (cfg.max_seq_len, cfg.rope_theta, cfg.norm_eps) == (2048, 10000.0, 1e-5)
    assert cfg.rotary_dims == cfg.head_dim // 4


@pytest.mark.parametrize("name", ["olmo2-1b", "olmo2-7b"])
def test_olmo2_layout(name):
    cfg = ModelConfig.from_preset(name)
    assert cfg.family == "olmo2" and cfg.init == "olmo2"
    assert cfg.qk_norm and cfg.norm_placement == "post" and not cfg.parallel_residual
    assert (cfg.norm, cfg.mlp, cfg.bias) == ("rmsnorm", "swiglu", False)
    assert (cfg.rope_theta, cfg.max_seq_len, cfg.norm_eps) == (500000.0, 4096, 1e-6)


def test_llama_7b_is_llama2_7b():
    assert ModelConfig.from_preset("llama-7b") == ModelConfig.from_preset("llama2-7b")
