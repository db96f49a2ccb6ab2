"""Faults inside a run: steps with a non-finite loss, loss spikes, failed writes.

- `StepGuard` judges each step before its update, on the device: a NaN/Inf global loss
  or gradient norm makes `found_inf` 1, which the fused AdamW kernel reads to skip the
  update (`train.max_bad_steps > 0`). Its counters (skipped steps, the longest run of
  them in a row) stay on the device and are read back only at log steps (`read`), so
  the check costs no host sync; a run of `max_bad_steps` in a row stops the run at the
  first log step after it. Spike detection (`train.spike_factor > 0`: a loss above the
  factor x the mean of the last `train.spike_window` good losses, once 10 are known)
  needs the loss on the host before the update, so it reads one scalar every step.
- `spike_record` is what `RUN/spikes/stepN.json` holds: the global batch's window
  indices and each sequence's loss under the weights that produced the spike.
- `RunStopped` ends a run that cannot go on (diverged, disk full); its message says
  which checkpoint was kept. The CLI prints it in one line and exits 1.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from strata.train import dist
from strata.run.sections import TrainConfig


class RunStopped(RuntimeError):
    """The run cannot go on (diverged, disk full); the message says what was kept."""


@dataclass
class GuardReading:
    """What the guard's device counters held at a log step."""

    last_skipped: bool  # the step just taken was skipped
    skipped_steps: int  # all skipped steps of this process's run
    new_skips: int  # skipped since the previous reading
    diverged_at: int  # the step that completed max_bad_steps in a row; 0 = none


class StepGuard:
    """Skip decisions and counters on the device; spike detection on the host."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.max_bad, self.factor = cfg.max_bad_steps, cfg.spike_factor
        self.recent: collections.deque[float] = collections.deque(maxlen=cfg.spike_window)
        self.spikes = 0
        self.skipped_steps = 0  # as of the last reading
        # (last step skipped, skipped in a row, skipped in all, step completing the
        # first run of max_bad_steps in a row or 0)
        self._state = torch.zeros(4, device=device)

    @property
    def skips(self) -> bool:
        """Whether non-finite steps are skipped (else a log step stops the run)."""
        return self.max_bad > 0

    def found_inf(self, loss: torch.Tensor, norm: torch.Tensor, step: int) -> torch.Tensor:
        """() float 1.0 when global batch `step`'s loss or gradient norm is not finite on
        any process, else 0.0; updates the counters. No host sync."""
        values = torch.stack([loss.detach().float(), norm.detach().float()])
        bad = dist.all_reduce_sum((~torch.isfinite(values)).any().float()).clamp(max=1)
        _, in_a_row, total, hit = self._state.unbind()
        in_a_row = (in_a_row + 1) * bad
        completes = (hit == 0) & (in_a_row >= self.max_bad)
        hit = torch.where(completes, torch.full_like(hit, step + 1), hit)
        self._state = torch.stack([bad, in_a_row, total + bad, hit])
        return bad

    def read(self) -> GuardReading:
        """The counters (one host sync; the same on every process)."""
        last, _, total, hit = (int(v) for v in self._state.tolist())
        new, self.skipped_steps = total - self.skipped_steps, total
        diverged = hit if self.skips else 0
        return GuardReading(bool(last), total, new, diverged)

    def spike(self, loss: float) -> float | None:
        """The running mean when the global `loss` is a spike, else None (host side)."""
        if not math.isfinite(loss):
            return None
        recent, spike = self.recent, None
        if len(recent) >= min(10, recent.maxlen or 1):
            mean = sum(recent) / len(recent)
            if loss > self.factor * mean:
                spike, self.spikes = mean, self.spikes + 1
        recent.append(loss)
        return spike

    def divergence(self, hit: int, step: int) -> str:
        return (
            f"{self.max_bad} steps in a row had a non-finite loss or gradient norm (steps "
            f"{hit - self.max_bad + 1} to {hit}; skipped, no update); stopped at step {step} "
            f"with resume checkpoint step {step}. Lower optim.lr or raise train.grad_clip, "
            "then rerun to resume"
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
