"""AdamW with the usual no-decay groups, and learning-rate schedules as pure functions.

Weight decay applies to matrices only: norms, biases and embeddings (anything 1-D, or
named like an embedding) are excluded, as in GPT-NeoX, OLMo and torchtitan. The
schedule is a pure function of the step, `lr_at(step)`, so resuming needs no scheduler
state: the trainer sets each group's learning rate before every step.
"""

from __future__ import annotations

import math

import torch
from strata.run.config import OptimConfig

FUSED_DEVICES = ("cpu", "cuda")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group (matrices) and a non-decayed group."""
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        is_embedding = "embed" in name or "tok_embeddings" in name
        (no_decay if param.ndim < 2 or is_embedding else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW, fused (one kernel per parameter group, able to skip a step on the device
    from a `found_inf` flag) when every parameter lives on CPU or CUDA."""
    groups = param_groups(model, cfg.weight_decay)
    fused = all(p.device.type in FUSED_DEVICES for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=True if fused else None,
    )


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate for the update that turns `step` into `step + 1`."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * max_steps))
        start = max_steps - decay_steps
        if step < start:
            return peak
        progress = min(1.0, (step - start + 1) / decay_steps)
        return peak + (floor - peak) * progress
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps + 1) / span)
    if cfg.schedule == "linear":
        return peak + (floor - peak) * progress
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
