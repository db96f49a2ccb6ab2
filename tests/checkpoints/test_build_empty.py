"""`build_empty`: the one meta-device builder of load, export and import draws no random
numbers, and a model loaded into it computes exactly what the original computed."""

from __future__ import annotations

import pytest
import strata.model.transformer as transformer
import torch
from safetensors.torch import load_file, save_file
from strata.checkpoints.export import from_resume, import_hf
from strata.checkpoints.load import build_empty, load
from strata.checkpoints.publish import publish_revision
from strata.checkpoints.resume import save_resume
from strata.model import GPT, ModelConfig
from strata.model.rope import rope_tables
from strata.run.config import OptimConfig
from strata.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

# vocab 500 is padded to 512; moe-bias has no HF class, so it is published with our names
TINY = dict(vocab_size=500, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
            max_seq_len=64)  # fmt: skip
CONFIGS = {
    "llama": dict(TINY),
    "llama-tied": dict(TINY, tie_embeddings=True),
    "neox": dict(TINY, n_kv_heads=4, family="neox", norm="layernorm", norm_bias=True,
                 mlp="gelu", bias=True, parallel_residual=True, rotary_pct=0.25, init="neox"),
    "moe-bias": dict(TINY, moe=dict(num_experts=4, top_k=2, d_ff_expert=16, balance="bias")),
}  # fmt: skip


def original(name: str) -> GPT:
    """A model whose every parameter and persistent buffer differs from a fresh init."""
    model = GPT(ModelConfig(**CONFIGS[name]))
    model.init_weights(seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for tensor in model.state_dict().values():  # norms, biases, expert_bias too
            tensor.add_(torch.rand(tensor.shape, generator=g, dtype=tensor.dtype) * 0.1)
        for matrix in (model.tok_embeddings.weight, model.lm_head.weight):
            matrix[TINY["vocab_size"] :] = 0  # padding rows: zero, as training keeps them
    return model.eval()


def refuse(*args, **kwargs):
    raise AssertionError("random initialisation while building a model to load into")


@pytest.fixture
def no_random(monkeypatch):
    """Any random initialisation fails the test; the global torch RNG must not move."""
    monkeypatch.setattr(GPT, "init_weights", refuse)
    monkeypatch.setattr(transformer, "init_parameters", refuse)
    before = torch.get_rng_state()
    yield
    assert torch.equal(torch.get_rng_state(), before), "the torch RNG was drawn from"


def logits(model: GPT) -> torch.Tensor:
    """(2, 24, 500) logits of fixed tokens over the real vocabulary of TINY."""
    idx = torch.randint(0, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(idx)[..., : TINY["vocab_size"]]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_build_empty_fills_only_buffers(name, monkeypatch):
    config = ModelConfig(**CONFIGS[name])
    before = torch.get_rng_state()
    monkeypatch.setattr(transformer, "init_parameters", refuse)
    model = build_empty(config)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    cos, sin = rope_tables(config.rotary_dims, config.max_seq_len, config.rope_theta)
    assert torch.equal(model.rope_cos, cos) and torch.equal(model.rope_sin, sin)
    assert (model.lm_head.weight is model.tok_embeddings.weight) == config.tie_embeddings
    for _, moe in model.moe_layers():
        assert not moe.router.expert_bias.any()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loaded_logits_equal_the_original(name, tmp_path, request):
    model = original(name)
    path = publish_revision(tmp_path / "checkpoints", 3, model, model.config, None, {})
    request.getfixturevalue("no_random")  # from here on: no random init
    loaded = load(path)
    assert torch.equal(logits(loaded), logits(model))
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["llama", "moe-bias"])
def test_a_missing_tensor_is_an_error(name, tmp_path):
    model = original(name)
    path = publish_revision(tmp_path / "checkpoints", 3, model, model.config, None, {})
    weights = load_file(path / "model.safetensors")
    dropped = sorted(k for k in weights if "norm" in k)[-1]
    del weights[dropped]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"weights do not fit the model config.*{dropped}"):
        load(path)


def test_import_builds_without_random_init(tmp_path, request):
    model = original("llama")
    path = publish_revision(tmp_path / "checkpoints", 3, model, model.config, None, {})
    request.getfixturevalue("no_random")
    out = import_hf(path, tmp_path / "imported")  # config.json: the padded vocabulary
    assert torch.equal(logits(load(out)), logits(model))


def test_resume_export_builds_without_random_init(tmp_path, request):
    model = original("llama").train()
    optimizer = build_optimizer(model, OptimConfig())
    info = {"tokens": 8, "model_config": model.config.to_dict()}
    ckpt = save_resume(tmp_path / "run" / "resume", 1, model, optimizer, info)
    request.getfixturevalue("no_random")
    loaded, _, meta = from_resume(ckpt)
    assert meta["step"] == 1
    assert torch.equal(logits(loaded.eval()), logits(model.eval()))
