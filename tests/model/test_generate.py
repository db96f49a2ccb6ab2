"""Generation: the KV cache gives the full forward's logits; greedy decoding equals
transformers' greedy `generate` on the exported weights; sampling filters are right."""

import pytest
import torch
from strata.checkpoints.publish import write_revision
from strata.model import GPT, ModelConfig
from strata.model.generate import filter_logits, generate, sample_next
from strata.model.kv_cache import KVCache

from tests.checkpoints.test_hf_families import OURS, perturb

FAMILIES = ["llama", "neox", "olmo2"]


def model_for(name: str) -> GPT:
    model = GPT(ModelConfig(**OURS[name]))
    model.init_weights(seed=0)
    return perturb(model)


@pytest.mark.parametrize("name", FAMILIES)
def test_cached_decoding_equals_full_forward(name):
    model = model_for(name)
    idx = torch.randint(0, 500, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = KVCache.for_model(model, batch_size=2, max_len=20)
        steps = [model(idx[:, :12], cache=cache)]
        steps += [model(idx[:, t : t + 1], cache=cache) for t in range(12, 20)]
    cached = torch.cat(steps, dim=1)
    assert cache.length == 20
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_equals_transformers_generate(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = model_for(name)
    write_revision(tmp_path / "rev", model, model.config, None, {"step": 0})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "rev").eval()
    prompt = torch.randint(3, 500, (1, 7), generator=torch.Generator().manual_seed(3))
    ours = generate(model, prompt, max_new_tokens=15, temperature=0)
    theirs = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=15,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    assert ours.shape == (1, 22)
    assert torch.equal(ours, theirs[:, :22])


def test_generation_stops_at_eos_and_max_seq_len():
    model = model_for("llama")
    prompt = torch.randint(3, 500, (2, 5), generator=torch.Generator().manual_seed(4))
    greedy = generate(model, prompt, max_new_tokens=6, temperature=0)
    eos = int(greedy[0, 5])  # row 0 ends at once; row 1 goes on until it emits eos
    out = generate(model, prompt, max_new_tokens=6, temperature=0, eos_id=eos)
    assert (out[0, 5:] == eos).all()  # a finished row is padded with eos
    hits = (greedy[1, 5:] == eos).nonzero()
    end = 5 + (int(hits[0]) + 1 if len(hits) else 6)
    assert out.shape[1] == end and torch.equal(out[1, :end], greedy[1, :end])
    long = generate(model, torch.zeros(1, 60, dtype=torch.long), max_new_tokens=100)
    assert long.shape == (1, 64)  # max_seq_len


def test_filters_and_seeded_sampling():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, False, True]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = ~torch.isinf(filter_logits(probs, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    kept = ~torch.isinf(filter_logits(probs, top_p=0.5))
    assert kept.tolist() == [[True, False, False, False]]
    wide = torch.randn(3, 50, generator=torch.Generator().manual_seed(5))
    draw = lambda s: sample_next(wide, 0.8, 10, 0.9, torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(draw(7), draw(7))
    assert all(int(t) in torch.topk(wide[i], 10).indices.tolist() for i, t in enumerate(draw(7)))
    assert torch.equal(sample_next(wide, temperature=0), wide.argmax(-1))
