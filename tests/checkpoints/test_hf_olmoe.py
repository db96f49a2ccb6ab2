"""Hugging Face OLMoE interop: our MoE model exported as an `OlmoeForCausalLM` folder gives
transformers' logits, imports back unchanged (from the published per-expert layout and
from transformers 5's fused one), and MoE settings OLMoE cannot express fail naming the
field."""

import json

import pytest
import torch
from strata.checkpoints.hf import config_from_hf, hf_config
from strata.checkpoints.hf_weights import from_hf_state_dict, to_hf_state_dict
from strata.model import GPT, ModelConfig

from tests.checkpoints.test_hf_families import assert_same_logits, perturb

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
if not hasattr(transformers, "OlmoeForCausalLM"):
    pytest.skip("this transformers has no OLMoE", allow_module_level=True)

V = 500  # real vocab; matrices padded to 512
E, K, FF = 8, 2, 32
OLMOE = dict(vocab_size=V, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=FF,
             max_seq_len=64, family="olmoe", qk_norm=True, init="olmo2",
             moe=dict(num_experts=E, top_k=K, d_ff_expert=FF))  # fmt: skip


def ours(**overrides) -> GPT:
    """A tiny OLMoE-layout model: perturbed norm gains, routers with clear winners."""
    model = GPT(ModelConfig(**{**OLMOE, **overrides}))
    model.init_weights(seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, moe in model.moe_layers():
            moe.router.weight.copy_(torch.randn(moe.router.weight.shape, generator=g) * 0.5)
    return perturb(model)


def write_folder(model: GPT, path) -> dict:
    cfg = hf_config(model.config, bos_id=0, eos_id=0)
    (path / "config.json").write_text(json.dumps(cfg))
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    safetensors_torch.save_file(hf_sd, path / "model.safetensors", metadata={"format": "pt"})
    return cfg


@pytest.mark.parametrize("overrides", [{}, {"moe": dict(OLMOE["moe"], norm_topk_probs=True)},
                                       {"tie_embeddings": True}])  # fmt: skip
def test_export_folder_loads_in_transformers_with_same_logits(overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ours(**overrides)
    cfg = write_folder(model, tmp_path)
    assert cfg["architectures"] == ["OlmoeForCausalLM"] and cfg["model_type"] == "olmoe"
    assert (cfg["num_experts"], cfg["num_experts_per_tok"], cfg["intermediate_size"]) == (E, K, FF)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "OlmoeForCausalLM"
    assert_same_logits(model, hf, V)
    # Back from transformers' own (5.x: fused) state_dict and from our folder: identical.
    sd = model.state_dict()
    for hf_sd in (hf.state_dict(), safetensors_torch.load_file(tmp_path / "model.safetensors")):
        back = from_hf_state_dict(hf_sd, config_from_hf(hf.config.to_dict(), vocab_size=V))
        assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_per_expert_names_and_layout():
    model = ours()
    sd, hf_sd = model.state_dict(), to_hf_state_dict(model.state_dict(), model.config)
    layer = "model.layers.1."
    assert torch.equal(hf_sd[f"{layer}mlp.gate.weight"], sd["layers.1.mlp.router.weight"])
    for j in (0, E - 1):
        gate = hf_sd[f"{layer}mlp.experts.{j}.gate_proj.weight"]  # (d_ff, d), nn.Linear layout
        down = hf_sd[f"{layer}mlp.experts.{j}.down_proj.weight"]  # (d, d_ff)
        assert gate.shape == (FF, 64) and down.shape == (64, FF) and gate.is_contiguous()
        assert torch.equal(gate, sd["layers.1.mlp.experts.w1"][j].T)
        assert torch.equal(hf_sd[f"{layer}mlp.experts.{j}.up_proj.weight"],
                           sd["layers.1.mlp.experts.w3"][j].T)  # fmt: skip
        assert torch.equal(down, sd["layers.1.mlp.experts.w2"][j].T)
    for name in ("input_layernorm", "post_attention_layernorm", "self_attn.q_norm",
                 "self_attn.k_norm"):  # fmt: skip
        assert f"{layer}{name}.weight" in hf_sd
    assert hf_sd[f"{layer}self_attn.k_norm.weight"].shape == (32,)  # n_kv_heads * head_dim
    assert len(hf_sd) == 1 + 2 * (8 + 1 + 3 * E) + 1 + 1  # 4 linears, 4 norms, gate, experts


def test_import_random_hf_olmoe():
    hf_cfg = transformers.OlmoeConfig(
        vocab_size=512, hidden_size=64, intermediate_size=FF, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        num_experts=E, num_experts_per_tok=K, norm_topk_prob=True,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = perturb(transformers.OlmoeForCausalLM(hf_cfg))
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.mlp.gate.weight.normal_(std=0.5)
    config = config_from_hf(hf.config.to_dict())
    assert config.family == "olmoe" and config.qk_norm and config.norm_placement == "pre"
    assert config.moe.num_experts == E and config.moe.top_k == K and config.moe.norm_topk_probs
    model = GPT(config)
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), config), strict=True)
    assert_same_logits(model.eval(), hf, 512)


@pytest.mark.parametrize("preset", ["olmoe-1b-7b", "debug-moe"])
def test_preset_config_round_trip(preset):
    config = ModelConfig.from_preset(preset)
    cfg = hf_config(config, bos_id=0, eos_id=0)
    assert config_from_hf(cfg) == config
    assert config_from_hf(transformers.OlmoeConfig(**cfg).to_dict()) == config


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(moe=dict(OLMOE["moe"], shared_experts=1)), "moe.shared_experts"),
        (dict(moe=dict(OLMOE["moe"], every=2)), "moe.every"),
        (dict(moe=dict(OLMOE["moe"], capacity_factor=1.25)), "moe.capacity_factor"),
        (dict(moe=dict(OLMOE["moe"], balance="bias")), "moe.balance"),
        (dict(moe=None), "moe"),
        (dict(qk_norm=False), "qk_norm"),
        (dict(norm_placement="post"), "norm_placement"),
        (dict(bias=True), "bias"),
        (dict(family="llama", qk_norm=False), "moe"),
        (dict(family="olmo2", norm_placement="post"), "moe"),
    ],
)
def test_unmappable_config_names_the_field(overrides, field):
    config = ModelConfig(**{**OLMOE, **overrides})
    pattern = rf"ModelConfig\.{field}=.* has no equivalent in \w+ForCausalLM"
    with pytest.raises(ValueError, match=pattern):
        hf_config(config, bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match=pattern):
        to_hf_state_dict(GPT(config).state_dict(), config)


def test_bias_balance_refusal_says_why():
    config = ModelConfig(**{**OLMOE, "moe": dict(OLMOE["moe"], balance="bias")})
    with pytest.raises(ValueError, match="OLMoE's router has no selection bias"):
        hf_config(config, bos_id=0, eos_id=0)


def test_config_from_hf_rejects_unsupported():
    cfg = hf_config(ModelConfig(**OLMOE), bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match="clip_qkv=8.0 is not supported"):
        config_from_hf({**cfg, "clip_qkv": 8.0})
    with pytest.raises(ValueError, match="attention_bias=True is not supported"):
        config_from_hf({**cfg, "attention_bias": True})


def test_missing_expert_weight_is_named():
    model = ours()
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    del hf_sd["model.layers.1.mlp.experts.3.up_proj.weight"]
    with pytest.raises(KeyError, match=r"experts\.3\.up_proj\.weight"):
        from_hf_state_dict(hf_sd, model.config)


def test_published_revision_round_trip(tmp_path, monkeypatch):
    """The publication path: write_revision (HF names + strata.json), then load."""
    import strata.checkpoints.publish as publish
    from strata.checkpoints.load import load

    monkeypatch.setattr(publish, "git_commit", lambda: None)
    model = ours()
    publish.write_revision(tmp_path / "step0", model, model.config, None, {"step": 0})
    back = load(tmp_path / "step0", verify=True)
    assert back.config == model.config
    sd, loaded = model.state_dict(), back.state_dict()
    assert all(torch.equal(sd[k], loaded[k]) for k in sd)
