"""No host-device synchronisation inside a training step.

Between log steps the trainer must never read a device value back: the loss, the
gradient norm, the bad-step check and the MoE counts stay on the device, the fused AdamW
kernel skips a bad update from a device flag, and preemption is agreed on with a CPU
all-reduce. On CPU nothing can truly stall, so the check here watches for the Python
calls that would stall a GPU (`item`, `tolist`, `bool(tensor)`, `float(tensor)`, `.cpu()`,
`.numpy()` ...) with a torch function mode; on CUDA, `torch.cuda.set_sync_debug_mode`
catches any synchronisation, also from inside torch.
"""

import pytest
import torch
from strata.train.trainer import Trainer
from torch.overrides import TorchFunctionMode

READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
}


class ReadBacks(TorchFunctionMode):
    """Records each tensor read-back as (global batch, inside train_step, name)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch, self.in_step, self.seen = -1, False, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.seen.append((self.batch, self.in_step, func.__name__))
        return func(*args, **(kwargs or {}))


def watch(monkeypatch, mode: ReadBacks) -> None:
    original = Trainer.train_step

    def train_step(self, step):
        mode.batch, mode.in_step = step, True
        try:
            return original(self, step)
        finally:
            mode.in_step = False

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("preset", ["debug", "debug-moe"])
def test_no_read_back_between_log_steps(tiny_config, monkeypatch, preset):
    cfg = tiny_config(
        **{
            "run.name": f"nosync-{preset}",
            "model.preset": f"'{preset}'",
            "train.max_steps": 12,
            "train.eval_every": 0,
            "log.every": 4,
            "checkpoint.every": 100,
            "publish.every": 100,
        }
    )
    trainer = Trainer(cfg)
    assert trainer.guard.skips and trainer.optimizer.defaults["fused"]  # the check is on
    mode = ReadBacks()
    watch(monkeypatch, mode)
    with mode:
        trainer.fit()
    sync_steps = set(trainer.publish_at) | {4, 8, 12}  # log, publication, checkpoint steps
    quiet = [b for b in range(12) if b + 1 not in sync_steps]
    assert quiet == [2, 4, 5, 6, 8, 9, 10]  # steps 3, 5, 6, 7, 9, 10, 11
    assert [s for s in mode.seen if s[1]] == []  # never inside a step
    assert [s for s in mode.seen if s[0] in quiet] == []  # nor after a quiet one
    assert any(s[0] == 3 for s in mode.seen)  # the watch sees the log step's reads


def test_the_watch_sees_a_read_back(tiny_config, monkeypatch):
    """The check can fail: spike detection reads the loss every step, by design."""
    cfg = tiny_config(**{"run.name": "spiky", "train.max_steps": 3, "train.spike_factor": 3.0})
    trainer = Trainer(cfg)
    mode = ReadBacks()
    watch(monkeypatch, mode)
    with mode:
        trainer.fit()
    assert {(b, name) for b, inside, name in mode.seen if inside} == {
        (0, "item"),
        (1, "item"),
        (2, "item"),
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_cuda_sync_inside_a_step(tiny_config):
    cfg = tiny_config(**{"run.name": "nosync-cuda", "train.device": "'cuda'"})
    trainer = Trainer(cfg)
    trainer.train_step(0)  # the first step may allocate and initialise lazily
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            trainer.train_step(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
