"""The training loop: resume continues the same trajectory; losses go down."""

import pytest
import torch
from strata.model.attention_backend import segment_ids_from_tokens
from strata.train.trainer import Trainer

from tests.train.runs import read_metrics


@pytest.mark.parametrize("background", ["false", "true"])
def test_resume_continues_the_same_losses(tiny_config, monkeypatch, background):
    whole = Trainer(tiny_config(**{"run.name": "whole"}))
    whole.fit()

    cfg = tiny_config(**{"run.name": "cut", "checkpoint.async_save": background})
    first = Trainer(cfg)
    original = Trainer.train_step

    def crash_in_step_11(self, step):  # steps 9 and 10 train after the step-8 save
        if step == 10:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", crash_in_step_11)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert (cfg.run_dir / "resume" / "latest").read_text().strip() == "step-00000008"

    second = Trainer(tiny_config(**{"run.name": "cut", "checkpoint.async_save": background}))
    assert second.step == 8
    second.fit()

    a, b = read_metrics(whole.run_dir), read_metrics(cfg.run_dir)
    assert [r["step"] for r in b] == list(range(1, 13))  # steps 9 and 10 were dropped and redone
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-6), ra["step"]
    resumed = second.model.state_dict()
    for name, tensor in whole.model.state_dict().items():
        assert torch.allclose(tensor, resumed[name], atol=1e-6), name


def test_loss_decreases_and_grad_accumulation_matches(tiny_config):
    one = Trainer(tiny_config(**{"run.name": "mb2", "train.max_steps": 30}))
    one.fit()
    losses = [r["loss"] for r in read_metrics(one.run_dir)]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5

    # Micro-batch size changes how a batch is split, not what is learned.
    other = Trainer(
        tiny_config(**{"run.name": "mb4", "train.max_steps": 30, "train.micro_batch_size": 4})
    )
    other.fit()
    other_losses = [r["loss"] for r in read_metrics(other.run_dir)]
    assert other_losses == pytest.approx(losses, abs=2e-4)


def test_validation_loss_does_not_depend_on_the_micro_batch(tiny_config):
    """Six fixed windows (micro-batches of 1, 2 or 4 rows, the last one short): the same
    per-token mean, equal to a naive float64 mean over the windows' predicted tokens."""
    losses = []
    for micro in (1, 2, 4):
        name = f"val-mb{micro}"
        trainer = Trainer(tiny_config(**{"run.name": name, "train.micro_batch_size": micro,
                                         "train.eval_windows": 6}))  # fmt: skip
        assert sum(len(b) for b in trainer.val_batches) == 6
        losses.append(trainer.evaluate())
    rows = torch.cat(trainer.val_batches)  # (6, T + 1)
    with torch.no_grad():
        logits = trainer.model(rows[:, :-1])  # (6, T, V): the real vocabulary
    ce = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), rows[:, 1:].flatten())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) == pytest.approx(losses[2], abs=1e-6)
    assert losses[0] == pytest.approx(ce.item(), abs=1e-5)


def test_initial_loss_is_log_vocab(tiny_config):
    trainer = Trainer(tiny_config(**{"run.name": "init"}))
    val = trainer.evaluate()
    vocab = trainer.cfg.model.vocab_size
    assert abs(val - torch.log(torch.tensor(float(vocab))).item()) < 0.3


def test_wandb_offline_needs_no_login(tiny_config, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_config(
        **{
            "run.name": "wb",
            "train.max_steps": 3,
            "log.wandb_project": "'strata-test'",
            "log.wandb_mode": "'offline'",
        }
    )
    Trainer(cfg).fit()
    runs = list((cfg.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_document_mask_and_z_loss_reach_the_model(tiny_config):
    plain = Trainer(tiny_config(**{"run.name": "plain", "train.max_steps": 3}))
    plain.fit()
    masked = Trainer(
        tiny_config(
            **{
                "run.name": "masked",
                "train.max_steps": 3,
                "model.document_mask": "true",
                "model.z_loss": 1e-2,
            }
        )
    )
    masked.fit()
    a, b = read_metrics(plain.run_dir), read_metrics(masked.run_dir)
    # Step 1 is the same initial model on the same batch: only the mask can change it
    # (the logged loss excludes the z term, which is logged on its own).
    assert a[0]["loss"] != pytest.approx(b[0]["loss"], abs=1e-4)
    assert "z_loss" not in a[0] and b[0]["z_loss"] > 0
    # The windows really do span several documents, so the mask has work to do.
    rows = masked.batches.local_tokens(0)[:, :-1]
    segments = segment_ids_from_tokens(rows, masked.train_shards.eos_id)  # what it masks by
    assert segments.shape == rows.shape and int(segments.max()) > 0


def test_sigterm_checkpoints_and_stops_then_resumes(tiny_config, monkeypatch):
    import os
    import signal

    whole = Trainer(tiny_config(**{"run.name": "sig_whole"}))
    whole.fit()

    cfg = tiny_config(**{"run.name": "sig"})
    trainer = Trainer(cfg)
    original = Trainer.train_step

    def signal_during_step_5(self, step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", signal_during_step_5)
    before = signal.getsignal(signal.SIGTERM)
    trainer.fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert trainer.preempted and trainer.step == 6  # the step in flight finished
    assert (cfg.run_dir / "resume" / "latest").read_text().strip() == "step-00000006"
    assert signal.getsignal(signal.SIGTERM) == before  # handlers are restored

    resumed = Trainer(tiny_config(**{"run.name": "sig"}))
    assert resumed.step == 6
    resumed.fit()
    a, b = read_metrics(whole.run_dir), read_metrics(cfg.run_dir)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-6)
