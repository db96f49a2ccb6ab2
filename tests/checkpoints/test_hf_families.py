"""Hugging Face interop per family (Llama, GPT-NeoX, OLMo 2): import and export give the
logits transformers gives, the fused GPT-NeoX q/k/v is permuted right, and configs that
no HF class can express fail naming the field."""

import json

import pytest
import torch
from strata.checkpoints.hf import config_from_hf, hf_config
from strata.checkpoints.hf_weights import (
    _fuse_qkv,
    _split_qkv,
    from_hf_state_dict,
    to_hf_state_dict,
)
from strata.model import GPT, ModelConfig

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

V = 500  # real vocab; matrices padded to 512
TINY = dict(vocab_size=V, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128,
            max_seq_len=64)  # fmt: skip
OURS = {
    "llama": dict(TINY, n_kv_heads=2),
    "llama-bias": dict(TINY, n_kv_heads=2, bias=True, tie_embeddings=True),
    "neox": dict(TINY, family="neox", norm="layernorm", norm_bias=True, mlp="gelu", bias=True,
                 parallel_residual=True, rotary_pct=0.25, init="neox", d_ff=256),
    "neox-sequential": dict(TINY, family="neox", norm="layernorm", norm_bias=True, mlp="gelu",
                            bias=True, rotary_pct=0.5, init="neox", tie_embeddings=True),
    "olmo2": dict(TINY, n_kv_heads=2, family="olmo2", qk_norm=True, norm_placement="post",
                  init="olmo2", norm_eps=1e-6, rope_theta=500000.0),
}  # fmt: skip
# The same architectures written as their own HF config classes' keyword arguments.
HF = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2, hidden_act="silu")),
    "neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
             dict(rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu")),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM",
              dict(num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-6)),
}  # fmt: skip


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Norm gains and all biases away from 1 / 0, so a swapped or dropped one shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def ours(name: str) -> GPT:
    model = GPT(ModelConfig(**OURS[name]))
    model.init_weights(seed=0)
    return perturb(model)


def hf_class(cfg: dict):
    return getattr(transformers, cfg["architectures"][0])


def to_loadable(hf_sd: dict) -> dict:
    """Our export as the names the installed transformers' modules use (GPT-NeoX's
    `embed_out` is `lm_head` in transformers 5, renamed by from_pretrained)."""
    if "embed_out.weight" in hf_sd and not hasattr(transformers.GPTNeoXForCausalLM, "embed_out"):
        hf_sd = {("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in hf_sd.items()}
    return hf_sd


def assert_same_logits(model: GPT, hf, vocab: int, atol: float = 1e-4) -> None:
    idx = torch.randint(0, vocab, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(idx)
        got = hf(input_ids=idx).logits[..., :vocab]
    assert (got - expected).abs().max().item() <= atol


@pytest.mark.parametrize("family", sorted(HF))
@pytest.mark.parametrize("tie", [False, True])
def test_import_random_hf_model(family, tie):
    config_cls, model_cls, extra = HF[family]
    hf_cfg = getattr(transformers, config_cls)(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, tie_word_embeddings=tie, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = perturb(getattr(transformers, model_cls)(hf_cfg))
    config = config_from_hf(hf.config.to_dict())
    assert config.family == {"llama": "llama", "neox": "neox", "olmo2": "olmo2"}[family]
    assert config.init == config.family and config.tie_embeddings == tie
    model = GPT(config)
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), config), strict=True)
    assert_same_logits(model.eval(), hf, 512)


@pytest.mark.parametrize("name", sorted(OURS))
def test_export_loads_strict_with_same_logits(name):
    model = ours(name)
    cfg = hf_config(model.config, bos_id=0, eos_id=0)
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    assert all(t.is_contiguous() for t in hf_sd.values())
    hf = hf_class(cfg)(hf_class(cfg).config_class(**cfg)).eval()
    result = hf.load_state_dict(to_loadable(hf_sd), strict=not model.config.tie_embeddings)
    if model.config.tie_embeddings:  # HF re-ties the output matrix: the one missing key
        assert list(result.missing_keys) == ["lm_head.weight"] and not result.unexpected_keys
    assert_same_logits(model, hf, V)
    # And back: our import of our export is the identity.
    back = from_hf_state_dict(hf_sd, model.config)
    sd = model.state_dict()
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize("name", ["neox", "olmo2"])
def test_from_pretrained_directory(name, tmp_path, monkeypatch):
    """The publication path: config.json + model.safetensors read by AutoModelForCausalLM."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ours(name)
    cfg = hf_config(model.config, bos_id=0, eos_id=0)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    safetensors_torch.save_file(hf_sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == cfg["architectures"][0]
    assert_same_logits(model, hf, V)


def test_neox_names_and_fused_qkv_layout():
    model = ours("neox")
    sd = model.state_dict()
    hf_sd = to_hf_state_dict(sd, model.config)
    assert "embed_out.weight" in hf_sd and "gpt_neox.embed_in.weight" in hf_sd
    assert "gpt_neox.final_layer_norm.bias" in hf_sd
    qkv = hf_sd["gpt_neox.layers.1.attention.query_key_value.weight"]  # (3 * 64, 64)
    bias = hf_sd["gpt_neox.layers.1.attention.query_key_value.bias"]
    # HF: view(..., n_heads, 3 * head_dim) then chunk(3, -1) -> q, k, v of each head.
    for h in range(4):
        rows = slice(h * 48, (h + 1) * 48)
        for part, w in enumerate(("wq", "wk", "wv")):
            ours_rows = slice(h * 16, (h + 1) * 16)
            theirs = slice(rows.start + part * 16, rows.start + (part + 1) * 16)
            assert torch.equal(qkv[theirs], sd[f"layers.1.attn.{w}.weight"][ours_rows])
            assert torch.equal(bias[theirs], sd[f"layers.1.attn.{w}.bias"][ours_rows])
    q, k, v = (torch.randn(12, 5) for _ in range(3))
    back = _split_qkv(_fuse_qkv(q, k, v, 3), 3)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v), strict=True))


def test_olmo2_norm_names():
    hf_sd = to_hf_state_dict(ours("olmo2").state_dict(), ModelConfig(**OURS["olmo2"]))
    layer = "model.layers.0."
    for name in ("post_attention_layernorm", "post_feedforward_layernorm",
                 "self_attn.q_norm", "self_attn.k_norm"):  # fmt: skip
        assert f"{layer}{name}.weight" in hf_sd
    assert f"{layer}input_layernorm.weight" not in hf_sd
    assert hf_sd[f"{layer}self_attn.k_norm.weight"].shape == (32,)  # n_kv_heads * head_dim


@pytest.mark.parametrize("preset", ["pythia-70m", "pythia-12b", "olmo2-1b", "olmo2-7b",
                                    "llama-60m", "llama3-8b", "smollm-135m"])  # fmt: skip
def test_preset_config_round_trip(preset):
    config = ModelConfig.from_preset(preset)
    cfg = hf_config(config, bos_id=0, eos_id=0)
    assert config_from_hf(cfg) == config
    # The dict transformers itself writes (5.x moves rotary_pct into rope_parameters).
    config_cls = hf_class(cfg).config_class
    assert config_from_hf(config_cls(**cfg).to_dict()) == config


def test_neox_transformers4_style_config():
    """Pythia's published config.json (transformers 4.x keys only)."""
    cfg = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
           "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
           "num_hidden_layers": 6, "max_position_embeddings": 2048, "rotary_pct": 0.25,
           "rotary_emb_base": 10000, "use_parallel_residual": True, "hidden_act": "gelu",
           "layer_norm_eps": 1e-5, "tie_word_embeddings": False, "vocab_size": 50304,
           "initializer_range": 0.02}  # fmt: skip
    assert config_from_hf(cfg) == ModelConfig.from_preset("pythia-70m")


@pytest.mark.parametrize(
    "family, overrides, field",
    [
        ("llama", dict(parallel_residual=True), "parallel_residual"),
        ("llama", dict(rotary_pct=0.5), "rotary_pct"),
        ("llama", dict(qk_norm=True), "qk_norm"),
        ("llama", dict(norm="layernorm"), "norm"),
        ("llama", dict(mlp="gelu"), "mlp"),
        ("neox", dict(qk_norm=True), "qk_norm"),
        ("neox", dict(n_kv_heads=2), "n_kv_heads"),
        ("neox", dict(bias=False), "bias"),
        ("neox", dict(norm="rmsnorm", norm_bias=False), "norm"),
        ("neox", dict(norm_placement="post"), "norm_placement"),
        ("olmo2", dict(bias=True), "bias"),
        ("olmo2", dict(norm_placement="pre"), "norm_placement"),
        ("olmo2", dict(qk_norm=False), "qk_norm"),
        ("olmo2", dict(parallel_residual=True), "parallel_residual"),
    ],
)
def test_unmappable_config_names_the_field(family, overrides, field):
    base = {"llama": "llama", "neox": "neox", "olmo2": "olmo2"}[family]
    config = ModelConfig(**{**OURS[base], **overrides})
    pattern = rf"ModelConfig\.{field}=.* has no equivalent in \w+ForCausalLM"
    with pytest.raises(ValueError, match=pattern):
        hf_config(config, bos_id=0, eos_id=0)
    sd = GPT(config).state_dict()
    with pytest.raises(ValueError, match=pattern):
        to_hf_state_dict(sd, config)


def test_config_from_hf_rejects_unsupported():
    with pytest.raises(ValueError, match="model_type='mistral' is not supported; supported"):
        config_from_hf({"model_type": "mistral", "vocab_size": 512})
    with pytest.raises(ValueError, match="architecture 'MistralForCausalLM' is not supported"):
        config_from_hf({"architectures": ["MistralForCausalLM"], "vocab_size": 512})
    neox = hf_config(ModelConfig(**OURS["neox"]), bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match="hidden_act='relu' is not supported"):
        config_from_hf({**neox, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="attention_bias=False is not supported"):
        config_from_hf({**neox, "attention_bias": False})
    olmo2 = hf_config(ModelConfig(**OURS["olmo2"]), bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match="attention_bias=True is not supported"):
        config_from_hf({**olmo2, "attention_bias": True})
    llama = hf_config(ModelConfig(**OURS["llama"]), bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match="mlp_bias=True is not supported"):
        config_from_hf({**llama, "mlp_bias": True})
    # No model_type: the architecture decides.
    arch_only = {k: v for k, v in neox.items() if k != "model_type"}
    assert config_from_hf(arch_only, vocab_size=V) == ModelConfig(**OURS["neox"])
