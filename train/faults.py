"""Faults inside a run: steps with a non-finite loss, loss spikes, failed writes.

- `StepGuard` judges each step before its update, from the global loss and gradient
  norm (two scalars, read back once per step while a check is on): a non-finite value
  means skip the update (`train.max_bad_steps > 0`); a loss above `train.spike_factor` x
  the mean of the last `train.spike_window` good losses (once 10 are known) is a spike.
  It counts skipped steps, and says when `max_bad_steps` came in a row.
- `spike_record` is what `RUN/spikes/stepN.json` holds: the global batch's window
  indices and each sequence's loss under the weights that produced the spike.
- `RunStopped` ends a run that cannot go on (diverged, disk full); its message says
  which checkpoint was kept. The CLI prints it in one line and exits 1.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

from train.sections import TrainConfig


class RunStopped(RuntimeError):
    """The run cannot go on (diverged, disk full); the message says what was kept."""


class StepGuard:
    """Skip decisions, spike detection and the count of skipped steps."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.max_bad, self.factor = cfg.max_bad_steps, cfg.spike_factor
        self.recent: collections.deque[float] = collections.deque(maxlen=cfg.spike_window)
        self.bad_in_a_row = self.skipped_steps = self.spikes = 0

    @property
    def active(self) -> bool:
        """Whether steps are judged at all (each judgement costs a host sync)."""
        return self.max_bad > 0 or self.factor > 0

    def judge(self, loss: float, norm: float) -> tuple[bool, float | None]:
        """(skip this update, the running mean when `loss` is a spike, else None)."""
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return self.max_bad > 0, None  # unchecked (max_bad 0): the log step stops it
        recent, spike = self.recent, None
        if self.factor > 0 and len(recent) >= min(10, recent.maxlen or 1):
            mean = sum(recent) / len(recent)
            if loss > self.factor * mean:
                spike, self.spikes = mean, self.spikes + 1
        recent.append(loss)
        return False, spike

    def count(self, skipped: bool) -> None:
        self.bad_in_a_row = self.bad_in_a_row + 1 if skipped else 0
        self.skipped_steps += int(skipped)

    def diverged(self) -> bool:
        return self.max_bad > 0 and self.bad_in_a_row >= self.max_bad

    def divergence(self, step: int) -> str:
        return (
            f"{self.max_bad} steps in a row had a non-finite loss or gradient norm (the "
            f"last, step {step}); resume checkpoint step {step} holds the weights of the "
            "last good step. Lower optim.lr or raise train.grad_clip, then rerun to resume"
        )


def spike_record(
    batch: int, loss: float, mean: float, factor: float, windows: list, losses: list
) -> dict[str, Any]:
    """The JSON of `RUN/spikes/step{batch + 1}.json`."""
    return {
        "step": batch + 1,
        "batch": batch,
        "loss": loss,
        "running_mean": mean,
        "spike_factor": factor,
        "windows": windows,
        "sequence_losses": losses,
    }


def write_failed(where: Path, err: OSError, latest: Path | None) -> str:
    """The message of a failed checkpoint or publication write."""
    kept = f"the last complete checkpoint, {latest}, is intact" if latest else "no checkpoint"
    return (
        f"{where}: writing failed ({err.strerror or err}); {kept}. "
        "Free space and rerun the same command to resume"
    )
