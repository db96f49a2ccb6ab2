"""Export to / import from Hugging Face Llama: logits match, weights round-trip."""

import json

import pytest
import torch
from strata.checkpoints.hf import config_from_hf, hf_config
from strata.checkpoints.hf_weights import from_hf_state_dict, to_hf_state_dict
from strata.model import GPT, ModelConfig

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def build(tie: bool) -> GPT:
    # vocab 500 is padded to 512: the export leaves the 12 padding rows out.
    model = GPT(ModelConfig.from_preset("debug", vocab_size=500, tie_embeddings=tie))
    model.init_weights(seed=0)
    with torch.no_grad():  # non-trivial norm gains, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def hf_from_dict(cfg: dict):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()


def assert_same_logits(ours: GPT, hf, vocab_size: int) -> None:
    idx = torch.randint(0, vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(idx)
        got = hf(input_ids=idx).logits[..., :vocab_size]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_export_loads_into_llama_with_same_logits(tie):
    model = build(tie)
    cfg = hf_config(model.config, bos_id=1, eos_id=2)
    assert cfg["vocab_size"] == 500 and cfg["tie_word_embeddings"] == tie  # not the padded 512
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    assert ("lm_head.weight" in hf_sd) == (not tie)
    assert all(t.is_contiguous() for t in hf_sd.values())
    hf = hf_from_dict(cfg)
    result = hf.load_state_dict(hf_sd, strict=not tie)
    if tie:  # HF re-ties lm_head to the embedding, so it is the one missing key.
        assert list(result.missing_keys) == ["lm_head.weight"] and not result.unexpected_keys
        assert hf.lm_head.weight is hf.model.embed_tokens.weight
    assert_same_logits(model, hf, 500)


@pytest.mark.parametrize("tie", [False, True])
def test_from_pretrained_directory(tie, tmp_path, monkeypatch):
    """The publication path: config.json + model.safetensors read by AutoModelForCausalLM."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build(tie)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(model.config, bos_id=1, eos_id=2)))
    hf_sd = to_hf_state_dict(model.state_dict(), model.config)
    safetensors_torch.save_file(hf_sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert_same_logits(model, hf, 500)


@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_round_trip(tie):
    model = build(tie)
    sd = model.state_dict()
    back = from_hf_state_dict(to_hf_state_dict(sd, model.config), model.config)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    fresh = GPT(model.config)
    fresh.load_state_dict(back, strict=True)


@pytest.mark.parametrize("tie", [False, True])
def test_import_hf_model(tie):
    """An HF-initialised Llama imports into GPT with the same logits."""
    cfg = hf_config(ModelConfig.from_preset("debug", tie_embeddings=tie), bos_id=1, eos_id=2)
    torch.manual_seed(0)
    hf = hf_from_dict(cfg)
    config = config_from_hf(hf.config.to_dict())
    model = GPT(config)
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), config), strict=True)
    assert (model.lm_head.weight is model.tok_embeddings.weight) == tie
    assert_same_logits(model.eval(), hf, 512)


def test_config_round_trip():
    config = ModelConfig.from_preset("debug", vocab_size=500, rope_theta=500000.0, norm_eps=1e-6)
    cfg = hf_config(config, bos_id=1, eos_id=2)
    assert config_from_hf(cfg, vocab_size=500) == config
    assert config_from_hf(cfg) == config  # the real vocabulary, padded as Strata pads
    assert config_from_hf({**cfg, "vocab_size": 512}, vocab_size=500) == config  # older, padded
    # The dict transformers itself writes (5.x: rope_parameters, no top-level rope_theta).
    saved = transformers.LlamaConfig(**cfg).to_dict()
    assert config_from_hf(saved, vocab_size=500) == config


def test_config_from_hf_rejects_unsupported():
    cfg = hf_config(ModelConfig.from_preset("debug"), bos_id=1, eos_id=2)
    with pytest.raises(ValueError, match="rope_type='linear'"):
        config_from_hf({**cfg, "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        config_from_hf({**cfg, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="vocab_size=300 pads to 320"):
        config_from_hf(cfg, vocab_size=300)


def test_odd_hf_vocab_is_padded_with_zero_rows():
    cfg = hf_config(ModelConfig.from_preset("debug"), bos_id=1, eos_id=2)
    config = config_from_hf({**cfg, "vocab_size": 501})
    assert (config.vocab_size, config.padded_vocab_size) == (501, 512)
    model = GPT(config)
    model.init_weights(seed=0)  # padding rows start (and stay) zero
    assert not model.lm_head.weight[501:].any() and model.lm_head.weight[:501].any()
    hf_sd = to_hf_state_dict(model.state_dict(), config)
    assert hf_sd["lm_head.weight"].shape[0] == hf_sd["model.embed_tokens.weight"].shape[0] == 501
    back = from_hf_state_dict(hf_sd, config)  # padded back with zero rows: the same model
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="has 500 rows, expected the vocabulary size 501"):
        from_hf_state_dict({**hf_sd, "lm_head.weight": hf_sd["lm_head.weight"][:500]}, config)


def test_missing_weight_is_reported():
    model = build(False)
    sd = dict(model.state_dict())
    del sd["layers.1.mlp.w3.weight"]
    with pytest.raises(KeyError, match=r"layers\.1\.mlp\.w3\.weight"):
        to_hf_state_dict(sd, model.config)
