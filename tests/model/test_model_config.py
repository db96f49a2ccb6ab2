"""ModelConfig: presets, validation messages, dict round trip."""

import pytest
from strata.model import ModelConfig


def debug(**overrides):
    return ModelConfig.from_preset("debug", **overrides)


def test_presets_listed_and_buildable():
    names = ModelConfig.presets()
    assert {"debug", "quickstart"} <= set(names)
    for name in names:
        assert isinstance(ModelConfig.from_preset(name), ModelConfig)


def test_debug_and_quickstart_values():
    d = debug()
    assert (d.d_model, d.n_layers, d.n_heads, d.n_kv_heads, d.d_ff, d.max_seq_len) == (
        64, 2, 4, 2, 192, 256,
    )  # fmt: skip
    assert d.vocab_size == 512 and d.head_dim == 16
    q = ModelConfig.from_preset("quickstart")
    assert (q.d_model, q.n_layers, q.n_heads, q.n_kv_heads, q.d_ff, q.max_seq_len) == (
        256, 4, 8, 4, 688, 512,
    )  # fmt: skip
    assert q.vocab_size == 4096 and q.tie_embeddings


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown model preset 'nope'.*debug.*quickstart"):
        ModelConfig.from_preset("nope")


def test_override_and_unknown_override():
    assert debug(vocab_size=1000).vocab_size == 1000
    with pytest.raises(ValueError, match="unknown key 'model.n_layer'; did you mean 'n_layers'"):
        debug(n_layer=3)


def test_dict_round_trip():
    cfg = debug(tie_embeddings=True, rope_theta=500000.0)
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    assert set(d) >= {"vocab_size", "d_model", "n_kv_heads", "d_ff", "vocab_multiple"}


def test_from_dict_suggests_closest_key():
    d = debug().to_dict()
    d["d_modle"] = d.pop("d_model")
    with pytest.raises(ValueError, match="unknown key 'model.d_modle'; did you mean 'd_model'"):
        ModelConfig.from_dict(d)


def test_from_dict_missing_required():
    d = debug().to_dict()
    del d["n_heads"]
    with pytest.raises(ValueError, match="missing required field.*n_heads"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(n_kv_heads=3), r"model\.n_kv_heads = 3: expected a divisor of n_heads \(4\)"),
        (dict(n_heads=5), r"model\.n_heads = 5: expected a divisor of d_model \(64\)"),
        (dict(n_heads=64), r"model\.n_heads = 64: expected an even head_dim"),
        (dict(d_ff=0), r"model\.d_ff = 0: expected a positive integer"),
        (dict(norm_eps=-1.0), r"model\.norm_eps = -1\.0: expected a value > 0"),
        (dict(n_layers="2"), r"model\.n_layers = '2': expected a value of type int"),
        (dict(n_layers=True), r"model\.n_layers = True: expected a value of type int"),
        (dict(d_model=64.0), r"model\.d_model = 64\.0: expected a value of type int"),
        (dict(tie_embeddings=1), r"model\.tie_embeddings = 1: expected a value of type bool"),
        (dict(family="gpt2"), r"model\.family = 'gpt2': expected one of \('llama', 'neox'"),
        (dict(norm="batchnorm"), r"model\.norm = 'batchnorm': expected one of"),
        (dict(mlp="relu"), r"model\.mlp = 'relu': expected one of \('swiglu', 'gelu'\)"),
        (dict(norm_placement="sandwich"), r"model\.norm_placement = 'sandwich': expected one of"),
        (dict(init="xavier"), r"model\.init = 'xavier': expected one of"),
        (dict(family=1), r"model\.family = 1: expected a value of type str"),
        (dict(norm_bias=True), r"model\.norm_bias = True: expected false with norm = 'rmsnorm'"),
        (dict(rotary_pct=0.0), r"model\.rotary_pct = 0\.0: expected in \(0, 1\]"),
        (dict(rotary_pct=1.5), r"model\.rotary_pct = 1\.5: expected in \(0, 1\]"),
        (dict(rotary_pct=0.1), r"model\.rotary_pct = 0\.1: expected an even number > 0 of rotary"),
        (dict(z_loss=-1e-4), r"model\.z_loss = -0\.0001: expected a value >= 0"),
        (dict(loss_chunk_size=-1), r"model\.loss_chunk_size = -1: expected an integer >= 0"),
        (dict(loss_chunk_size=8.0), r"model\.loss_chunk_size = 8\.0: expected a value of type int"),
        (dict(qk_norm="yes"), r"model\.qk_norm = 'yes': expected a value of type bool"),
        (dict(document_mask=1), r"model\.document_mask = 1: expected a value of type bool"),
        (dict(rope_theta=float("nan")), r"model\.rope_theta = nan: expected a finite number"),
        (dict(init_std=float("inf")), r"model\.init_std = inf: expected a finite number"),
    ],
)
def test_validation_names_field(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        debug(**overrides)


def test_int_accepted_for_float_fields():
    cfg = debug(rope_theta=10000, init_std=1, rotary_pct=1, z_loss=0)
    assert isinstance(cfg.rope_theta, float) and isinstance(cfg.init_std, float)
    assert isinstance(cfg.rotary_pct, float) and isinstance(cfg.z_loss, float)


def test_layout_defaults_are_llama():
    d = debug()
    assert (d.family, d.norm, d.norm_bias, d.mlp, d.bias) == ("llama", "rmsnorm", False,
                                                              "swiglu", False)  # fmt: skip
    assert (d.parallel_residual, d.rotary_pct, d.qk_norm) == (False, 1.0, False)
    assert (d.norm_placement, d.init) == ("pre", "llama")
    assert (d.z_loss, d.loss_chunk_size, d.document_mask) == (0.0, 1024, False)
    assert d.rotary_dims == d.head_dim


def test_old_dict_without_layout_fields_still_loads():
    """A strata.json written before the layout fields existed."""
    old = debug().to_dict()
    new_fields = ("family", "norm", "norm_bias", "mlp", "bias", "parallel_residual",
                  "rotary_pct", "qk_norm", "norm_placement", "init", "z_loss",
                  "loss_chunk_size", "document_mask")  # fmt: skip
    for key in new_fields:
        del old[key]
    assert ModelConfig.from_dict(old) == debug()


def test_layout_dict_round_trip():
    extra = dict(z_loss=1e-4, loss_chunk_size=1024, document_mask=True)
    cfg = ModelConfig.from_preset("pythia-70m", **extra)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.rotary_dims == 16


@pytest.mark.parametrize(
    "vocab, multiple, padded", [(512, 64, 512), (500, 64, 512), (513, 64, 576), (500, 1, 500)]
)
def test_padded_vocab_size(vocab, multiple, padded):
    assert debug(vocab_size=vocab, vocab_multiple=multiple).padded_vocab_size == padded
