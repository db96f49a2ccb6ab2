"""`parallelize`: the one place where parallelism is applied to the (pure) model.

Applied from outside, torchtitan style, in this order, to a model built on the meta
device (nothing is allocated until the caller's `to_empty`):

1. Activation checkpointing (`train.activation_checkpointing`): `full` wraps every block
   in torch's non-reentrant `checkpoint_wrapper`; `selective` wraps every other block
   (blocks 0, 2, 4, ...), keeping roughly half the activations for half the recompute.
   The wrapper adds `_checkpoint_wrapped_module.` to parameter names, which `state_dict()`
   and `torch.distributed.checkpoint.state_dict` strip again, so checkpoints and published
   revisions keep the model's names.
2. `torch.compile` per block (`train.compile`), in place (`module.compile()`), so names do
   not change either; blocks are identical, so one compiled graph serves them all.
3. FSDP2 (`fully_shard`) on every block of `model.layers` (in an MoE block, first on its
   stacked experts, so that they are gathered as a unit of their own), then on the root, which owns
   the embedding, final norm and lm_head. A tied lm_head shares the embedding's parameter
   inside the root unit, and FSDP keeps the two modules pointing at the one parameter
   (through `to_empty` and every all-gather). Mixed precision: parameters are gathered in
   `train.param_dtype` (`auto` = the resolved `train.dtype`, so bf16 on CUDA and fp32 on
   CPU) and gradients reduced in `train.reduce_dtype`; the sharded master weights and the
   optimizer state stay in fp32. HSDP when the mesh is 2-D (`train/dist.py`).

In one process there is no mesh and step 3 is skipped: single-device runs take the same
code path with plain tensors.
"""

from __future__ import annotations

import warnings

import torch
from strata.run.config import TrainConfig
from strata.train.dist import DTYPES, pick_dtype
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def parallelize(
    model: nn.Module, cfg: TrainConfig, device: torch.device, mesh: DeviceMesh | None
) -> nn.Module:
    """Apply activation checkpointing, compile and FSDP2 to `model.layers` and the root."""
    layers = model.layers
    for i, block in enumerate(list(layers)):
        ac = cfg.activation_checkpointing
        if ac == "full" or (ac == "selective" and i % 2 == 0):
            block = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        if cfg.compile:
            block.compile()
        layers[i] = block
    if mesh is None:
        return model
    # The root returns sliced logits (a view); nothing here modifies them in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPGPT\) returned a view")
    param = pick_dtype(cfg.dtype, device) if cfg.param_dtype == "auto" else DTYPES[cfg.param_dtype]
    policy = MixedPrecisionPolicy(param_dtype=param, reduce_dtype=DTYPES[cfg.reduce_dtype])
    for block in layers:
        experts = getattr(block.mlp, "experts", None)  # an MoE block: experts are a unit too
        for unit in (experts, block) if experts is not None else (block,):
            fully_shard(
                unit, mesh=mesh, mp_policy=policy, reshard_after_forward=cfg.reshard_after_forward
            )
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=cfg.reshard_after_forward)
    return model
