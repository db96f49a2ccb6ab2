"""Per-family init schemes: deterministic under a seed, stds as documented in model/init.py."""

import math

import pytest
import torch
from strata.model import GPT, ModelConfig

# Wide enough that a matrix's sample std is within ~1% of the true std.
SIZES = dict(vocab_size=512, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=1024,
             max_seq_len=64)  # fmt: skip
FAMILIES = {
    "llama": dict(SIZES, bias=True),
    "neox": dict(SIZES, family="neox", norm="layernorm", norm_bias=True, mlp="gelu", bias=True,
                 parallel_residual=True, rotary_pct=0.25, init="neox"),
    "olmo2": dict(SIZES, family="olmo2", qk_norm=True, norm_placement="post", init="olmo2"),
}  # fmt: skip


def build(family, seed=0):
    model = GPT(ModelConfig(**FAMILIES[family]))
    model.init_weights(seed)
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_init_is_deterministic_under_seed(family):
    torch.manual_seed(123)
    a = build(family, seed=5)
    torch.manual_seed(456)  # the global RNG must not matter
    b, c = build(family, seed=5), build(family, seed=6)
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not torch.equal(a.layers[0].attn.wq.weight, c.layers[0].attn.wq.weight)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_meta_build_matches_direct_build(family):
    direct = build(family, seed=3)
    with torch.device("meta"):
        meta = GPT(direct.config)
    meta.to_empty(device="cpu")
    meta.init_weights(seed=3)
    sd_d, sd_m = direct.state_dict(), meta.state_dict()
    assert all(torch.equal(sd_d[k], sd_m[k]) for k in sd_d)
    assert torch.equal(direct.rope_cos, meta.rope_cos)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_norms_start_at_one_and_biases_at_zero(family):
    model = build(family)
    n_norm = n_bias = 0
    for name, p in model.named_parameters():
        if "norm" in name and name.endswith("weight"):
            assert torch.equal(p, torch.ones_like(p)), name
            n_norm += 1
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
            n_bias += 1
    assert n_norm >= 2 * model.config.n_layers + 1
    assert n_bias > 0 or not (model.config.bias or model.config.norm_bias)


def stds(model):
    layer = model.layers[1]
    return {
        "embedding": model.tok_embeddings.weight,
        "lm_head": model.lm_head.weight,
        "wq": layer.attn.wq.weight,
        "wv": layer.attn.wv.weight,
        "w1": layer.mlp.w1.weight,
        "wo": layer.attn.wo.weight,
        "w2": layer.mlp.w2.weight,
    }


def check_stds(model, inputs: float, outputs: float) -> None:
    for name, w in stds(model).items():
        expected = outputs if name in ("wo", "w2") else inputs
        assert w.std().item() == pytest.approx(expected, rel=0.03), name
        assert abs(w.mean().item()) < 0.1 * expected, name


def test_llama_scheme():
    check_stds(build("llama"), 0.02, 0.02 / math.sqrt(2 * 4))


def test_neox_scheme_small_init_and_wang_init():
    d, n_layers = 256, 4
    check_stds(build("neox"), math.sqrt(2 / (5 * d)), 2 / (n_layers * math.sqrt(d)))


def test_olmo2_scheme_truncated_normal():
    # Normal(0, 0.02) truncated at +-3 std: std shrinks by sqrt(1 - 2*3*pdf(3) / (cdf(3)-cdf(-3))).
    pdf3 = math.exp(-4.5) / math.sqrt(2 * math.pi)
    mass = math.erf(3 / math.sqrt(2))
    truncated_std = 0.02 * math.sqrt(1 - 2 * 3 * pdf3 / mass)
    model = build("olmo2")
    check_stds(model, truncated_std, truncated_std)
    for name, w in stds(model).items():
        assert w.abs().max().item() <= 0.06 + 1e-7, name
        assert w.abs().max().item() > 0.05, name  # the tails are really used, up to the cut
    assert torch.equal(model.layers[0].attn.q_norm.weight, torch.ones(256))
