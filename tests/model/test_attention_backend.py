"""The attention function: SDPA and flash paths against a float64 reference and each other."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from strata.model import attention_backend as ab
from strata.model.attention_backend import (
    attention,
    document_mask,
    segment_boundaries,
    segment_ids_from_tokens,
)

B, T, D = 2, 12, 8
SEGMENTS = torch.tensor(
    [
        [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3],  # four documents, one of length 1
        [3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4],  # document 3 continues from row 0
    ]
)
HEADS = [(4, 4), (4, 2), (4, 1)]  # (H, Hkv): MHA, GQA, MQA


def qkv(H, Hkv, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g)
    k, v = (torch.randn(B, Hkv, T, D, generator=g) for _ in range(2))
    return (x.to(device=device, dtype=dtype) for x in (q, k, v))


def naive(q, k, v, causal, segment_ids=None):
    """softmax(q k^T / sqrt(D) + mask) v in float64, kv heads repeated by hand."""
    q, k, v = q.double(), k.double(), v.double()
    n_rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, T)
    allowed = torch.ones(q.size(2), k.size(2), dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1) @ v


def runs(row):
    """[(start, end), ...] of the maximal runs of equal ids in a 1-D tensor."""
    edges = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1]] + [len(row)]
    return list(zip(edges[:-1], edges[1:], strict=False))


# --- the stand-in flash-attn module --------------------------------------------------


def _sdpa_gqa(q, k, v, causal):
    """(.., H, L, D) SDPA with kv heads repeated: the stand-in's own computation."""
    n_rep = q.size(-3) // k.size(-3)
    k, v = k.repeat_interleave(n_rep, dim=-3), v.repeat_interleave(n_rep, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _check_common(q, k, v):
    assert q.dtype == k.dtype == v.dtype
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1  # flash-attn's requirement
    assert q.size(-2) % k.size(-2) == 0 and k.shape == v.shape


def make_fake_flash():
    """An object with flash-attn's two entry points, computed through SDPA, counting calls."""
    calls = {"func": 0, "varlen": 0}
    flags: list[bool] = []  # the `deterministic` argument of every call

    def flash_attn_func(q, k, v, causal=False, deterministic=False):
        calls["func"] += 1
        flags.append(deterministic)
        _check_common(q, k, v)
        assert q.dim() == 4 and q.shape[:2] == k.shape[:2]  # (B, T, H, D)
        out = _sdpa_gqa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal)
        return out.transpose(1, 2).contiguous()

    def flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, max_q, max_k, causal=False, deterministic=False
    ):
        calls["varlen"] += 1
        flags.append(deterministic)
        _check_common(q, k, v)
        assert q.dim() == 3 and q.size(0) == k.size(0)  # (total, H, D)
        for cu, mx in ((cu_q, max_q), (cu_k, max_k)):
            assert cu.dtype == torch.int32 and cu.dim() == 1 and cu.device == q.device
            assert isinstance(mx, int) and mx == int(cu.diff().max())
            assert cu[0] == 0 and cu[-1] == q.size(0) and bool((cu.diff() > 0).all())
        out = torch.empty_like(q)
        bounds = cu_q.tolist()
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            seq = (x[s:e].transpose(0, 1) for x in (q, k, v))  # (h, L, D)
            out[s:e] = _sdpa_gqa(*seq, causal).transpose(0, 1)
        return out

    fake = SimpleNamespace(flash_attn_func=flash_attn_func, deterministic_flags=flags)
    fake.flash_attn_varlen_func = flash_attn_varlen_func
    return fake, calls


@pytest.fixture
def fake_flash(monkeypatch):
    """Force the flash path on CPU/fp32 with the stand-in module; yields the call counts."""
    fake, calls = make_fake_flash()
    monkeypatch.setattr(ab, "_flash_module", lambda: fake)
    monkeypatch.setattr(ab, "_flash_eligible", lambda q, k, v: True)
    return calls


def test_flash_varlen_bookkeeping_once_per_batch(fake_flash, monkeypatch):
    """Every layer of a forward reuses the batch's cu_seqlens (one host sync, not one per
    layer); a new batch, or the same tensor changed in place, is computed afresh."""
    from strata.model import GPT, ModelConfig

    seen = []
    original = ab.segment_boundaries

    def counted(ids):
        seen.append(ids.clone())
        return original(ids)

    monkeypatch.setattr(ab, "segment_boundaries", counted)
    config = ModelConfig.from_preset("debug", n_layers=3, document_mask=True)
    model = GPT(config)
    model.init_weights(seed=0)
    idx = torch.randint(0, config.vocab_size, (2, 16))
    ids = torch.tensor([[0] * 5 + [1] * 11, [0] * 16])
    model(idx, segment_ids=ids)
    assert len(seen) == 1 and fake_flash["varlen"] == 3
    model(idx, segment_ids=ids.clone())
    ids[1, 8:] = 1  # in place: the cached boundaries no longer hold
    model(idx, segment_ids=ids)
    assert len(seen) == 3 and torch.equal(seen[-1], ids)


# --- 1. SDPA path against the float64 reference --------------------------------------


@pytest.mark.parametrize("H,Hkv", HEADS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("segmented", [False, True])
def test_sdpa_matches_naive_reference(H, Hkv, causal, segmented):
    q, k, v = qkv(H, Hkv)
    seg = SEGMENTS if segmented else None
    got = attention(q, k, v, causal=causal, segment_ids=seg)
    assert got.shape == (B, H, T, D) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive(q, k, v, causal, seg), atol=1e-5, rtol=1e-5)


def test_noncausal_cross_lengths():
    q, _, _ = qkv(4, 2)
    k, v = torch.randn(B, 2, 5, D), torch.randn(B, 2, 5, D)
    got = attention(q, k, v, causal=False)
    torch.testing.assert_close(got.double(), naive(q, k, v, False), atol=1e-5, rtol=1e-5)


# --- 2. masked and unmasked agree where they must ------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_single_segment_equals_unmasked(causal):
    q, k, v = qkv(4, 2)
    one_doc = torch.full((B, T), 7)
    torch.testing.assert_close(
        attention(q, k, v, causal, segment_ids=one_doc), attention(q, k, v, causal)
    )


@pytest.mark.parametrize("H,Hkv", HEADS)
@pytest.mark.parametrize("causal", [True, False])
def test_each_document_equals_running_it_alone(H, Hkv, causal):
    q, k, v = qkv(H, Hkv)
    out = attention(q, k, v, causal, segment_ids=SEGMENTS)
    for b in range(B):
        for s, e in runs(SEGMENTS[b]):
            alone = attention(
                q[b : b + 1, :, s:e], k[b : b + 1, :, s:e], v[b : b + 1, :, s:e], causal
            )
            torch.testing.assert_close(out[b : b + 1, :, s:e], alone, atol=1e-6, rtol=1e-5)


def test_reused_id_after_another_is_a_new_document():
    ids = torch.tensor([[0, 0, 1, 1, 0, 0]])
    mask = document_mask(ids, causal=False)[0, 0]
    assert not mask[4, 0] and not mask[0, 5] and mask[4, 5] and mask[0, 1]
    assert segment_boundaries(ids)[0].tolist() == [0, 2, 4, 6]


def test_gradients_flow_only_within_documents():
    q, k, v = (x.requires_grad_() for x in qkv(4, 2))
    out = attention(q, k, v, causal=True, segment_ids=SEGMENTS)
    out[0, :, 5].sum().backward()  # row 0, position 5: document 1 spans positions 4..5
    touched = (k.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero().squeeze(1).tolist()
    assert touched == [4, 5] and k.grad[1].abs().sum() == 0


def test_bad_inputs_raise():
    q, k, v = qkv(4, 2)
    with pytest.raises(ValueError, match="must divide"):
        attention(q, k[:, :1].expand(B, 3, T, D), v[:, :1].expand(B, 3, T, D))
    with pytest.raises(ValueError, match="equal q/k lengths"):
        attention(q, k[:, :, :5], v[:, :, :5], causal=True)
    with pytest.raises(ValueError, match="segment_ids"):
        attention(q, k, v, segment_ids=SEGMENTS[:, :5])
    with pytest.raises(ValueError, match="integers"):
        attention(q, k, v, segment_ids=SEGMENTS.float())


# --- segment ids from tokens ---------------------------------------------------------


def test_segment_ids_from_tokens_include_trailing_eos():
    eos = 0
    idx = torch.tensor([[5, 6, 0, 7, 0, 0, 8, 9], [0, 1, 2, 3, 4, 5, 6, 0]])
    assert segment_ids_from_tokens(idx, eos).tolist() == [
        [0, 0, 0, 1, 1, 2, 3, 3],  # "5 6 EOS" | "7 EOS" | "EOS" (empty document) | "8 9"
        [0, 1, 1, 1, 1, 1, 1, 1],  # a row starting with the previous document's EOS
    ]
    no_eos = torch.tensor([[4, 5, 6]])
    assert segment_ids_from_tokens(no_eos, eos).tolist() == [[0, 0, 0]]


def test_segment_ids_from_tokens_drive_attention():
    """An EOS's output sees its own document; the token after it sees only itself."""
    idx = torch.tensor([[3, 4, 0, 5, 6, 0, 7, 8, 9, 0, 1, 2]] * B)
    seg = segment_ids_from_tokens(idx, eos_id=0)
    q, k, v = qkv(4, 2)
    torch.testing.assert_close(
        attention(q, k, v, segment_ids=seg).double(),
        naive(q, k, v, True, seg),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        attention(q, k, v, segment_ids=seg)[:, :, 3], v[:, :, 3].repeat_interleave(2, 1)
    )


# --- 3. the flash path's layouts and varlen bookkeeping, via the stand-in -------------


@pytest.mark.parametrize("H,Hkv", HEADS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("segmented", [False, True])
def test_flash_path_matches_sdpa_path(fake_flash, monkeypatch, H, Hkv, causal, segmented):
    q, k, v = qkv(H, Hkv)
    seg = SEGMENTS if segmented else None
    got = attention(q, k, v, causal=causal, segment_ids=seg)
    assert fake_flash == {"func": int(not segmented), "varlen": int(segmented)}
    assert got.shape == (B, H, T, D)
    monkeypatch.setattr(ab, "_flash_eligible", lambda q, k, v: False)
    want = attention(q, k, v, causal=causal, segment_ids=seg)
    assert fake_flash["func"] + fake_flash["varlen"] == 1  # the reference run was SDPA
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_flash_path_gradients_match_sdpa_path(fake_flash, monkeypatch):
    grads = []
    for eligible in (True, False):
        monkeypatch.setattr(ab, "_flash_eligible", lambda q, k, v, e=eligible: e)
        q, k, v = (x.requires_grad_() for x in qkv(4, 2))
        attention(q, k, v, causal=True, segment_ids=SEGMENTS).square().sum().backward()
        grads.append([x.grad for x in (q, k, v)])
    assert fake_flash["varlen"] == 1
    for flash_grad, sdpa_grad in zip(*grads, strict=True):
        torch.testing.assert_close(flash_grad, sdpa_grad, atol=1e-5, rtol=1e-5)


# --- 4. segment_boundaries on hand-built examples ------------------------------------


@pytest.mark.parametrize(
    "ids,cu,max_len",
    [
        ([[0, 0, 0, 0]], [0, 4], 4),  # one row, one document
        ([[0, 0, 1, 1, 1, 2]], [0, 2, 5, 6], 3),
        ([[0, 0, 1, 1], [1, 1, 1, 2]], [0, 2, 4, 7, 8], 3),  # document 1 spans two rows
        ([[5, 5, 5], [5, 5, 5]], [0, 3, 6], 3),  # the same id in both rows: still two
        ([[0, 1, 2]], [0, 1, 2, 3], 1),  # every token its own document
    ],
)
def test_segment_boundaries(ids, cu, max_len):
    cu_seqlens, max_seqlen = segment_boundaries(torch.tensor(ids))
    assert cu_seqlens.dtype == torch.int32
    assert cu_seqlens.tolist() == cu and max_seqlen == max_len and isinstance(max_seqlen, int)


def test_segment_boundaries_of_the_test_batch():
    cu_seqlens, max_seqlen = segment_boundaries(SEGMENTS)
    assert cu_seqlens.tolist() == [0, 4, 6, 11, 12, 20, 24] and max_seqlen == 8


# --- 5. real flash-attn against SDPA on a GPU ----------------------------------------


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
    reason="needs CUDA and flash-attn",
)
@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2)])
@pytest.mark.parametrize("segmented", [False, True])
def test_real_flash_matches_sdpa_bf16(monkeypatch, H, Hkv, segmented):
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("flash-attn 2 needs sm80+")
    calls = {"n": 0}
    real = ab._flash_module()
    assert real is not None

    def counting(name):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            return getattr(real, name)(*args, **kwargs)

        return wrapped

    spy = SimpleNamespace(
        flash_attn_func=counting("flash_attn_func"),
        flash_attn_varlen_func=counting("flash_attn_varlen_func"),
    )
    monkeypatch.setattr(ab, "_flash_module", lambda: spy)
    q, k, v = qkv(H, Hkv, dtype=torch.bfloat16, device="cuda")
    seg = SEGMENTS.cuda() if segmented else None
    got = attention(q, k, v, causal=True, segment_ids=seg)
    assert calls["n"] == 1
    want = ab._sdpa(q, k, v, True, seg)
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("H,Hkv", [(8, 8), (8, 2)])
def test_sdpa_runs_on_torch_flash_kernel_on_gpu(monkeypatch, H, Hkv):
    """Without flash-attn, the model's attention call (causal, no mask, bf16, head_dim 64,
    GQA expanded) must be one that SDPA's own flash kernel accepts: with only that
    backend allowed, anything else would raise "No available kernel"."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("SDPA's flash kernel needs sm80+")
    monkeypatch.setattr(ab, "_flash_module", lambda: None)
    q = torch.randn(2, H, 256, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, Hkv, 256, 64, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = attention(q, k, v, causal=True)
        out.sum().backward()
    with sdpa_kernel(SDPBackend.MATH):
        want = attention(q.detach(), k, v, causal=True)
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)


# --- 6. backend selection ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_uses_sdpa_even_with_flash_available(monkeypatch, dtype):
    fake, calls = make_fake_flash()
    monkeypatch.setattr(ab, "_flash_module", lambda: fake)
    q, k, v = qkv(4, 2, dtype=dtype)
    assert not ab._flash_eligible(q, k, v)
    attention(q, k, v)
    attention(q, k, v, segment_ids=SEGMENTS)
    assert calls == {"func": 0, "varlen": 0}


def test_flash_module_is_cached_and_optional():
    first = ab._flash_module()
    assert ab._flash_module() is first
    assert (first is None) == (importlib.util.find_spec("flash_attn") is None)


def test_flash_gets_torch_deterministic_flag(monkeypatch):
    """flash-attn ignores torch's switch; the wrapper passes it on, both entry points."""
    fake, _ = make_fake_flash()
    monkeypatch.setattr(ab, "_flash_module", lambda: fake)
    monkeypatch.setattr(ab, "_flash_eligible", lambda q, k, v: True)
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    try:
        torch.use_deterministic_algorithms(True)
        ab.attention(q, k, v, causal=True)
        ab.attention(q, k, v, causal=True, segment_ids=segments)
    finally:
        torch.use_deterministic_algorithms(False)
    ab.attention(q, k, v, causal=True)
    assert fake.deterministic_flags == [True, True, False]
