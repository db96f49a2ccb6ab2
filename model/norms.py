"""Norms: RMSNorm (Zhang & Sennrich, 2019), as in Llama and OLMo 2, and LayerNorm (GPT-NeoX).

Design choices:
- RMSNorm's statistic is computed in float32 whatever the input dtype, and the result
  is cast back before the gain is applied, in the same order as Hugging Face's
  `LlamaRMSNorm`, so exported weights give the same numbers in bf16 too. (HF's
  `Olmo2RMSNorm` applies the gain before the cast: identical in fp32, one bf16
  rounding apart in bf16.)
- In fp32 (input and gain) the same function runs as `torch.nn.functional.rms_norm`, one
  fused kernel instead of five; other dtypes keep the explicit form for the cast order.
- LayerNorm is `torch.nn.LayerNorm` itself (optionally without bias), exactly what
  Hugging Face GPT-NeoX uses, so its numbers match bit for bit.
- `make_norm(config, dim)` is the one place that picks the type from the config;
  `NORM_TYPES` lets the init find every norm. Gains start at ones, biases at zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from strata.model.config import ModelConfig
from torch import nn


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps), over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., C)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused kernel
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # in x's dtype: an fp32 weight on bf16 activations would otherwise promote the
        # output to fp32 (q/k after qk_norm would then miss flash-attn)
        return (self.weight * x32.to(x.dtype)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORM_TYPES = (RMSNorm, nn.LayerNorm)


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    """The config's norm over a last dimension of size `dim`."""
    if config.norm == "layernorm":
        return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.norm_bias)
    return RMSNorm(dim, config.norm_eps)
