"""The metrics of a run: what a log step records (`StepRecords`, from a step's
`StepResult`) and where it goes: metrics.jsonl (always), wandb (when configured), a
progress bar.

`StepRecords.build` reads the step's device values back (the one host sync of a log
step) and reduces them over processes, so every process calls it; the record holds
global values, the same whatever the number of processes (keys: docs/ARCHITECTURE.md,
"Metrics record"). Only rank 0 writes. `metrics.jsonl` holds one JSON object per logged
step; after a resume from step N, records past N are dropped first so the file tells
one consistent history. MFU is model FLOPs per second over the device's peak: the peak comes from a
small table of accelerators (bf16 dense TFLOP/s) or `log.peak_tflops`; on a CPU it is
unknown and MFU is recorded as null.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from strata.run.config import LogConfig
from strata.tokenizer import row_digests
from strata.train import dist
from strata.train.faults import GuardReading
from strata.train.moe_stats import routing

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of `device` for MFU, or None when unknown."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def mfu_of(
    flops_per_token: float, tokens_per_s: float, devices: int, peak: float | None
) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s per device over one device's peak
    (`tokens_per_s` counts all `devices`); None without a known peak."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / devices / peak


@dataclass
class StepResult:
    """What `Trainer.train_step` returns: device values (read back only at log steps),
    means over the step's micro-batches on this process."""

    loss: torch.Tensor
    """() cross-entropy alone (the model's `ModelOutput.ce`)."""
    z_loss: torch.Tensor
    """() the weighted z term."""
    moe_losses: torch.Tensor
    """(2,) the weighted MoE load-balancing loss and router z-loss (zeros when dense)."""
    moe_counts: dict[str, torch.Tensor]
    """"layers.<i>" -> (E,) assignments of the step, summed over micro-batches."""
    grad_norm: torch.Tensor
    """() the global gradient norm, before clipping."""
    data_wait: float
    """Seconds spent waiting for the batch."""


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def batch_digest(local_rows: torch.Tensor, device: torch.device) -> str:
    """`tokenizer.order.batch_digest` of a global batch from each process's rows
    (rows, seq_len + 1): rank order is global row order. A collective."""
    local = torch.from_numpy(row_digests(local_rows.numpy()))  # (rows, 32)
    rows = dist.all_gather_rows(local.to(device)).cpu()  # (global_batch, 32)
    return hashlib.sha256(rows.numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class StepRecords:
    """Builds the metrics.jsonl record of a log step; what does not change in a run."""

    tokens_per_step: int
    flops_per_token: float
    peak: float | None
    """Peak FLOP/s of one device (`peak_flops`), None when unknown."""
    device: torch.device
    z_loss: bool
    """Whether `model.z_loss > 0` (the record then has `z_loss`)."""

    def build(
        self,
        step: int,
        out: StepResult,
        elapsed: float,
        steps: int,
        lr: float,
        batch_sha256: str,
        reading: GuardReading | None,
        spikes: int,
    ) -> dict[str, Any]:
        """The record after `step` (`steps` steps in `elapsed` training seconds since the
        last one); every process calls it (reductions)."""
        world = dist.world_size()
        tokens_per_s = steps * self.tokens_per_step / max(elapsed, 1e-9)
        loss = dist.all_reduce_mean(out.loss).item()
        record = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "loss": finite_or_none(loss),
            "lr": lr,
            "grad_norm": finite_or_none(out.grad_norm.item()),
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": tokens_per_s / world,
            "mfu": mfu_of(self.flops_per_token, tokens_per_s, world, self.peak),
            "data_wait_s": out.data_wait,
            "batch_sha256": batch_sha256,  # of global batch step - 1
        }
        if reading is not None and reading.skipped_steps:
            record |= {"skipped": reading.last_skipped, "skipped_steps": reading.skipped_steps}
        if spikes:
            record["spikes"] = spikes
        if self.z_loss:
            record["z_loss"] = dist.all_reduce_mean(out.z_loss).item()
        if out.moe_counts:
            aux, z = dist.all_reduce_mean(out.moe_losses.clone()).tolist()
            record |= {"moe_aux_loss": aux, "moe_z_loss": z}
            record["moe"] = routing(out.moe_counts, reduce=True)
        if self.device.type == "cuda":
            record["memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return record


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (used when resuming); a line cut short by
    a kill or a full disk is dropped."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= last_step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


class MetricsLogger:
    """Fan one record out to JSONL, wandb and the progress bar."""

    def __init__(
        self,
        run_dir: Path,
        cfg: LogConfig,
        total_steps: int,
        start_step: int,
        run_config: dict[str, Any],
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.wandb = None
        self.bar = None
        if not enabled:
            return
        truncate_jsonl(self.path, start_step)
        self.file = open(self.path, "a")
        if cfg.wandb_project and cfg.wandb_mode != "disabled":
            self.wandb = _init_wandb(run_dir, cfg, run_config)
        if cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log(_scalars(record), step=record["step"])
        line = _format(record)
        if self.bar is not None:
            self.bar.set_postfix_str(line, refresh=False)
            self.bar.write(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        if not self.enabled:
            return
        with contextlib.suppress(OSError):  # a failed write was raised by `log` already
            self.file.close()
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _init_wandb(run_dir: Path, cfg: LogConfig, run_config: dict[str, Any]):
    try:
        import wandb
    except ImportError as err:
        raise RuntimeError("log.wandb_project is set but wandb is not installed") from err
    return wandb.init(
        project=cfg.wandb_project,
        entity=cfg.wandb_entity or None,
        mode=cfg.wandb_mode,
        dir=str(run_dir),
        name=run_dir.name,
        config=run_config,
        resume="allow",
        id=run_dir.name,
    )


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numbers and strings only, nested dicts flattened (`moe/layers.0/entropy`), for wandb."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out |= _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def _format(record: dict[str, Any]) -> str:
    parts = [f"step {record['step']}"]
    for key, fmt in (
        ("loss", ".4f"),
        ("val_loss", ".4f"),
        ("lr", ".2e"),
        ("grad_norm", ".3f"),
        ("tokens_per_s", ",.0f"),
        ("mfu", ".1%"),
    ):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]:{fmt}}")
    return " | ".join(parts)
