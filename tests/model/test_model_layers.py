"""RMSNorm, rotary embeddings and attention against naive float64 references."""

import math

import pytest
import torch
from strata.model import attention
from strata.model.norms import RMSNorm
from strata.model.rope import apply_rotary, rope_tables


def test_rmsnorm_matches_reference():
    torch.manual_seed(0)
    norm = RMSNorm(32, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, 32) * 4
    x64, w64 = x.double(), norm.weight.detach().double()
    ref = w64 * x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x).double(), ref, atol=1e-5, rtol=1e-5)


def test_rmsnorm_keeps_dtype_and_starts_at_ones():
    norm = RMSNorm(16)
    assert torch.equal(norm.weight, torch.ones(16))
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    assert norm.to(torch.bfloat16)(x).dtype == torch.bfloat16  # as under bf16 FSDP


def naive_rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x (B, H, T, D) by angle t * theta^(-2i/D), in float64."""
    x = x.double()
    out = x.clone()
    D, half = x.shape[-1], x.shape[-1] // 2
    for t in range(x.shape[2]):
        for i in range(half):
            a = t * theta ** (-2 * i / D)
            x1, x2 = x[:, :, t, i], x[:, :, t, i + half]
            out[:, :, t, i] = x1 * math.cos(a) - x2 * math.sin(a)
            out[:, :, t, i + half] = x2 * math.cos(a) + x1 * math.sin(a)
    return out


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rotary_matches_reference(theta):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 16)
    cos, sin = rope_tables(16, 32, theta)
    assert cos.shape == sin.shape == (32, 16) and cos.dtype == torch.float32
    got = apply_rotary(x, cos[:12], sin[:12])
    torch.testing.assert_close(got.double(), naive_rotary(x, theta), atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_on_offset_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8).double(), torch.randn(1, 1, 1, 8).double()
    cos, sin = (t.double() for t in rope_tables(8, 64))

    def score(tq, tk):
        qr = apply_rotary(q, cos[tq : tq + 1], sin[tq : tq + 1])
        kr = apply_rotary(k, cos[tk : tk + 1], sin[tk : tk + 1])
        return (qr * kr).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37))


def naive_attention(q, k, v, causal):
    """softmax(QK^T / sqrt(d)) V in float64, kv head j serving query heads j*g .. j*g+g-1."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))  # (B, H, T, T)
    if causal:
        T = q.size(2)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_reference(n_heads, n_kv_heads, causal):
    torch.manual_seed(0)
    B, T, D = 2, 9, 8
    q = torch.randn(B, n_heads, T, D)
    k, v = torch.randn(2, B, n_kv_heads, T, D)
    out = attention(q, k, v, causal=causal)
    assert out.shape == (B, n_heads, T, D) and out.dtype == torch.float32
    ref = naive_attention(q, k, v, causal)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    out64 = attention(q.double(), k.double(), v.double(), causal=causal)
    torch.testing.assert_close(out64, ref, atol=1e-12, rtol=1e-12)


def test_attention_rejects_bad_heads():
    q, kv = torch.randn(1, 4, 3, 8), torch.randn(1, 3, 3, 8)
    with pytest.raises(ValueError, match="kv heads"):
        attention(q, kv, kv)


@pytest.mark.parametrize(
    ("dtype", "rotary"), [(torch.float32, 16), (torch.bfloat16, 16), (torch.float32, 8)]
)
def test_rotary_equals_the_rotate_half_form_bit_for_bit(dtype, rotary):
    """The half-split computation is exactly HF's `x * cos + rotate_half(x) * sin`."""
    from strata.model.rope import rotate_half

    x = torch.randn(2, 3, 12, 16, dtype=dtype)
    cos, sin = rope_tables(rotary, 12)
    c, s = cos.to(dtype), sin.to(dtype)
    rot = x[..., :rotary] * c + rotate_half(x[..., :rotary]) * s
    expected = torch.cat((rot, x[..., rotary:]), dim=-1)
    assert torch.equal(apply_rotary(x, cos, sin), expected)


@pytest.mark.parametrize("rotary", [16, 8])
def test_rotary_backward_is_the_inverse_rotation(rotary):
    """`apply_rotary`'s own backward (rotation by -angle) against autograd through the
    rotate_half form, in float64, in both layouts; (B, T, H, D) equals (B, H, T, D)."""
    from strata.model.rope import rotate_half

    x = torch.randn(2, 3, 12, 16, dtype=torch.float64, requires_grad=True)  # (B, H, T, D)
    cos, sin = (t.double() for t in rope_tables(rotary, 12))
    grad = torch.randn(2, 3, 12, 16, dtype=torch.float64)
    ref_x = x.detach().clone().requires_grad_()
    rot = ref_x[..., :rotary] * cos + rotate_half(ref_x[..., :rotary]) * sin
    torch.cat((rot, ref_x[..., rotary:]), dim=-1).backward(grad)
    apply_rotary(x, cos, sin).backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cos, sin), (x,))
    heads_last = x.detach().transpose(1, 2).requires_grad_()  # (B, T, H, D)
    out = apply_rotary(heads_last, cos, sin, seq_dim=1)
    torch.testing.assert_close(out.transpose(1, 2), apply_rotary(x.detach(), cos, sin))
    out.backward(grad.transpose(1, 2))
    torch.testing.assert_close(heads_last.grad.transpose(1, 2), ref_x.grad)
