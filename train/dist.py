"""Process and device setup: rank, world size, device, autocast dtype, rank-0 printing.

A run without torchrun is a world of one process and takes the same code path.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank0() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """Print from rank 0 only (the one helper for user-facing messages)."""
    if is_rank0():
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device = {name!r}, but CUDA is not available here")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for the forward pass (a no-op in fp32)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU)."""
    import torch.distributed as tdist

    if world_size() == 1 or tdist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all processes, in place (a no-op in one process)."""
    import torch.distributed as tdist

    if tdist.is_initialized() and world_size() > 1:
        tdist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def all_reduce_grads(model: torch.nn.Module) -> None:
    """Average gradients over processes with one flat all-reduce (plain data parallel).

    An interim data-parallel path for small models; FSDP2 replaces it for sharded runs.
    """
    if world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def shutdown_distributed() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.destroy_process_group()
