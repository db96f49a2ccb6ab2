"""Padded vocabulary rows never reach a client: they are zero at init, stay zero through
training, are left out of every published revision, and `transformers.generate` on a
published revision of each family never emits a padding id."""

import pytest
import torch
from strata.checkpoints.load import load
from strata.checkpoints.publish import publish_revision
from strata.model import GPT, ModelConfig
from strata.run.config import OptimConfig
from strata.train.optim import build_optimizer

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

V = 400  # padded to 448, as in the audit
TINY = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
            max_seq_len=160)  # fmt: skip
FAMILIES = {
    "llama": dict(TINY),
    "llama-tied": dict(TINY, tie_embeddings=True),
    "neox": dict(TINY, n_kv_heads=4, family="neox", norm="layernorm", norm_bias=True,
                 mlp="gelu", bias=True, parallel_residual=True, rotary_pct=0.25, init="neox"),
    "olmo2": dict(TINY, family="olmo2", qk_norm=True, norm_placement="post", init="olmo2"),
    "olmoe": dict(TINY, family="olmoe", qk_norm=True, init="olmo2",
                  moe=dict(num_experts=4, top_k=2, d_ff_expert=16)),
}  # fmt: skip


def padding_rows(model: GPT) -> list[torch.Tensor]:
    return [m.weight[V:] for m in (model.tok_embeddings, model.lm_head)]


def trained(name: str, steps: int) -> GPT:
    """A model after `steps` AdamW steps (weight decay on) on random tokens."""
    model = GPT(ModelConfig(**FAMILIES[name]))
    model.init_weights(seed=0)
    assert model.config.padded_vocab_size == 448
    opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.1))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, V, (4, 33), generator=g)
        model(idx[:, :-1], targets=idx[:, 1:]).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_padding_rows_stay_zero_through_training(name):
    model = trained(name, steps=3)
    assert all(not rows.any() for rows in padding_rows(model))
    assert model.tok_embeddings.weight[:V].abs().sum() > 0


@pytest.mark.parametrize("step", [0, 3])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_transformers_generate_never_emits_a_padding_id(name, step, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = trained(name, steps=step)
    path = publish_revision(tmp_path / "checkpoints", step, model, model.config, None, {})
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    assert hf.config.vocab_size == V
    prompt = torch.randint(0, V, (4, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = hf(input_ids=prompt).logits  # (4, 8, V): no padding column at all
        assert logits.shape[-1] == V
        torch.testing.assert_close(logits, model(prompt), atol=1e-4, rtol=1e-4)
        torch.manual_seed(0)
        out = hf.generate(prompt, do_sample=True, max_new_tokens=128, min_new_tokens=128,
                          top_k=0, temperature=1.5, pad_token_id=0)  # fmt: skip
    assert out.shape == (4, 136) and int(out.max()) < V
    loaded = load(path)  # the padding rows come back as zeros: the trained model, bitwise
    assert all(not rows.any() for rows in padding_rows(loaded))
    theirs = loaded.state_dict()
    assert all(torch.equal(theirs[k], v) for k, v in model.state_dict().items())
