"""Mixture-of-experts layers (model/moe.py) and their place in the model: the layer equals a
naive per-token reference (forward and gradients, float64), stays dropless under
adversarial routing, its losses equal their formulas, bias balancing evens the load,
grouped and loop expert paths agree, capacity drops the right tokens; config
validation and round trips; GPT integration; OLMoE-1B-7B parameter counts."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from strata.model import GPT, ModelConfig, MoEConfig
from strata.model.moe import MoE, grouped_mm_supported, load_balancing_loss, routing_stats
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)

D, E = 16, 4
BASE = dict(vocab_size=64, d_model=D, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=16,
            max_seq_len=32)  # fmt: skip


def moe_config(**moe) -> ModelConfig:
    return ModelConfig(**BASE, moe=dict(num_experts=E, top_k=2, d_ff_expert=16) | moe)


def build(dtype=torch.float64, seed=0, **moe) -> MoE:
    """A standalone layer with every parameter from N(0, 0.5): routing has clear winners."""
    layer = MoE(moe_config(**moe))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return layer.to(dtype)


def inputs(n=24, dtype=torch.float64, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n // 2, D, generator=g).to(dtype)  # (B, T, D)


def expert(layer: MoE, e: int, t: torch.Tensor) -> torch.Tensor:
    ex = layer.experts
    return (F.silu(t @ ex.w1[e]) * (t @ ex.w3[e])) @ ex.w2[e]


def shared(layer: MoE, t: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """n separate shared experts: slices of the stored SwiGLU's hidden units."""
    s, out = layer.shared, torch.zeros_like(t)
    for j in range(n):
        rows = slice(j * width, (j + 1) * width)
        h = F.silu(s.w1.weight[rows] @ t) * (s.w3.weight[rows] @ t)
        out = out + s.w2.weight[:, rows] @ h
    return out


def reference(layer: MoE, x: torch.Tensor, n_shared: int = 0, norm: bool = False):
    """Each token on its own: softmax, (biased) top-k choice, weighted sum of its experts."""
    out, router = [], layer.router
    for t in x.reshape(-1, x.shape[-1]):
        probs = (router.weight @ t).softmax(-1)  # (E,)
        scores = probs if router.expert_bias is None else probs + router.expert_bias
        top = scores.topk(layer.top_k).indices
        w = probs[top] / probs[top].sum() if norm else probs[top]
        y = sum(w[j] * expert(layer, int(e), t) for j, e in enumerate(top))
        if n_shared:
            y = y + shared(layer, t, n_shared, layer.experts.w1.shape[-1])
        out.append(y)
    return torch.stack(out).view(x.shape)


def grads(layer: MoE, out: torch.Tensor, x: torch.Tensor, g: torch.Tensor):
    return torch.autograd.grad((out * g).sum(), [x, *layer.parameters()])


# (a) the layer equals the naive per-token reference, forward and backward, in float64.
@pytest.mark.parametrize(
    "top_k, norm, n_shared", [(1, False, 0), (2, False, 0), (2, True, 1), (4, False, 2)]
)
def test_matches_per_token_reference(top_k, norm, n_shared):
    layer = build(top_k=top_k, norm_topk_probs=norm, shared_experts=n_shared)
    x = inputs().requires_grad_()
    out, aux = layer(x)
    expected = reference(layer, x, n_shared, norm)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(out)
    for got, want in zip(grads(layer, out, x, g), grads(layer, expected, x, g), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    assert aux.counts.dtype == torch.long and aux.counts.sum() == 24 * top_k
    assert aux.dropped.item() == 0


def force_routing(layer: MoE, scores: list[float]) -> None:
    """Router rows i = scores[i] * e_0: with x[:, 0] > 0 every token ranks experts alike."""
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[:, 0] = torch.tensor(scores, dtype=layer.router.weight.dtype)


# (b) dropless under adversarial routing: every token on the same experts.
@pytest.mark.parametrize("top_k, hot", [(1, [0]), (2, [0, 3])])
def test_dropless_when_every_token_picks_the_same_experts(top_k, hot):
    layer = build(top_k=top_k)
    force_routing(layer, [10.0, 0.0, 0.0, 5.0])
    x = inputs()
    with torch.no_grad():
        x[..., 0] = x[..., 0].abs() + 1.0
    out, aux = layer(x)
    expected_counts = [24 if e in hot else 0 for e in range(E)]
    assert aux.counts.tolist() == expected_counts and aux.dropped.item() == 0
    torch.testing.assert_close(out, reference(layer, x), atol=1e-12, rtol=1e-10)
    assert out.abs().min(dim=-1).values.gt(0).all()  # every token was processed


# (c) load-balancing loss: closed form on a hand-built routing; 1 (x coef) when uniform.
def test_load_balancing_closed_form():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1],
                          [0.1, 0.6, 0.2, 0.1], [0.2, 0.1, 0.6, 0.1]])  # fmt: skip
    counts = torch.tensor([2, 1, 1, 0])  # top-1 of each row
    f, P = [0.5, 0.25, 0.25, 0.0], [0.4, 0.25, 0.25, 0.1]
    expected = 4 * sum(a * b for a, b in zip(f, P, strict=True))  # = 1.45
    assert load_balancing_loss(probs, counts).item() == pytest.approx(expected)
    # All load on one expert with probability p: E * p.
    assert load_balancing_loss(torch.full((3, 4), 0.25), torch.tensor([3, 0, 0, 0])) == 1.0
    # Uniform assignments and uniform probabilities: exactly 1.
    uniform = load_balancing_loss(torch.full((8, 4), 0.25), torch.tensor([2, 2, 2, 2]))
    assert uniform.item() == pytest.approx(1.0)


def test_uniform_routing_gives_coef_and_skew_more():
    config = ModelConfig.from_preset("debug-moe", moe={"aux_loss_coef": 0.05})
    model = GPT(config)
    for _, moe in model.moe_layers():
        torch.nn.init.zeros_(moe.router.weight)  # every probability 1/E
    idx = torch.randint(0, 512, (2, 16))
    assert model(idx, idx).moe_aux_loss.item() == pytest.approx(0.05)
    layer = build(top_k=1)
    force_routing(layer, [10.0, 0.0, 0.0, 0.0])
    x = inputs()
    with torch.no_grad():
        x[..., 0] = x[..., 0].abs() + 1.0
    assert layer(x)[1].aux_loss.item() > 3.0  # close to E = 4: all load, most probability


# (d) router z-loss = mean over tokens of logsumexp(logits)^2.
def test_z_loss_formula():
    layer = build()
    x = inputs()
    logits = x.reshape(-1, D) @ layer.router.weight.T  # (N, E)
    expected = (torch.logsumexp(logits, dim=-1) ** 2).mean()
    torch.testing.assert_close(layer(x)[1].z_loss, expected)


# (e) balance="bias": the bias evens out a skewed load; it changes the choice only.
def test_bias_balancing_evens_the_load():
    layer = build(top_k=1, balance="bias", aux_loss_coef=0.0)
    x = inputs(n=64)
    with torch.no_grad():  # a feature every token shares pushes them all to expert 0
        x[..., 0] = 2.0
        layer.router.weight[0, 0] = 1.5
    ratios = []
    for _ in range(20):
        with torch.no_grad():
            _, aux = layer(x)
        ratios.append(routing_stats(aux.counts)["max_mean_ratio"])
        layer.update_bias(aux.counts, rate=0.05)
    assert ratios[0] > 2.5 and max(ratios[-4:]) < 0.7 * ratios[0]  # sign steps: a band
    assert layer.router.expert_bias[0] < 0 and (layer.router.expert_bias[1:] > 0).all()
    # Weights stay the unbiased probabilities; only the choice moved.
    out, _ = layer(x)
    torch.testing.assert_close(out, reference(layer, x), atol=1e-12, rtol=1e-10)


def test_update_bias_rule_and_state_dict():
    layer = build(balance="bias", bias_update_rate=0.1)
    assert "router.expert_bias" in layer.state_dict()
    layer.update_bias(torch.tensor([5, 1, 2, 0]))  # mean 2
    assert layer.router.expert_bias.tolist() == pytest.approx([-0.1, 0.1, 0.0, 0.1])
    with pytest.raises(ValueError, match="balance='bias'"):
        build().update_bias(torch.tensor([1, 1, 1, 1]))
    assert "router.expert_bias" not in build().state_dict()


@pytest.mark.parametrize(
    "fallback, major, dtype, expected",
    [
        (False, 9, torch.bfloat16, True),  # torch 2.8: Hopper only
        (False, 8, torch.bfloat16, False),
        (False, 10, torch.bfloat16, False),  # Blackwell would crash before 2.9
        (False, 12, torch.bfloat16, False),
        (True, 8, torch.bfloat16, True),  # torch >= 2.9: sm80 and up
        (True, 12, torch.bfloat16, True),
        (True, 7, torch.bfloat16, False),
        (True, 9, torch.float32, False),  # bf16 only on CUDA
    ],
)
def test_grouped_mm_on_cuda_follows_what_torch_supports(
    monkeypatch, fallback, major, dtype, expected
):
    """The CUDA branch, with the device's compute capability and the torch release
    stood in (no GPU here)."""
    import strata.model.moe as moe_module

    monkeypatch.setattr(moe_module, "GROUPED_MM_FALLBACK", fallback)
    props = type("Props", (), {"major": major})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    assert grouped_mm_supported(dtype, torch.device("cuda", 0), D, 16) is expected


# (f) grouped matmul and the loop over experts agree.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_and_loop_paths_agree(dtype):
    if not grouped_mm_supported(dtype, torch.device("cpu"), D, 16):
        pytest.skip(f"torch._grouped_mm unavailable for {dtype} on CPU")
    layer, x = build(dtype=dtype, top_k=2, shared_experts=1), inputs(dtype=dtype).requires_grad_()
    with torch.no_grad():  # expert 1 gets no token: an empty group
        x[..., 0] = x[..., 0].abs() + 1.0
        layer.router.weight[1, 0] = -20.0
    results = {}
    for impl in ("loop", "grouped"):
        layer.experts.impl = impl
        out, aux = layer(x)
        results[impl] = (out, *grads(layer, out, x, torch.ones_like(out)))
    assert aux.counts.min() == 0
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for a, b in zip(results["loop"], results["grouped"], strict=True):
        torch.testing.assert_close(a.float(), b.float(), **tol)


# (g) capacity: the first tokens (token order) stay, the rest of an expert's tokens drop.
def test_capacity_factor_drops_late_tokens():
    layer = build(top_k=1, capacity_factor=1.0, num_experts=2)
    force_routing(layer, [10.0, -10.0])
    x = inputs(n=8)
    sign = torch.tensor([1, 1, 1, 1, 1, 1, -1, -1], dtype=x.dtype).view(2, 4)
    with torch.no_grad():
        x[..., 0] = (x[..., 0].abs() + 1.0) * sign  # tokens 0..5 -> expert 0, 6, 7 -> 1
    out, aux = layer(x)  # capacity = ceil(1.0 * 8 * 1 / 2) = 4
    assert aux.counts.tolist() == [6, 2] and aux.dropped.item() == 2
    flat, expected = out.view(8, D), reference(layer, x).view(8, D)
    kept = [0, 1, 2, 3, 6, 7]
    torch.testing.assert_close(flat[kept], expected[kept], atol=1e-12, rtol=1e-10)
    assert torch.equal(flat[4:6], torch.zeros(2, D, dtype=x.dtype))
    # A capacity that fits everything changes nothing.
    roomy = build(top_k=1, capacity_factor=4.0, num_experts=2)
    roomy.load_state_dict(layer.state_dict())
    torch.testing.assert_close(roomy(x)[0], expected.view(x.shape))


# (h) config: validation names the key; dict round trips; TOML-style nested dicts.
@pytest.mark.parametrize(
    "moe, pattern",
    [
        (dict(num_experts=0), r"model\.moe\.num_experts = 0: expected a positive integer"),
        (dict(top_k=5), r"model\.moe\.top_k = 5: expected at most num_experts \(4\)"),
        (dict(top_k=0), r"model\.moe\.top_k = 0: expected an integer >= 1"),
        (dict(d_ff_expert=0), r"model\.moe\.d_ff_expert = 0: expected a positive integer"),
        (dict(every=0), r"model\.moe\.every = 0: expected a positive integer"),
        (dict(every=3), r"model\.moe\.every = 3: expected at most n_layers \(2\)"),
        (dict(shared_experts=-1), r"model\.moe\.shared_experts = -1: expected an integer >= 0"),
        (dict(aux_loss_coef=-0.1), r"model\.moe\.aux_loss_coef = -0\.1: expected a value >= 0"),
        (dict(z_loss_coef=-1), r"model\.moe\.z_loss_coef = -1\.0: expected a value >= 0"),
        (dict(bias_update_rate=-1e-3), r"model\.moe\.bias_update_rate = -0\.001: expected a val"),
        (dict(balance="sinkhorn"), r"model\.moe\.balance = 'sinkhorn': expected one of \('aux_l"),
        (dict(capacity_factor=0.0), r"model\.moe\.capacity_factor = 0\.0: expected a value > 0"),
        (dict(top_k=2.0), r"model\.moe\.top_k = 2\.0: expected a value of type int"),
        (dict(norm_topk_probs=1), r"model\.moe\.norm_topk_probs = 1: expected a value of type b"),
        (dict(capacity_factor="1"), r"capacity_factor = '1': expected a value of type float \| No"),
        (dict(num_expert=4), r"unknown key 'model\.moe\.num_expert'; did you mean 'num_experts'"),
    ],
)  # fmt: skip
def test_validation_names_the_key(moe, pattern):
    with pytest.raises(ValueError, match=pattern):
        moe_config(**moe)


def test_config_errors_outside_moe():
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['d_ff_expert'\]"):
        ModelConfig(**BASE, moe=dict(num_experts=4, top_k=2))
    with pytest.raises(ValueError, match=r"model\.mlp = 'gelu': expected 'swiglu' when model\.moe"):
        ModelConfig(**BASE, mlp="gelu", moe=dict(num_experts=4, top_k=2, d_ff_expert=8))
    with pytest.raises(ValueError, match=r"model\.moe = 4: expected a value of type MoEConfig"):
        ModelConfig(**BASE, moe=4)


def test_dict_round_trip_and_nested_overrides():
    config = moe_config(capacity_factor=1.25, balance="bias", every=2, shared_experts=1)
    d = config.to_dict()
    assert isinstance(d["moe"], dict) and d["moe"]["capacity_factor"] == 1.25
    assert ModelConfig.from_dict(d) == config
    assert ModelConfig.from_preset("debug").to_dict()["moe"] is None
    assert ModelConfig.from_dict(ModelConfig.from_preset("debug").to_dict()).moe is None
    # A partial [model.moe] table over a MoE preset replaces only the keys it names.
    merged = ModelConfig.from_preset("olmoe-1b-7b", moe={"top_k": 4, "aux_loss_coef": 0})
    assert (merged.moe.top_k, merged.moe.num_experts, merged.moe.aux_loss_coef) == (4, 64, 0.0)
    assert isinstance(merged.moe.aux_loss_coef, float)
    given = MoEConfig(num_experts=2, top_k=1, d_ff_expert=8)
    assert ModelConfig.from_preset("debug", moe=given).moe == given
    assert ModelConfig.from_preset("debug-moe", moe=None).moe is None


def test_every_picks_blocks():
    config = ModelConfig(**{**BASE, "n_layers": 6}, moe=dict(num_experts=4, top_k=1,
                                                             d_ff_expert=8, every=2))  # fmt: skip
    assert [i for i in range(6) if config.moe_layer(i)] == [1, 3, 5]
    assert [name for name, _ in GPT(config).moe_layers()] == ["layers.1", "layers.3", "layers.5"]


# (i) GPT with debug-moe.
def test_gpt_loss_includes_router_losses_and_counts():
    torch.manual_seed(0)
    config = ModelConfig.from_preset("debug-moe", moe={"z_loss_coef": 0.01}, loss_chunk_size=0)
    model = GPT(config)
    idx, targets = torch.randint(0, 512, (2, 16)), torch.randint(0, 512, (2, 16))
    out = model(idx, targets)
    loss = out.loss
    ce = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(out.ce, ce)
    assert not out.ce.requires_grad
    m = model.config.moe
    # independently: each layer's own MoEAux, weighted and averaged over layers
    x, auxes = model.tok_embeddings(idx), []
    cos, sin = model.rope_cos[:16], model.rope_sin[:16]
    for block in model.layers:
        x, aux = block(x, cos, sin)
        auxes.append(aux)
    aux_ref = m.aux_loss_coef * torch.stack([a.aux_loss for a in auxes]).mean()
    z_ref = m.z_loss_coef * torch.stack([a.z_loss for a in auxes]).mean()
    torch.testing.assert_close(out.moe_aux_loss, aux_ref.detach())
    torch.testing.assert_close(out.moe_z_loss, z_ref.detach())
    torch.testing.assert_close(loss, ce + out.moe_aux_loss + out.moe_z_loss)
    assert out.moe_aux_loss.shape == () and not out.moe_aux_loss.requires_grad
    assert out.moe_aux_loss.item() >= m.aux_loss_coef * 0.5
    assert out.moe_z_loss.item() > 0 and out.z_loss.item() == 0
    assert sorted(out.moe_counts) == ["layers.0", "layers.1"]
    for name, counts in out.moe_counts.items():
        assert counts.shape == (8,) and counts.sum().item() == 2 * 16 * 2
        assert torch.equal(counts, auxes[int(name.split(".")[1])].counts)
    # the model keeps nothing from the forward: no state left on any module
    assert not [k for mod in model.modules() for k in vars(mod) if k.startswith("last_")]
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # The chunked loss adds the same terms.
    chunked = GPT(dataclasses.replace(model.config, loss_chunk_size=8))
    chunked.load_state_dict(model.state_dict())
    chunked_out = chunked(idx, targets)
    assert chunked_out.logits is None
    torch.testing.assert_close(chunked_out.loss, loss.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_out.moe_aux_loss, out.moe_aux_loss)


def test_dense_model_reports_zero_moe_terms():
    model = GPT(ModelConfig.from_preset("debug"))
    idx = torch.randint(0, 512, (1, 8))
    out = model(idx, idx)
    assert out.moe_aux_loss.item() == 0 and out.moe_z_loss.item() == 0
    assert out.moe_counts == {} and list(model.moe_layers()) == []
    assert torch.equal(out.loss.detach(), out.ce)
    assert model.active_params() == model.num_params()


def test_gpt_works_through_activation_checkpointing_and_compile():
    torch.manual_seed(0)
    ref = GPT(ModelConfig.from_preset("debug-moe"))
    idx = torch.randint(0, 512, (2, 16))
    ref_out = ref(idx, idx)
    ref_out.loss.backward()
    model = GPT(ref.config)
    model.load_state_dict(ref.state_dict())
    model.layers[0] = checkpoint_wrapper(
        model.layers[0], checkpoint_impl=CheckpointImpl.NO_REENTRANT
    )
    model.layers[1].compile(backend="aot_eager")
    out = model(idx, idx)
    out.loss.backward()
    assert [name for name, _ in model.moe_layers()] == ["layers.0", "layers.1"]
    torch.testing.assert_close(out.loss, ref_out.loss)
    torch.testing.assert_close(out.moe_aux_loss, ref_out.moe_aux_loss)
    assert out.moe_counts.keys() == ref_out.moe_counts.keys()
    for name, counts in out.moe_counts.items():
        assert torch.equal(counts, ref_out.moe_counts[name])
    grads = {
        n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in model.named_parameters()
    }
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5)


def test_init_like_the_mlp_and_meta_build_matches():
    config = ModelConfig.from_preset("debug-moe", d_model=256, n_layers=4, d_ff=256,
                                     moe={"d_ff_expert": 256, "balance": "bias"})  # fmt: skip
    direct = GPT(config)
    direct.init_weights(seed=3)
    with torch.device("meta"):
        meta = GPT(config)
    meta.to_empty(device="cpu")
    meta.init_weights(seed=3)
    sd_d, sd_m = direct.state_dict(), meta.state_dict()
    assert sd_d.keys() == sd_m.keys() and all(torch.equal(sd_d[k], sd_m[k]) for k in sd_d)
    moe = meta.layers[1].mlp
    assert torch.equal(moe.router.expert_bias, torch.zeros(8))
    std = config.init_std  # olmo2 scheme: truncated normal(0.02) everywhere
    for w in (moe.router.weight, moe.experts.w1, moe.experts.w3, moe.experts.w2):
        assert w.std().item() == pytest.approx(std * 0.987, rel=0.05)  # cut at +-3 std
    llama = GPT(ModelConfig.from_preset("debug-moe", d_model=256, init="llama", n_layers=8,
                                        moe={"d_ff_expert": 256, "shared_experts": 1}))  # fmt: skip
    out_std = 0.02 / math.sqrt(2 * 8)
    layer = llama.layers[2].mlp
    assert layer.experts.w1.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.experts.w2.std().item() == pytest.approx(out_std, rel=0.05)
    assert layer.shared.w2.weight.std().item() == pytest.approx(out_std, rel=0.05)


def test_routing_stats():
    stats = routing_stats(torch.tensor([2, 2, 2, 2]))
    assert stats["fraction"] == [0.25] * 4 and stats["max_mean_ratio"] == 1.0
    assert stats["entropy"] == pytest.approx(math.log(4)) and stats["entropy_normalized"] == 1.0
    skew = routing_stats([6, 2, 0, 0])
    assert skew["fraction"] == [0.75, 0.25, 0.0, 0.0] and skew["max_mean_ratio"] == 3.0
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert skew["entropy"] == pytest.approx(h)
    assert skew["entropy_normalized"] == pytest.approx(h / math.log(4))
    assert routing_stats([0, 0])["max_mean_ratio"] == 0.0


# (j) OLMoE-1B-7B: total and active parameters, from the architecture formula.
def olmoe_counts(d=2048, layers=16, vocab=50304, experts=64, top_k=8, d_ff=1024):
    attn = 4 * d * d + 2 * d  # q, k, v, o (16 heads, no GQA) + q_norm, k_norm
    norms, router, expert = 2 * d, experts * d, 3 * d * d_ff
    total = layers * (attn + norms + router + experts * expert) + d + 2 * vocab * d
    active = layers * (attn + norms + router + top_k * expert) + d + 2 * vocab * d
    return total, active


def test_olmoe_1b_7b_parameter_counts():
    total, active = olmoe_counts()
    assert (total, active) == (6_919_161_856, 1_282_017_280)  # 6.92B total, 1.28B active
    config = ModelConfig.from_preset("olmoe-1b-7b")
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == total and model.active_params() == active
    lm_head = 50304 * 2048
    expected_flops = 6.0 * (active - lm_head) + 12.0 * 16 * 2048 * 4096
    assert model.flops_per_token(4096) == expected_flops
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "OlmoeForCausalLM"):
        pytest.skip("transformers has no OLMoE")
    from strata.checkpoints.hf import hf_config

    hf_cfg = transformers.OlmoeConfig(**hf_config(config, bos_id=None, eos_id=0))
    with torch.device("meta"):
        hf = transformers.OlmoeForCausalLM(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == total


def test_generation_with_cache_matches_full_forward():
    from strata.model.generate import generate

    torch.manual_seed(0)
    model = GPT(ModelConfig.from_preset("debug-moe")).eval()
    prompt = torch.randint(0, 512, (1, 5))
    out = generate(model, prompt, max_new_tokens=6, temperature=0.0)
    x = prompt
    for _ in range(6):
        with torch.no_grad():
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, x)
