"""Layout switches against by-hand references: partial rotary, qk-norm, post-norm, parallel
residual, LayerNorm, GELU MLP, and the segment_ids pass-through."""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from strata.model import GPT, ModelConfig
from strata.model.attention import Attention
from strata.model.mlp import GeluMLP
from strata.model.rope import apply_rotary, rope_tables
from strata.model.transformer import Block

# The module, not the function `model.attention` that the package re-exports.
attention_module = importlib.import_module("strata.model.attention")

TINY = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128,
            max_seq_len=64)  # fmt: skip
NEOX = dict(TINY, family="neox", norm="layernorm", norm_bias=True, mlp="gelu", bias=True,
            parallel_residual=True, rotary_pct=0.25, init="neox")  # fmt: skip
OLMO2 = dict(TINY, n_kv_heads=2, family="olmo2", qk_norm=True, norm_placement="post", init="olmo2")


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Norm gains and biases away from 1 and 0, so a misplaced one would show."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    return module


def test_partial_rotary_rotates_first_dims_only():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 16).double()
    cos, sin = (t.double() for t in rope_tables(4, 10))  # 4 of 16 dims rotate
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., 4:], x[..., 4:])
    for t in range(10):
        for i in range(2):  # pairs (0, 2), (1, 3) rotate by t * 10000^(-2i/4)
            a = t * 10000 ** (-2 * i / 4)
            x1, x2 = x[:, :, t, i], x[:, :, t, i + 2]
            torch.testing.assert_close(out[:, :, t, i], x1 * math.cos(a) - x2 * math.sin(a))
            torch.testing.assert_close(out[:, :, t, i + 2], x2 * math.cos(a) + x1 * math.sin(a))


def _recording(seen):
    """An attention function that records its q, k and segment_ids, then attends."""
    real = attention_module.attention

    def record(q, k, v, causal=True, segment_ids=None):
        seen.update(q=q, k=k, segment_ids=segment_ids)
        return real(q, k, v, causal=causal, segment_ids=segment_ids)

    return record


def test_qk_norm_spans_all_heads_before_the_split(monkeypatch):
    cfg = ModelConfig(**OLMO2)
    attn = perturbed(Attention(cfg))
    assert attn.q_norm.weight.shape == (64,) and attn.k_norm.weight.shape == (32,)
    seen = {}
    monkeypatch.setattr(attention_module, "attention", _recording(seen))
    x = torch.randn(2, 5, 64)
    cos, sin = rope_tables(cfg.rotary_dims, 5)
    attn(x, cos, sin)

    def rms(y, w):
        return w * y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)

    q = rms(attn.wq(x), attn.q_norm.weight).view(2, 5, 4, 16).transpose(1, 2)
    k = rms(attn.wk(x), attn.k_norm.weight).view(2, 5, 2, 16).transpose(1, 2)
    torch.testing.assert_close(seen["q"], apply_rotary(q, cos, sin))
    torch.testing.assert_close(seen["k"], apply_rotary(k, cos, sin))


def test_post_norm_block():
    block = perturbed(Block(ModelConfig(**OLMO2)))
    x = torch.randn(2, 6, 64)
    cos, sin = rope_tables(16, 6)
    h = x + block.attn_norm(block.attn(x, cos, sin))
    expected = h + block.mlp_norm(block.mlp(h))
    out, aux = block(x, cos, sin)
    assert aux is None  # a dense block reports no MoE terms
    torch.testing.assert_close(out, expected)


def test_parallel_residual_block_with_layernorm_and_gelu():
    block = perturbed(Block(ModelConfig(**NEOX)))
    assert isinstance(block.attn_norm, torch.nn.LayerNorm) and block.attn_norm.bias is not None
    assert isinstance(block.mlp, GeluMLP) and block.attn.wq.bias is not None
    x = torch.randn(2, 6, 64)
    cos, sin = rope_tables(4, 6)
    ln1 = F.layer_norm(x, (64,), block.attn_norm.weight, block.attn_norm.bias, 1e-5)
    ln2 = F.layer_norm(x, (64,), block.mlp_norm.weight, block.mlp_norm.bias, 1e-5)
    mlp = block.mlp.w2(F.gelu(block.mlp.w1(ln2)))
    expected = x + block.attn(ln1, cos, sin) + mlp
    torch.testing.assert_close(block(x, cos, sin)[0], expected)
    block.parallel = False  # sequential form with the same weights
    h = x + block.attn(ln1, cos, sin)
    expected = h + block.mlp(block.mlp_norm(h))
    torch.testing.assert_close(block(x, cos, sin)[0], expected)


@pytest.mark.parametrize("layout", [TINY, NEOX, OLMO2], ids=["llama", "neox", "olmo2"])
def test_segment_ids_reach_attention_and_isolate_documents(layout, monkeypatch):
    model = GPT(ModelConfig(**layout)).eval()
    model.init_weights(seed=0)
    seen = {}
    monkeypatch.setattr(attention_module, "attention", _recording(seen))
    idx = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(0))
    segments = torch.tensor([[0] * 8 + [1] * 12])
    with torch.no_grad():
        packed = model(idx, segment_ids=segments)
        assert seen["segment_ids"] is segments
        alone = model(idx[:, 8:])
        whole = model(idx)
    torch.testing.assert_close(packed[:, :8], whole[:, :8])
    # Rotary scores depend on offsets only, so document 1 packed at position 8 with
    # a document mask gives the logits it gives alone at position 0.
    torch.testing.assert_close(packed[:, 8:], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(whole[:, 8:], alone, atol=1e-3)


def test_segment_ids_pass_through_training_forward(monkeypatch):
    model = GPT(ModelConfig(**TINY, loss_chunk_size=0))  # plain loss: logits come back
    seen = {}
    monkeypatch.setattr(attention_module, "attention", _recording(seen))
    idx = torch.randint(0, 512, (2, 10))
    segments = torch.zeros(2, 10, dtype=torch.long)
    out = model(idx, idx, segments)
    assert seen["segment_ids"] is segments
    torch.testing.assert_close(out.logits, model(idx))


def test_attention_is_the_backend_function():
    from strata.model import attention_backend

    from strata import model

    assert model.attention is attention_backend.attention
    assert attention_module.attention is attention_backend.attention
