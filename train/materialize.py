"""Materialise a meta-device model on its device with initial weights that do not depend
on the number of processes.

`GPT.init_weights(seed)` visits the parameters in `named_parameters()` order and draws
each from one seeded generator. On a sharded model that is not enough: a random op on a
DTensor draws only the local shard, so the numbers would depend on the sharding (and on
CPU every shard would even start from the same generator state). So on a sharded model
`GPT.init_buffers()` does the non-random part (re-ties lm_head, fills the rotary tables)
and every parameter is drawn once, in the same order with the same generator, a sharded
one as a full unsharded tensor of which each process keeps its own shard. Every process draws
the same numbers, no communication is needed, and the weights are exactly those of a
one-process run on the same device type. Memory: one full parameter at a time (the
largest is the embedding), never the whole model.

The rule for each parameter (std, truncation, ones for norms, zeros for biases) is not
repeated here: `model.init.init_parameters` is called on a stand-in for the model
(`_FullParameters`) whose `named_parameters()` yields those full tensors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from strata.model import GPT
from strata.model.init import init_parameters
from torch.distributed.tensor import DTensor, distribute_tensor


class _FullParameters:
    """Duck-types the model for `init_parameters`: yields each parameter full-size and,
    once it has been filled, copies this process's shard of it into the model."""

    def __init__(self, model: GPT) -> None:
        self.model = model

    def get_submodule(self, target: str) -> torch.nn.Module:
        return self.model.get_submodule(target)

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in self.model.named_parameters():
            if not isinstance(param, DTensor):
                yield name, param
                continue
            full = torch.empty(param.shape, dtype=param.dtype, device=param.device)
            yield name, full  # init_parameters fills it before asking for the next one
            with torch.no_grad():
                mine = distribute_tensor(
                    full, param.device_mesh, param.placements, src_data_rank=None
                )
                param.to_local().copy_(mine.to_local())


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


@torch.no_grad()
def materialize(model: GPT, device: torch.device, seed: int) -> None:
    """Allocate `model` (built on the meta device, maybe sharded) on `device` and initialise
    it exactly as a one-process `GPT.init_weights(seed)` would."""
    model.to_empty(device=device)
    if not is_sharded(model):
        model.init_weights(seed=seed)
        return
    model.init_buffers()
    generator = torch.Generator(device=device).manual_seed(seed)
    init_parameters(_FullParameters(model), model.config, generator)
