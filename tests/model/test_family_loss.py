"""The loss: PaLM z-loss against a by-hand reference, and the chunked loss against the plain one."""

import pytest
import torch
import torch.nn.functional as F
from strata.model import GPT, ModelConfig
from strata.model.loss import chunked_loss, loss_from_logits

V = 500  # padded to 512: the padding rows must stay out of the loss


def build(dtype=torch.float32, **overrides):
    """The debug model; the plain loss on whole logits unless loss_chunk_size is given."""
    overrides.setdefault("loss_chunk_size", 0)
    model = GPT(ModelConfig.from_preset("debug", vocab_size=V, **overrides))
    model.init_weights(seed=0)
    return model.to(dtype)


def batch(B=2, T=20, ignore=True):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    if ignore:
        targets[0, :5] = -100
        targets[1, -3:] = -100
    return idx, targets


def reference(logits, targets, z_loss):
    """(total, z term) by hand in float64."""
    logits, targets = logits.double().flatten(0, 1), targets.flatten()
    real = targets != -100
    lse = torch.logsumexp(logits, dim=-1)[real]
    ce = lse - logits[real].gather(-1, targets[real][:, None]).squeeze(-1)
    z = z_loss * (lse**2).mean()
    return ce.mean() + z, z


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.5])
def test_z_loss_matches_reference(z_loss):
    model = build(z_loss=z_loss)
    idx, targets = batch()
    with torch.no_grad():
        out = model(idx, targets)
    logits, loss = out.logits, out.loss
    total, z = reference(logits, targets, z_loss)
    torch.testing.assert_close(loss.double(), total, atol=1e-6, rtol=1e-6)
    assert out.z_loss.shape == () and not out.z_loss.requires_grad
    torch.testing.assert_close(out.z_loss.double(), z, atol=1e-7, rtol=1e-6)
    # ce: the cross-entropy alone, independently from F.cross_entropy
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.ce, ce, atol=1e-6, rtol=1e-6)
    if z_loss == 0.0:  # unchanged plain path: one cross_entropy call
        assert torch.equal(loss, ce) and out.z_loss.item() == 0.0


def test_z_loss_gradient_pulls_log_z_to_zero():
    logits = (torch.randn(1, 4, 8) + 3.0).requires_grad_()  # log Z well above 0
    loss, _ = loss_from_logits(logits, torch.zeros(1, 4, dtype=torch.long), z_loss=1.0)
    loss.backward()
    # Cross-entropy's gradient sums to 0 per position; z-loss adds 2 * log Z * softmax.
    assert logits.grad.sum() > 0  # so lowering every logit lowers log(Z)^2


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)], ids=["fp64", "fp32"]
)
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_chunked_loss_equals_plain_loss_and_grads(dtype, tol, tie, z_loss, chunk):
    idx, targets = batch()
    plain = build(dtype, tie_embeddings=tie, z_loss=z_loss)
    chunked = build(dtype, tie_embeddings=tie, z_loss=z_loss, loss_chunk_size=chunk)
    out_p, out_c = plain(idx, targets), chunked(idx, targets)
    loss_p, loss_c = out_p.loss, out_c.loss
    assert out_c.logits is None and out_p.logits.shape == (2, 20, V)
    torch.testing.assert_close(loss_c, loss_p, atol=tol, rtol=tol)
    torch.testing.assert_close(out_c.z_loss, out_p.z_loss, atol=tol, rtol=tol)
    torch.testing.assert_close(out_c.ce, out_p.ce, atol=tol, rtol=tol)
    loss_p.backward()
    loss_c.backward()
    gp, gc = grads(plain), grads(chunked)
    assert gp.keys() == gc.keys()
    for name in gp:
        torch.testing.assert_close(gc[name], gp[name], atol=tol, rtol=tol, msg=name)


def test_chunked_loss_function_directly():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, generator=g)
    weight = torch.randn(64, 16, dtype=torch.float64, generator=g)
    targets = torch.randint(0, 50, (3, 11), generator=g)
    targets[2, :4] = -100
    total, z = chunked_loss(hidden, weight, targets, 50, z_loss=0.01, chunk_size=5)
    ref_total, ref_z = reference((hidden @ weight.T)[..., :50], targets, 0.01)
    torch.testing.assert_close(total, ref_total)
    torch.testing.assert_close(z, ref_z)


def test_chunked_eval_and_inference():
    model = build(loss_chunk_size=8).eval()
    idx, targets = batch()
    with torch.no_grad():
        logits = model(idx)  # no targets: logits as usual
        out = model(idx, targets)
    assert logits.shape == (2, 20, V) and out.logits is None
    assert out.loss.item() == pytest.approx(build()(idx, targets).loss.item(), rel=1e-6)


def max_saved_numel(model, idx, targets) -> int:
    """Largest tensor autograd keeps for backward during this forward."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx, targets).loss
    loss.backward()
    return max(sizes)


def test_chunked_loss_never_keeps_whole_batch_logits():
    idx, targets = batch(B=2, T=40)  # N * V = 80 * 500 > lm_head's 512 * 64
    full_logits = 80 * V
    assert max_saved_numel(build(), idx, targets) >= full_logits
    assert max_saved_numel(build(loss_chunk_size=16), idx, targets) < full_logits


def test_fused_chunked_loss_gradcheck():
    """The gradients computed in the forward pass against finite differences (float64),
    through a non-unit upstream gradient, with ignored targets and padded vocab rows."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(12, 6, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 10, (2, 5), generator=g)
    targets[1, 1:3] = -100

    def f(h, w):
        return 3.0 * chunked_loss(h, w, targets, 10, z_loss=0.1, chunk_size=3)[0]

    assert torch.autograd.gradcheck(f, (hidden, weight))
    f(hidden, weight).backward()
    assert torch.all(weight.grad[10:] == 0)  # padding rows are never in the loss


def test_fused_chunked_loss_with_a_frozen_weight():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 8, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(20, 8, dtype=torch.float64, generator=g)  # no gradient wanted
    targets = torch.randint(0, 20, (4,), generator=g)
    loss, _ = chunked_loss(hidden[None], weight, targets[None], 20, 0.0, chunk_size=3)
    loss.backward()
    ref = hidden.detach().clone().requires_grad_()
    F.cross_entropy(ref @ weight.T, targets).backward()
    torch.testing.assert_close(hidden.grad, ref.grad)
    assert weight.grad is None


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
def test_fused_chunked_loss_under_bf16_autocast(z_loss):
    """Under autocast the matmuls run in bf16 as F.linear's would; loss and gradients
    track the plain path to bf16 precision, and gradients keep the parameters' dtype."""
    idx, targets = batch()
    plain = build(z_loss=z_loss)
    chunked = build(z_loss=z_loss, loss_chunk_size=16)
    with torch.autocast("cpu", torch.bfloat16):
        loss_p = plain(idx, targets).loss
        loss_c = chunked(idx, targets).loss
    torch.testing.assert_close(loss_c, loss_p, atol=2e-2, rtol=1e-2)
    loss_p.backward()
    loss_c.backward()
    for name, p in chunked.named_parameters():
        ref = dict(plain.named_parameters())[name].grad
        assert p.grad.dtype == torch.float32, name
        cos = F.cosine_similarity(p.grad.flatten(), ref.flatten(), dim=0)
        assert cos > 0.99, (name, cos.item())
