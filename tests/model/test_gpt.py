"""GPT: shapes, causality, loss at init, overfitting, meta-device init, tying, presets."""

import math

import pytest
import torch
from strata.model import GPT, ModelConfig


def build(seed=0, **overrides):
    model = GPT(ModelConfig.from_preset("debug", **overrides))
    model.init_weights(seed)
    return model


def test_output_shapes_and_loss():
    model = build(vocab_size=500, loss_chunk_size=0)  # padded to 512 internally
    idx = torch.randint(0, 500, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, 500) and logits.dtype == torch.float32
    out = model(idx, idx)
    assert torch.equal(logits, out.logits)
    loss = out.loss
    assert loss.shape == () and loss.dtype == torch.float32
    assert torch.equal(out.ce, loss) and not out.ce.requires_grad  # dense, no z-loss
    assert out.z_loss.item() == out.moe_aux_loss.item() == out.moe_z_loss.item() == 0
    assert out.moe_counts == {}
    # The default (fused, chunked) loss builds no logits and gives the same loss.
    fused = build(vocab_size=500)(idx, idx)
    assert fused.logits is None and fused.loss.shape == () and fused.loss.dtype == torch.float32
    torch.testing.assert_close(fused.loss, loss)


def test_vocab_padding():
    model = build(vocab_size=500, loss_chunk_size=0)
    assert model.tok_embeddings.weight.shape == (512, 64)
    assert model.lm_head.weight.shape == (512, 64)
    # The loss only sees the real vocab: same as cross-entropy over sliced logits.
    idx = torch.randint(0, 500, (2, 8))
    out = model(idx, idx)
    ref = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 500), idx.reshape(-1))
    torch.testing.assert_close(out.loss, ref)


def test_ignore_index():
    model = build()
    idx = torch.randint(0, 512, (2, 8))
    targets = idx.clone()
    targets[:, 4:] = -100
    loss = model(idx, targets).loss
    loss_head = model(idx[:, :4], idx[:, :4]).loss
    torch.testing.assert_close(loss, loss_head)


def test_causality():
    model = build()
    idx = torch.randint(0, 512, (2, 24))
    changed = idx.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 512
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.equal(a[:, 15:], b[:, 15:])


def test_too_long_sequence():
    model = build(max_seq_len=16)
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="17 exceeds ModelConfig.max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("tie", [False, True])
def test_initial_loss_is_uniform(tie):
    model = build(seed=1, tie_embeddings=tie)
    # Independent targets: with tied embeddings a token predicts itself at init.
    idx, targets = torch.randint(0, 512, (2, 4, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = model(idx, targets).loss
    assert abs(loss.item() - math.log(512)) < 0.3


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build(seed=0)
    idx = torch.randint(0, 512, (4, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss = model(idx[:, :-1], idx[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


def test_init_weights_is_deterministic_and_scaled():
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not torch.equal(a.layers[0].attn.wq.weight, c.layers[0].attn.wq.weight)
    assert torch.equal(a.layers[1].mlp_norm.weight, torch.ones(64))
    big = GPT(ModelConfig.from_preset("debug", d_model=256, n_heads=4, d_ff=512, n_layers=8))
    big.init_weights(0)
    std = big.config.init_std
    assert big.layers[0].attn.wq.weight.std().item() == pytest.approx(std, rel=0.05)
    assert big.layers[0].mlp.w2.weight.std().item() == pytest.approx(std / 4, rel=0.05)


@pytest.mark.parametrize("tie", [False, True])
def test_meta_build_matches_direct_build(tie):
    cfg = ModelConfig.from_preset("debug", tie_embeddings=tie)
    direct = GPT(cfg)
    direct.init_weights(seed=7)
    with torch.device("meta"):
        meta = GPT(cfg)
    assert meta.tok_embeddings.weight.is_meta and meta.rope_cos.is_meta
    meta.to_empty(device="cpu")
    meta.init_weights(seed=7)
    sd_direct, sd_meta = direct.state_dict(), meta.state_dict()
    assert sd_direct.keys() == sd_meta.keys()
    assert all(torch.equal(sd_direct[k], sd_meta[k]) for k in sd_direct)
    assert torch.equal(direct.rope_cos, meta.rope_cos) and torch.equal(
        direct.rope_sin, meta.rope_sin
    )
    assert (meta.lm_head.weight is meta.tok_embeddings.weight) == tie
    idx = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        assert torch.equal(direct(idx), meta(idx))


def test_rope_buffers_not_in_state_dict():
    keys = build().state_dict().keys()
    assert not any("rope" in k for k in keys)


def test_tied_embeddings_share_storage():
    model = build(tie_embeddings=True)
    assert model.lm_head.weight is model.tok_embeddings.weight
    assert model.lm_head.weight.data_ptr() == model.tok_embeddings.weight.data_ptr()
    untied = build(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.tok_embeddings.weight.data_ptr()
    assert model.num_params() == untied.num_params() - 512 * 64


def test_parameter_names_are_stable():
    names = set(build().state_dict())
    expected = {"tok_embeddings.weight", "norm.weight", "lm_head.weight"}
    for i in range(2):
        for sub in ("attn_norm", "attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp_norm",
                    "mlp.w1", "mlp.w2", "mlp.w3"):  # fmt: skip
            expected.add(f"layers.{i}.{sub}.weight")
    assert names == expected


def expected_params(cfg: ModelConfig) -> tuple[int, int]:
    """(total, non-embedding) parameters, counted by hand from the layout switches."""
    C, D, F = cfg.d_model, cfg.head_dim, cfg.d_ff
    dq, dkv = cfg.n_heads * D, cfg.n_kv_heads * D
    per_norm = 2 if cfg.norm_bias else 1  # gain (+ bias)
    attn = 2 * C * dq + 2 * C * dkv + (dq + 2 * dkv + C if cfg.bias else 0)
    attn += (dq + dkv) * per_norm if cfg.qk_norm else 0
    if cfg.mlp == "swiglu":
        mlp = 3 * C * F + (2 * F + C if cfg.bias else 0)
    else:
        mlp = 2 * C * F + (F + C if cfg.bias else 0)
    n_moe = sum(cfg.moe_layer(i) for i in range(cfg.n_layers))  # MoE blocks replace the MLP
    moe = 0
    if cfg.moe is not None:  # router (E, C) + routed and shared SwiGLU experts
        m = cfg.moe
        moe = m.num_experts * C + (m.num_experts + m.shared_experts) * 3 * C * m.d_ff_expert
    layers = cfg.n_layers * (attn + 2 * C * per_norm) + (cfg.n_layers - n_moe) * mlp + n_moe * moe
    non_embedding = layers + C * per_norm
    vocab = cfg.padded_vocab_size * C * (1 if cfg.tie_embeddings else 2)
    return non_embedding + vocab, non_embedding


def skipped_expert_params(cfg: ModelConfig) -> int:
    """Routed-expert parameters a token does not use (0 for dense models)."""
    if cfg.moe is None:
        return 0
    n_moe = sum(cfg.moe_layer(i) for i in range(cfg.n_layers))
    m = cfg.moe
    return n_moe * (m.num_experts - m.top_k) * 3 * cfg.d_model * m.d_ff_expert


PUBLISHED = {
    "smollm-135m": 134_515_008,
    "tinyllama-1.1b": 1_100_048_384,
    "llama2-7b": 6_738_415_616,
    "llama3-8b": 8_030_261_248,
}


@pytest.mark.parametrize("name", ModelConfig.presets())
def test_presets_build_on_meta_with_expected_params(name):
    cfg = ModelConfig.from_preset(name)
    with torch.device("meta"):
        model = GPT(cfg)
    total, non_embedding = expected_params(cfg)
    assert model.num_params() == total
    assert model.num_params(exclude_embeddings=True) == non_embedding
    if name in PUBLISHED:
        assert total == PUBLISHED[name]
    # 6N over the matmul weights (lm_head counted, embedding lookup not) + attention.
    lm_head = cfg.padded_vocab_size * cfg.d_model
    active = non_embedding - skipped_expert_params(cfg)  # MoE: top_k experts per token
    flops = 6 * (active + lm_head) + 12 * cfg.n_layers * cfg.d_model * 128
    assert model.flops_per_token(128) == flops


def test_flops_tied_is_nanogpt_estimate():
    model = build(tie_embeddings=True)
    c = model.config
    assert model.flops_per_token(64) == 6 * model.num_params() + 12 * c.n_layers * c.d_model * 64
