"""RMSNorm (Zhang & Sennrich, 2019), as in Llama.

Design choices:
- The statistic is computed in float32 whatever the input dtype, and the result is
  cast back before the gain is applied, in the same order as Hugging Face's
  `LlamaRMSNorm`, so exported weights give the same numbers in bf16 too.
- No bias and no mean subtraction; the gain starts at ones (`reset_parameters`).
"""

from __future__ import annotations

import torch
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
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
