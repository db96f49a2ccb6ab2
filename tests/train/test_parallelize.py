"""`parallelize` in one process: activation checkpointing and compile change neither the
losses nor the parameter names; the data-parallel mesh sizes are validated."""

import functools
import json

import pytest
import torch
from strata.run.config import ConfigError, TrainConfig
from strata.train.trainer import Trainer
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper


def losses(trainer):
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    return [v for r in map(json.loads, lines) for v in (r["loss"], r["grad_norm"])]


def train(tiny_config, name, **extra):
    trainer = Trainer(tiny_config(**{"run.name": name, "train.max_steps": 3, **extra}))
    trainer.fit()
    return trainer


def test_activation_checkpointing_keeps_losses_and_names(tiny_config):
    plain = train(tiny_config, "none")
    names = set(plain.model.state_dict())
    for mode, wrapped in (("full", [True, True]), ("selective", [True, False])):
        other = train(tiny_config, mode, **{"train.activation_checkpointing": f"'{mode}'"})
        assert [isinstance(b, CheckpointWrapper) for b in other.model.layers] == wrapped
        assert set(other.model.state_dict()) == names  # published names do not change
        assert losses(other) == pytest.approx(losses(plain), abs=1e-6), mode


def test_compile_compiles_each_block_in_place(tiny_config, monkeypatch):
    # The eager backend traces with dynamo but skips inductor's slow C++ build.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    plain = train(tiny_config, "plain")
    compiled = train(tiny_config, "compiled", **{"train.compile": "true"})
    assert all(b._compiled_call_impl is not None for b in compiled.model.layers)
    assert set(compiled.model.state_dict()) == set(plain.model.state_dict())
    assert losses(compiled) == pytest.approx(losses(plain), abs=1e-5)


def test_dp_sizes():
    assert TrainConfig().dp_sizes(1) == (1, 1)
    assert TrainConfig().dp_sizes(8) == (1, 8)
    assert TrainConfig(dp_replicate=2).dp_sizes(8) == (2, 4)
    assert TrainConfig(dp_replicate=2, dp_shard=4).dp_sizes(8) == (2, 4)
    with pytest.raises(ConfigError, match=r"train\.dp_replicate x train\.dp_shard = 2 x 3 = 6"):
        TrainConfig(dp_replicate=2, dp_shard=3).dp_sizes(8)
    with pytest.raises(ConfigError, match=r"train\.dp_replicate = 3: .* train\.dp_shard = -1"):
        TrainConfig(dp_replicate=3).dp_sizes(8)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dp_replicate", 0),
        ("dp_shard", 0),
        ("param_dtype", "fp8"),
        ("reduce_dtype", "fp16"),
        ("activation_checkpointing", "some"),
    ],
)
def test_bad_parallel_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^train\.{key} = "):
        TrainConfig(**{key: value})


def test_mesh_that_is_not_the_world_fails_before_training(tiny_config):
    with pytest.raises(ConfigError, match=r"train\.dp_replicate x train\.dp_shard = 1 x 2"):
        Trainer(tiny_config(**{"run.name": "mesh", "train.dp_shard": 2}))
