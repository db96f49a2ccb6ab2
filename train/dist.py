"""Process and device setup: rank, world size, device, autocast dtype, the data-parallel
device mesh, rank-0 printing.

A run without torchrun is a world of one process and takes the same code path. Gradients
are averaged by FSDP2 itself (`train/parallelize.py`), not here.
"""

from __future__ import annotations

import datetime
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
    """`train.device` -> this process's device: `auto` and `cuda` take GPU LOCAL_RANK
    (one per process under torchrun); `cuda:N` names one GPU, for one process only."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"train.device = {name!r}, but CUDA is not available here")
    if device.index is None:  # auto, cuda
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if world_size() > 1:
        raise ValueError(
            f"train.device = {name!r} with {world_size()} processes: each process needs its "
            "own GPU; use 'cuda' (GPU LOCAL_RANK) or 'auto'"
        )
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


def init_distributed(device: torch.device, timeout_s: float = 1800) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU). A collective
    that waits longer than `timeout_s` (`train.comm_timeout_s`) fails the run."""
    import torch.distributed as tdist

    if world_size() == 1 or tdist.is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend, timeout=timeout)
    global _CPU_GROUP
    _CPU_GROUP = tdist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None


_CPU_GROUP = None  # a gloo group beside NCCL, for host-side agreement


def agree_any(flag: bool) -> bool:
    """True on every process when `flag` is True on any: a max all-reduce of a CPU tensor
    over gloo, so the device queue is never waited on (every process must call it)."""
    import torch.distributed as tdist

    if not tdist.is_initialized() or world_size() == 1:
        return flag
    value = torch.tensor([float(flag)])
    tdist.all_reduce(value, op=tdist.ReduceOp.MAX, group=_CPU_GROUP)
    return bool(value.item())


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


def set_deterministic() -> None:
    """Deterministic algorithms everywhere (an error for ops that have none), and the
    cuBLAS workspace setting they need on CUDA (set before the first cuBLAS call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (a no-op in one process)."""
    import torch.distributed as tdist

    if tdist.is_initialized() and world_size() > 1:
        tdist.all_reduce(tensor)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's (n, ...) tensor along dim 0, in rank order (the same
    n on every process)."""
    import torch.distributed as tdist

    if not (tdist.is_initialized() and world_size() > 1):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    tdist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def rank0_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every process, so that all take the same branch around a
    collective (a file check, say, that could differ between nodes)."""
    import torch.distributed as tdist

    if not tdist.is_initialized() or world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    tdist.broadcast(value, src=0)
    return bool(value.item())


def device_mesh(dp_replicate: int, dp_shard: int, device: torch.device):
    """The data-parallel device mesh, or None in one process.

    1-D `(dp_shard,)` for FSDP; 2-D `(dp_replicate, dp_shard)` for HSDP, where parameters
    are sharded within a group of dp_shard processes and replicated across groups.
    """
    if dp_replicate * dp_shard == 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    if dp_replicate == 1:
        return init_device_mesh(device.type, (dp_shard,), mesh_dim_names=("dp_shard",))
    shape, names = (dp_replicate, dp_shard), ("dp_replicate", "dp_shard")
    return init_device_mesh(device.type, shape, mesh_dim_names=names)


def shutdown_distributed() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.destroy_process_group()
