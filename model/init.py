"""Initialisation schemes, chosen by `ModelConfig.init`; `GPT.init_weights` calls `init_parameters`.

A scheme is data: the std of "input" matrices (embedding, q/k/v, MLP up/gate, lm_head),
the std of residual output projections (`attn.wo`, `mlp.w2`), and whether the normal
is truncated. Every norm gain starts at 1 and every bias (norm or linear) at 0.

- "llama": normal(init_std); output projections init_std / sqrt(2 * n_layers) (GPT-2's
  residual scaling, which Strata always used; unchanged from before this file).
- "neox": GPT-NeoX as configured for Pythia (`init_method = small_init`,
  `output_layer_init_method = wang_init`): small_init normal(sqrt(2 / (5 d))) (Nguyen &
  Salazar, 2019) for the embedding, q/k/v, MLP up and lm_head; wang_init
  normal(2 / (n_layers * sqrt(d))) (Ben Wang's GPT-J) for the attention output and
  MLP down projections. `init_std` is not used: the stds follow from d and n_layers.
- "olmo2": OLMo-core's `InitMethod.normal`, the init of OLMo 2 (the OLMo 2 paper drops
  OLMo 1's scaled init for it): every embedding and linear weight, lm_head and output
  projections included, from a normal(init_std = 0.02) truncated at +-3 std.

Mixture-of-experts layers (model/moe.py) follow the MLP they replace: the router and
the expert gate/up matrices (`mlp.router.weight`, `mlp.experts.w1`, `.w3`, stacked
(E, d, d_ff)) are input matrices, the expert down projections (`mlp.experts.w2`) and
the shared experts' `w2` are output projections; each stacked tensor is one draw of
E * d * d_ff numbers. The routing bias buffer (balance="bias") starts at zero
(`GPT.init_weights`).

The padding rows of the embedding and lm_head (`padded_vocab_size - vocab_size` of
them) are drawn like the rest, then zeroed: no token id reaches them, the model slices
its logits to the real vocabulary, so their gradients are zero and they stay zero
through training (AdamW moves nothing with a zero gradient; weight decay keeps zero).
A published revision leaves them out (`checkpoints/hf.py`) and a load pads zeros back,
so a loaded revision equals the trained model bitwise.

Parameters are visited in `named_parameters()` order with one generator, so a seed
gives the same weights whatever the global RNG and however the model was built
(directly or on the meta device). Llama models without biases draw exactly the
numbers they drew before the other schemes existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from strata.model.config import ModelConfig
from strata.model.norms import NORM_TYPES
from torch import nn

# Residual output projections: attention, dense MLP, routed experts (stacked), shared experts.
OUTPUT_PROJECTIONS = ("attn.wo.weight", "mlp.w2.weight", "mlp.experts.w2", "mlp.shared.w2.weight")


@dataclass(frozen=True)
class InitScheme:
    std: float
    """Std of embeddings, lm_head and every non-output linear weight."""
    out_std: float
    """Std of the residual output projections (attn.wo, mlp.w2, expert and shared w2)."""
    truncated: bool
    """Draw from a normal truncated at +-3 std (nn.init.trunc_normal_)."""


def init_scheme(config: ModelConfig) -> InitScheme:
    """The stds of `config.init` for this config's width and depth."""
    d, n_layers, std = config.d_model, config.n_layers, config.init_std
    if config.init == "neox":
        return InitScheme(math.sqrt(2 / (5 * d)), 2 / (n_layers * math.sqrt(d)), False)
    if config.init == "olmo2":
        return InitScheme(std, std, True)
    return InitScheme(std, std / math.sqrt(2 * n_layers), False)


VOCAB_MATRICES = ("tok_embeddings.weight", "lm_head.weight")


@torch.no_grad()
def init_parameters(
    model: nn.Module, config: ModelConfig, generator: torch.Generator | None = None
) -> None:
    """Fill every parameter of `model` in place by `config.init` (a tied weight once)."""
    scheme = init_scheme(config)
    for name, p in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(module, NORM_TYPES) and name.endswith(".weight"):
            nn.init.ones_(p)
        elif name.endswith(".bias"):
            nn.init.zeros_(p)
        else:
            std = scheme.out_std if name.endswith(OUTPUT_PROJECTIONS) else scheme.std
            _normal(p, std, scheme.truncated, generator)
            if name in VOCAB_MATRICES:  # drawn, then zeroed: the same draws for the rest
                p[config.vocab_size :].zero_()  # the padding rows, never trained


def _normal(p: torch.Tensor, std: float, truncated: bool, gen: torch.Generator | None) -> None:
    if truncated:
        nn.init.trunc_normal_(p, mean=0.0, std=std, a=-3 * std, b=3 * std, generator=gen)
    else:
        nn.init.normal_(p, mean=0.0, std=std, generator=gen)
