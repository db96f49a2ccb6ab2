"""Faults inside a run: steps with a non-finite loss, loss spikes, failed writes.

- `StepGuard` judges each step before its update, on the device: a NaN/Inf global loss
  or gradient norm makes `found_inf` 1, which the fused AdamW kernel reads to skip the
  update (`train.max_bad_steps > 0`). Its counters (skipped steps, the longest run of
  them in a row) stay on the device and are read back only at log steps (`read`), so
  the check costs no host sync; a run of `max_bad_steps` in a row stops the run at the
  first log step after it. Spike detection (`train.spike_factor > 0`: a loss above the
  factor x the mean of the last `train.spike_window` good losses, once 10 are known)
  needs the loss on the host before the update, so it reads one scalar every step.
- `check_spike` (one host sync per step) writes `RUN/spikes/stepN.json` on a spike
  (`spike_record`): the global batch's rows (window index and source name of each,
  `TrainBatches.spike_rows`) and each sequence's loss under the weights that produced
  the spike (`sequence_losses`).
- `guarded_update` is the optimizer step that a bad step skips on the device (the
  fused AdamW kernel reads `found_inf`), and the router-bias update with it.
- `RunStopped` ends a run that cannot go on (diverged, disk full); its message says
  which checkpoint was kept. The CLI prints it in one line and exits 1. `write_guard`
  is the one place that turns a failed checkpoint or publication write (an OSError,
  e.g. disk full) into it; the writers themselves remove what they left half-written.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from strata.run.jsonfile import write_atomic as write_json_atomic
from strata.run.layout import latest_resume, revision_name
from strata.run.sections import TrainConfig
from strata.train import dist


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

    def report(self, step: int, since: int) -> GuardReading | None:
        """At a log step: `read` (a host sync), and a line about the updates skipped since
        step `since`; None when bad steps are not skipped."""
        if not self.skips:
            return None
        reading = self.read()
        if reading.new_skips:
            dist.print0(
                f"steps {since + 1}-{step}: {reading.new_skips} updates skipped "
                "(non-finite loss or gradient norm)"
            )
        return reading

    def not_finite(self, step: int) -> str:
        """Why a run without skipping (`max_bad_steps = 0`) stops at a non-finite loss."""
        return (
            f"the loss is not finite at step {step} (train.max_bad_steps = 0: bad steps are "
            "not skipped); rerun to resume from the last checkpoint"
        )

    def divergence(self, hit: int, step: int) -> str:
        return (
            f"{self.max_bad} steps in a row had a non-finite loss or gradient norm (steps "
            f"{hit - self.max_bad + 1} to {hit}; skipped, no update); stopped at step {step} "
            f"with resume checkpoint step {step}. Lower optim.lr or raise train.grad_clip, "
            "then rerun to resume"
        )


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite on every process (a collective under FSDP: each
    process checks its own shards, the flags are reduced)."""
    bad = torch.zeros((), device=next(model.parameters()).device)
    with torch.no_grad():
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor's own shard
            bad += (~torch.isfinite(local)).any()
    return float(dist.all_reduce_mean(bad)) == 0.0


def ensure_finite(model: torch.nn.Module, step: int, resume_dir: Path, then: str = "") -> None:
    """Stop the run (RunStopped) when the weights after `step` are not all finite, before
    `then` happens (publishing revision `step`, writing its checkpoint; at a log step,
    nothing); the resume checkpoints written so far are kept."""
    if weights_finite(model):
        return
    latest = latest_resume(resume_dir)
    kept = f"the resume checkpoint {latest.name} is kept" if latest else "no resume checkpoint"
    raise RunStopped(
        f"the weights are not all finite after step {step}: {then}the run stopped ({kept}); "
        "lower optim.lr, optim.weight_decay or model.init_std, or raise train.grad_clip, "
        "then rerun to resume"
    )


def spike_record(
    batch: int, loss: float, mean: float, factor: float, rows: dict, losses: list
) -> dict[str, Any]:
    """The JSON of `RUN/spikes/step{batch + 1}.json`."""
    return {
        "step": batch + 1,
        "batch": batch,
        "loss": loss,
        "running_mean": mean,
        "spike_factor": factor,
        **rows,  # windows, sources
        "sequence_losses": losses,
    }


def write_failed(where: Path, err: OSError, latest: Path | None) -> str:
    """The message of a failed checkpoint or publication write."""
    kept = f"the last complete checkpoint, {latest}, is intact" if latest else "no checkpoint"
    return (
        f"{where}: writing failed ({err.strerror or err}); {kept}. "
        "Free space and rerun the same command to resume"
    )


def check_spike(
    guard: StepGuard,
    step: int,
    loss: torch.Tensor,
    spikes_dir: Path,
    losses: Callable[[], torch.Tensor],
    rows: Callable[[], dict[str, list]],
) -> None:
    """`train.spike_factor > 0`, before the update of global batch `step`: compare the
    global `loss` with the running mean (one host sync) and on a spike write
    `spikes_dir`/step{step+1}.json (RUN/spikes/) from `losses()` (this process's
    per-sequence losses, a forward) and `rows()` (the batch's windows and sources). Every
    process calls it."""
    value = dist.all_reduce_mean(loss.clone()).item()
    mean = guard.spike(value)
    if mean is None:
        return
    per_sequence = dist.all_gather_rows(losses()).tolist()  # global row order
    if dist.is_rank0():
        record = spike_record(step, value, mean, guard.factor, rows(), per_sequence)
        spikes_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(spikes_dir / f"{revision_name(step + 1)}.json", record)
    dist.print0(f"loss spike at step {step + 1}: {value:.4f} vs running mean {mean:.4f}")


@torch.no_grad()
def sequence_losses(
    forward: Callable[[torch.Tensor], torch.Tensor], micro: list[tuple[torch.Tensor, ...]]
) -> torch.Tensor:
    """(rows,) mean cross-entropy of each sequence of the micro-batches, from `forward`
    (inputs (B, T) -> logits (B, T, V))."""
    losses = []
    for inputs, targets in micro:
        logits = forward(inputs)  # (B, T, V)
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        losses.append(ce.view(targets.shape).mean(1))  # (B,)
    return torch.cat(losses)


def guarded_update(
    optimizer: torch.optim.Optimizer,
    found_inf: torch.Tensor | None,
    after: Callable[[torch.Tensor | None], None],
) -> None:
    """`optimizer.step()`, then `after(keep)` (the router-bias update), skipped on the
    device when `found_inf` is 1: the fused kernel reads it and leaves weights, moments
    and step counts as they were, and `keep` = 1 - found_inf cancels `after`'s change.
    Without a fused kernel, one host sync decides. found_inf None: no check."""
    if found_inf is None:
        optimizer.step()
        after(None)
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = found_inf
        optimizer.step()
        after(1 - found_inf)
    elif not found_inf.item():  # no fused kernel for these parameters: one host sync
        optimizer.step()
        after(None)


_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "inline_container.cc")


def write_error(err: BaseException, where: Path) -> OSError | None:
    """The OSError behind a failed write, or None when `err` is no write failure.

    torch hides it: `torch.distributed.checkpoint` wraps every rank's error in a
    `CheckpointException` (a BaseException, so `except Exception` misses it), and
    `torch.save` into a full disk raises `RuntimeError: [enforce fail at
    inline_container.cc] ... PytorchStreamWriter failed writing file ...` without errno.
    """
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        if isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITE_FAILED):
            full = _free_bytes(where) < (1 << 20)
            reason = os.strerror(errno.ENOSPC) if full else "a file write failed"
            return OSError(errno.ENOSPC if full else errno.EIO, reason, str(where))
        failures = getattr(e, "failures", None)  # CheckpointException: {rank: (exc, tb)}
        if isinstance(failures, dict):
            todo += [pair[0] for pair in failures.values() if isinstance(pair, tuple)]
        todo += [e.__cause__, e.__context__]
    return None


def _free_bytes(where: Path) -> int:
    """Free bytes on the filesystem of `where` (or its nearest existing parent)."""
    for folder in (where, *where.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return 1 << 62


@contextlib.contextmanager
def write_guard(where: Path, resume_dir: Path) -> Iterator[None]:
    """Turn a failed checkpoint or publication write inside (disk full: an OSError, or
    torch's wrappers of one, `write_error`) into `RunStopped`, naming `where` and the
    last complete checkpoint in `resume_dir`."""
    try:
        yield
    except BaseException as err:
        passes = (RunStopped, KeyboardInterrupt, SystemExit, GeneratorExit)
        cause = None if isinstance(err, passes) else write_error(err, where)
        if cause is None:
            raise
        raise RunStopped(write_failed(where, cause, latest_resume(resume_dir))) from err
