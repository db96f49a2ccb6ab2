"""Metrics sinks: metrics.jsonl (always), wandb (when configured), a progress bar.

Only rank 0 writes. `metrics.jsonl` holds one JSON object per logged step; after a
resume from step N, records past N are dropped first so the file tells one consistent
history. MFU is model FLOPs per second over the device's peak: the peak comes from a
small table of accelerators (bf16 dense TFLOP/s) or `log.peak_tflops`; on a CPU it is
unknown and MFU is recorded as null.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from strata.run.config import LogConfig

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
