"""Learning-rate schedules and the no-decay parameter groups."""

import math

import pytest
import torch
from strata.model import GPT, ModelConfig
from strata.run.config import OptimConfig
from strata.train.optim import lr_at, param_groups


def test_warmup_then_cosine_reaches_floor():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, schedule="cosine")
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)
    mid = 10 + 45  # halfway through the decay: progress (55 - 10 + 1) / 90
    expected = 0.1 + 0.45 * (1 + math.cos(math.pi * 46 / 90))
    assert lrs[mid] == pytest.approx(expected)


def test_wsd_is_flat_then_linear():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.0, warmup_steps=0, schedule="wsd", decay_fraction=0.2)
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert all(v == 1.0 for v in lrs[:80])
    assert lrs[89] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.0)


def test_linear_and_constant():
    lin = OptimConfig(lr=2.0, min_lr_ratio=0.5, warmup_steps=0, schedule="linear")
    assert lr_at(99, lin, 100) == pytest.approx(1.0)
    const = OptimConfig(lr=2.0, warmup_steps=0, schedule="constant")
    assert {lr_at(s, const, 10) for s in range(10)} == {2.0}


def test_no_decay_on_norms_and_embeddings():
    model = GPT(ModelConfig.from_preset("debug", tie_embeddings=False))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "tok_embeddings.weight" in skipped and "norm.weight" in skipped
    assert "layers.0.attn.wq.weight" in decayed and "lm_head.weight" in decayed
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_params()
    assert all(isinstance(p, torch.nn.Parameter) for p in decay["params"])
