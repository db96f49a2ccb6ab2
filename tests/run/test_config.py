"""Config: TOML + overrides, type checks, and one-line errors naming the bad key."""

import pytest
from strata.run.config import ConfigError, dump_toml, load_config, parse_override


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, '[run]\nname = "x"\n[model]\npreset = "debug"\n[train]\nseq_len = 64\n')
    cfg = load_config(path, ["train.max_steps=7", "optim.lr=1e-3", "publish.extra_steps=[3, 5]"])
    assert cfg.run.name == "x" and cfg.train.seq_len == 64 and cfg.train.max_steps == 7
    assert cfg.optim.lr == 1e-3 and cfg.publish.extra_steps == [3, 5]
    assert cfg.model.d_model == 64 and cfg.model_preset == "debug"


def test_model_override_changes_preset_field(tmp_path):
    cfg = load_config(write(tmp_path, '[model]\npreset = "debug"\nn_layers = 3\n'))
    assert cfg.model.n_layers == 3 and cfg.model_keys == {"n_layers"}


def test_int_accepted_for_float(tmp_path):
    cfg = load_config(None, ["optim.lr=1", "train.grad_clip=2"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.seq_lne=5", "unknown key 'train.seq_lne'; did you mean 'seq_len'"),
        ("trian.seq_len=5", "unknown section '[trian]'; did you mean 'train'"),
        ("model.d_modle=5", "unknown key 'model.d_modle'; did you mean 'd_model'"),
        ("train.seq_len=abc", "train.seq_len = 'abc': expected a value of type int"),
        ("train.max_steps=1.5", "train.max_steps = 1.5: expected a value of type int"),
        ("train.max_steps=0", "train.max_steps = 0: expected a positive integer"),
        ("log.wandb_mode=sometimes", "log.wandb_mode = 'sometimes'"),
        ("model.preset=gpt9", "model.preset = 'gpt9': expected a preset; valid: "),
        ("train.seq_len=100000", "expected at most model.max_seq_len"),
        ("train.micro_batch_size=5", "train.global_batch_size = 16: expected a multiple of"),
        ("noequals", "expected section.key=value"),
        ("train.dtype=fp16", "train.dtype = 'fp16': expected one of ('auto', 'bf16', 'fp32')"),
        ("train.param_dtype=fp16", "train.param_dtype = 'fp16': expected one of"),
        ("train.comm_timeout_s=0", "train.comm_timeout_s = 0.0: expected seconds > 0"),
        ("publish.async_max_gb=-1", "publish.async_max_gb = -1.0: expected GB >= 0"),
    ],
)
def test_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_unknown_key_in_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optim.learning_rate'.*valid: lr"):
        load_config(write(tmp_path, "[optim]\nlearning_rate = 0.1\n"))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[train\n"))


def test_dump_round_trips(tmp_path):
    cfg = load_config(
        None, ["model.preset='debug'", "run.name='a b \"c\"'", "publish.extra_steps=[9]"]
    )
    text = dump_toml(cfg)
    again = load_config(write(tmp_path, text))
    assert again.to_dict() == cfg.to_dict()
    assert "[checkpoint]" in text and "keep = 2" in text  # every default is written


def test_override_value_is_never_evaluated():
    section, key, value = parse_override("run.name=__import__('os').system('false')")
    assert (section, key) == ("run", "name") and isinstance(value, str)


def test_checkpoint_async_alias():
    assert load_config(None, ["checkpoint.async=true"]).checkpoint.async_save is True
    assert load_config(None, []).checkpoint.async_save is False
    assert load_config(None, ["publish.async=false"]).publish.async_write is False
    assert load_config(None, []).publish.async_write is True


def test_nested_moe_keys_override_and_round_trip():
    import tomllib
    from strata.run.config import dump_toml, from_dict

    cfg = load_config("configs/debug.toml", ["model.preset=debug-moe", "model.moe.top_k=3"])
    assert cfg.model.moe.top_k == 3 and cfg.model.moe.num_experts == 8
    text = dump_toml(cfg)
    assert "[model.moe]\nnum_experts = 8\ntop_k = 3\n" in text
    again = from_dict(tomllib.loads(text))
    assert again.model == cfg.model
    with pytest.raises(ConfigError, match="top_k"):
        load_config("configs/debug.toml", ["model.preset=debug-moe", "model.moe.top_k=99"])


def test_older_eval_batches_reads_as_the_windows_it_meant(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("[train]\nmicro_batch_size = 2\nglobal_batch_size = 4\neval_batches = 3\n")
    assert load_config(path).train.eval_windows == 6  # 3 micro-batches of 2 windows
    assert "eval_batches" not in dump_toml(load_config(path))
    with pytest.raises(ConfigError, match=r"^train\.eval_batches = 0: expected a positive"):
        load_config(path, ["train.eval_batches=0"])
