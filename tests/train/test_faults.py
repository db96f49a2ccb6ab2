"""Faults inside a run: NaN/Inf steps, loss spikes, a full disk, determinism.

Faults are injected at the model's output (a NaN or scaled loss for chosen steps) and at
the writers (an OSError(ENOSPC) after part of a checkpoint was written), so the trainer's
own handling is what is tested.
"""

import dataclasses
import errno
import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from strata.checkpoints.load import verify_revision
from strata.checkpoints.resume import latest_resume
from strata.checkpoints.safetensors_stream import StreamWriter
from strata.train.trainer import RunStopped, Trainer

from tests.train.runs import read_metrics


def inject(trainer, monkeypatch, steps, fn):
    """Apply `fn` to the loss of every forward (with targets) of global batches `steps`."""
    current = {}
    original_step = Trainer.train_step

    def train_step(self, step):
        current["step"] = step
        return original_step(self, step)

    forward = trainer.model.forward

    def patched(idx, targets=None, **kwargs):
        out = forward(idx, targets, **kwargs)
        if targets is None or current.get("step") not in steps:
            return out
        # the loss to backpropagate and the cross-entropy the trainer logs, alike
        return dataclasses.replace(out, loss=fn(out.loss), ce=fn(out.ce))

    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(trainer.model, "forward", patched)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def record_weights(monkeypatch) -> dict:
    """{step: the weights after it}, filled as the run trains."""
    seen, original = {}, Trainer.train_step

    def record(self, step):
        out = original(self, step)
        seen[step + 1] = weights(self.model)
        return out

    monkeypatch.setattr(Trainer, "train_step", record)
    return seen


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_steps_are_skipped_then_stop(tiny_config, monkeypatch):
    cfg = tiny_config(**{"run.name": "bad", "train.max_bad_steps": 3, "train.max_steps": 20})
    trainer = Trainer(cfg)
    bad = {3, 4, 9, 10, 11, 12}  # two skipped, then three in a row stop the run
    inject(trainer, monkeypatch, bad, lambda loss: loss * float("nan"))
    seen = record_weights(monkeypatch)
    with pytest.raises(RunStopped, match="3 steps in a row had a non-finite loss"):
        trainer.fit()
    assert same(seen[3], seen[5]) and not same(seen[5], seen[6])  # 4, 5 skipped; 6 trained
    assert same(seen[9], seen[12])  # batches 9, 10, 11: no update
    records = read_metrics(cfg.run_dir)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert records[3]["skipped"] and records[3]["loss"] is None
    assert records[8]["skipped_steps"] == 2 and not records[8]["skipped"]
    assert records[-1]["skipped_steps"] == 5
    # the resume checkpoint is at the stop, holding the last good step's weights
    assert latest_resume(cfg.run_dir / "resume").name == "step-00000012"
    monkeypatch.undo()
    resumed = Trainer(tiny_config(**{"run.name": "bad", "train.max_steps": 20}))
    assert resumed.step == 12 and same(weights(resumed.model), seen[9])


def test_a_bad_run_between_log_steps_stops_at_the_next_one(tiny_config, monkeypatch):
    """The counters are read at log steps only: the run stops at the first one after
    max_bad_steps in a row, even when later steps were good."""
    cfg = tiny_config(
        **{
            "run.name": "bad5",
            "train.max_bad_steps": 3,
            "train.max_steps": 20,
            "log.every": 5,
            "train.eval_every": 0,
        }
    )
    trainer = Trainer(cfg)
    inject(trainer, monkeypatch, {6, 7, 8}, lambda loss: loss * float("inf"))
    with pytest.raises(RunStopped, match=r"steps 7 to 9; skipped, no update\); stopped at step 10"):
        trainer.fit()
    records = read_metrics(cfg.run_dir)
    assert [r["step"] for r in records] == [5, 10]
    assert "skipped_steps" not in records[0]
    assert records[1]["skipped_steps"] == 3 and not records[1]["skipped"]
    assert latest_resume(cfg.run_dir / "resume").name == "step-00000010"
    state = trainer.optimizer.state[next(iter(trainer.model.parameters()))]
    assert int(state["step"]) == 7  # 10 steps, 3 skipped: AdamW's own count agrees


def test_an_unfused_optimizer_skips_bad_steps_through_the_host(tiny_config, monkeypatch):
    """Parameters on a device without fused AdamW: the same skip, decided on the host."""
    from strata.train.optim import param_groups

    cfg = tiny_config(**{"run.name": "unfused", "train.max_steps": 4, "log.every": 4})
    trainer = Trainer(cfg)
    trainer.optimizer = torch.optim.AdamW(param_groups(trainer.model, 0.1), lr=1e-3)
    assert not trainer.optimizer.defaults["fused"]
    inject(trainer, monkeypatch, {2}, lambda loss: loss * float("nan"))
    seen = record_weights(monkeypatch)
    trainer.fit()
    assert same(seen[2], seen[3]) and not same(seen[3], seen[4])
    assert read_metrics(cfg.run_dir)[-1]["skipped_steps"] == 1


def test_loss_spikes_are_recorded(tiny_config, monkeypatch):
    cfg = tiny_config(**{"run.name": "spike", "train.spike_factor": 2.0, "train.max_steps": 16})
    trainer = Trainer(cfg)
    inject(trainer, monkeypatch, {13}, lambda loss: loss * 3)
    trainer.fit()
    files = sorted(p.name for p in (cfg.run_dir / "spikes").iterdir())
    assert files == ["step14.json"]
    spike = json.loads((cfg.run_dir / "spikes" / "step14.json").read_text())
    assert spike["batch"] == 13 and spike["loss"] > 2 * spike["running_mean"]
    assert spike["windows"] == trainer.batches.window_indices(13).tolist()
    assert spike["sources"] == [Path(cfg.data.dataset).name] * 4  # its one source
    per_seq = spike["sequence_losses"]  # the real losses: the injection scales only the mean
    assert len(per_seq) == 4 and spike["loss"] == pytest.approx(3 * sum(per_seq) / 4, rel=1e-4)
    assert read_metrics(cfg.run_dir)[-1]["spikes"] == 1


def test_disk_full_keeps_the_previous_checkpoint(tiny_config, monkeypatch):
    cfg = tiny_config(**{"run.name": "full"})
    trainer = Trainer(cfg)
    original = dcp.save

    def fill_disk(state, checkpoint_id, **kwargs):
        original(state, checkpoint_id=checkpoint_id, **kwargs)  # part of it was written
        if "step-00000008" in str(checkpoint_id):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp, "save", fill_disk)
    with pytest.raises(RunStopped, match="No space left on device.*step-00000004, is intact"):
        trainer.fit()
    resume = cfg.run_dir / "resume"
    assert sorted(p.name for p in resume.iterdir()) == ["latest", "step-00000004"]
    monkeypatch.undo()
    again = Trainer(tiny_config(**{"run.name": "full"}))
    assert again.step == 4  # the previous checkpoint loads

    def fail_publish(self, name, tensor):
        self.file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StreamWriter, "write", fail_publish)
    ckpts = cfg.run_dir / "checkpoints"
    manifest = (ckpts / "manifest.json").read_text()
    step8 = (ckpts / "step8" / "strata.json").read_text()  # published before the first stop
    with pytest.raises(RunStopped, match=r"checkpoints/step12: writing failed"):
        again.fit()  # step 8 is kept as it was; step 12 is the first new revision
    assert (ckpts / "manifest.json").read_text() == manifest
    assert not list(ckpts.glob(".*")) and not (ckpts / "step12").exists()  # nothing half-written
    assert (ckpts / "step8" / "strata.json").read_text() == step8
    verify_revision(ckpts / "step8")  # the earlier revision is whole


def test_deterministic_runs_are_bitwise_equal(tiny_config):
    try:
        for name in ("a", "b"):
            Trainer(tiny_config(**{"run.name": name, "train.deterministic": "true"})).fit()
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    root = tiny_config().run_dir.parent
    a = load_file(root / "a" / "checkpoints" / "step12" / "model.safetensors")
    b = load_file(root / "b" / "checkpoints" / "step12" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_published_revisions_and_drops_a_cut_metrics_line(tiny_config):
    """A kill right after a revision was renamed into place (before the manifest update)
    and in the middle of a metrics line: the rerun keeps the revision's bytes, lists it
    once, and drops the partial line."""
    import shutil

    cfg = tiny_config(**{"run.name": "first"})
    Trainer(cfg).fit()
    run = cfg.run_dir.with_name("cut")
    shutil.copytree(cfg.run_dir, run)
    shutil.rmtree(run / "resume" / "step-00000012")
    shutil.rmtree(run / "checkpoints" / "step12")
    (run / "resume" / "latest").write_text("step-00000008\n")
    manifest = json.loads((run / "checkpoints" / "manifest.json").read_text())
    manifest["revisions"] = [r for r in manifest["revisions"] if r["step"] <= 4]
    (run / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    step8 = (run / "checkpoints" / "step8" / "model.safetensors").read_bytes()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "loss": 1.')  # cut short
    Trainer(tiny_config(**{"run.name": "cut"})).fit()
    assert (run / "checkpoints" / "step8" / "model.safetensors").read_bytes() == step8
    steps = [
        r["step"]
        for r in json.loads((run / "checkpoints" / "manifest.json").read_text())["revisions"]
    ]
    assert steps == [0, 1, 2, 4, 8, 12]
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 13))
