"""Training a mixture-of-experts model (`debug-moe`): losses go down, router losses and
routing statistics are logged and published, and 2 processes (FSDP2 with the experts
as their own unit) train exactly like one."""

import json
import math

import pytest
import torch
from strata.checkpoints import load
from strata.train.trainer import Trainer

from tests.train.test_distributed import assert_same_losses, read_metrics, run

MOE = {"model.preset": "debug-moe"}


@pytest.fixture(scope="module")
def moe_run(tiny_dataset, tmp_path_factory):
    from strata.run.config import load_config

    from tests.conftest import tiny_overrides

    out = tmp_path_factory.mktemp("moe")
    values = {**MOE, "train.max_steps": 16, "optim.lr": 3e-3}
    trainer = Trainer(
        load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **values))
    )
    trainer.fit()
    return trainer


def test_moe_run_trains_and_logs_routing(moe_run):
    records = read_metrics(moe_run.run_dir)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    for r in records:
        assert r["moe_aux_loss"] == pytest.approx(0.01, rel=0.5)  # coef x ~1 when balanced
        assert 0 < r["moe_z_loss"] and math.isfinite(r["moe_z_loss"])
        assert sorted(r["moe"]) == ["layers.0", "layers.1"]
        for stats in r["moe"].values():
            assert len(stats["fraction"]) == 8 and sum(stats["fraction"]) == pytest.approx(1)
            assert stats["max_mean_ratio"] >= 1 and 0 < stats["entropy_normalized"] <= 1


def test_published_revisions_carry_routing_and_clean_val_loss(moe_run):
    ckpts = moe_run.run_dir / "checkpoints"
    meta = json.loads((ckpts / "step16" / "strata.json").read_text())
    assert sorted(meta["moe_routing"]) == ["layers.0", "layers.1"]
    assert sum(meta["moe_routing"]["layers.1"]["fraction"]) == pytest.approx(1)
    # the published val loss is cross-entropy alone: recompute it independently
    model = load(ckpts / "step16")
    losses = []
    for rows in moe_run.val_batches:
        logits = model(rows[:, :-1])
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        losses.append(ce.item())
    assert meta["val_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)


def test_two_processes_match_one_with_experts(tiny_dataset, tmp_path):
    extra = ("model.preset='debug-moe'", "train.eval_every=0")
    run(1, tiny_dataset, tmp_path, "one", *extra)
    run(2, tiny_dataset, tmp_path, "two", *extra)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert_same_losses(one, two)
    for a, b in zip(one, two, strict=True):
        assert a["moe_aux_loss"] == pytest.approx(b["moe_aux_loss"], rel=1e-4)
        assert a["moe"]["layers.0"]["fraction"] == pytest.approx(b["moe"]["layers.0"]["fraction"])


def test_bias_balancing_trains_and_publishes_natively(tiny_dataset, tmp_path):
    """`balance = "bias"` has no OLMoE equivalent: revisions use our own names, and the
    selection bias, updated after every step from the counts, is published with them."""
    from strata.run.config import load_config

    from tests.conftest import tiny_overrides

    values = {**MOE, "model.moe.balance": "bias", "model.moe.bias_update_rate": 0.01}
    cfg = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, tmp_path, **values))
    trainer = Trainer(cfg)
    trainer.fit()
    biases = {name: layer.router.expert_bias.clone() for name, layer in trainer.model.moe_layers()}
    for bias in biases.values():  # 12 updates of +-0.01 (or 0) each
        assert 0 < bias.abs().max() <= 12 * 0.01 + 1e-6
    rev = cfg.run_dir / "checkpoints" / "step12"
    meta = json.loads((rev / "strata.json").read_text())
    assert meta["weights_format"] == "strata" and "bias" in meta["hf_incompatible"]
    loaded = load(rev)
    for name, layer in loaded.moe_layers():
        assert torch.equal(layer.router.expert_bias, biases[name])
    rows = trainer.val_batches[0]
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(rows[:, :-1]), trainer.model(rows[:, :-1]))


def test_activation_checkpointing_gives_the_same_moe_run(tiny_dataset, tmp_path):
    """Recomputing MoE blocks in backward (routing included) changes no number."""
    from strata.run.config import load_config

    from tests.conftest import tiny_overrides

    losses = {}
    for ac in ("none", "full"):
        values = {**MOE, "train.max_steps": 4, "train.activation_checkpointing": ac}
        values["run.name"] = ac
        cfg = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, tmp_path, **values))
        Trainer(cfg).fit()
        losses[ac] = [x for r in read_metrics(cfg.run_dir) for x in (r["loss"], r["moe_aux_loss"])]
    assert losses["full"] == pytest.approx(losses["none"], abs=1e-6)


def test_study_reports_routing_of_a_real_moe_run(moe_run, tmp_path):
    import csv

    from strata.study import study

    report = study(moe_run.run_dir, out=tmp_path / "study", eval_windows=4, mem_samples=4,
                   quiet=True)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "study" / "metrics.csv").open()))
    published = json.loads((moe_run.run_dir / "checkpoints" / "manifest.json").read_text())
    assert len(rows) == len(published["revisions"])
    for row in rows:
        meta = json.loads((moe_run.run_dir / "checkpoints" / row["revision"] / "strata.json")
                          .read_text())  # fmt: skip
        stats = meta["moe_routing"]["layers.1"]
        assert float(row["moe/layers.1/max_mean_ratio"]) == pytest.approx(stats["max_mean_ratio"])
    assert "moe" in report.read_text().lower()
