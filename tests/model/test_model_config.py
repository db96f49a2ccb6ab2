"""ModelConfig: presets, validation messages, dict round trip."""

import pytest

from model import ModelConfig


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
    with pytest.raises(ValueError, match="'n_layer'.*did you mean 'n_layers'.*valid fields"):
        debug(n_layer=3)


def test_dict_round_trip():
    cfg = debug(tie_embeddings=True, rope_theta=500000.0)
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    assert set(d) >= {"vocab_size", "d_model", "n_kv_heads", "d_ff", "vocab_multiple"}


def test_from_dict_suggests_closest_key():
    d = debug().to_dict()
    d["d_modle"] = d.pop("d_model")
    with pytest.raises(ValueError, match="'d_modle'; did you mean 'd_model'"):
        ModelConfig.from_dict(d)


def test_from_dict_missing_required():
    d = debug().to_dict()
    del d["n_heads"]
    with pytest.raises(ValueError, match="missing required field.*n_heads"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(n_kv_heads=3), r"n_kv_heads=3 must divide n_heads=4"),
        (dict(n_heads=5), r"n_heads=5 must divide d_model=64"),
        (dict(n_heads=64), r"n_heads=64 gives odd head_dim"),
        (dict(d_ff=0), r"d_ff=0 must be > 0"),
        (dict(norm_eps=-1.0), r"norm_eps=-1.0 must be > 0"),
        (dict(n_layers="2"), r"n_layers='2' must be of type int"),
        (dict(n_layers=True), r"n_layers=True must be of type int"),
        (dict(d_model=64.0), r"d_model=64.0 must be of type int"),
        (dict(tie_embeddings=1), r"tie_embeddings=1 must be of type bool"),
    ],
)
def test_validation_names_field(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        debug(**overrides)


def test_int_accepted_for_float_fields():
    cfg = debug(rope_theta=10000, init_std=1)
    assert isinstance(cfg.rope_theta, float) and isinstance(cfg.init_std, float)


@pytest.mark.parametrize(
    "vocab, multiple, padded", [(512, 64, 512), (500, 64, 512), (513, 64, 576), (500, 1, 500)]
)
def test_padded_vocab_size(vocab, multiple, padded):
    assert debug(vocab_size=vocab, vocab_multiple=multiple).padded_vocab_size == padded
