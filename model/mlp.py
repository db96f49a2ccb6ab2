"""Feed-forward blocks: SwiGLU (Shazeer, 2020) as in Llama / OLMo 2, GELU MLP as in GPT-NeoX.

Design choices:
- SwiGLU has three linears with Llama's names: `w1` (gate), `w3` (up), `w2` (down);
  out = w2(silu(w1 x) * w3 x). They map one-to-one onto Hugging Face's
  gate_proj / up_proj / down_proj.
- The GELU MLP has two: `w1` (up, GPT-NeoX `dense_h_to_4h`) and `w2` (down,
  `dense_4h_to_h`); out = w2(gelu(w1 x)) with the exact (erf) GELU, which is what
  Hugging Face's `hidden_act="gelu"` computes for Pythia.
- In both, `w2` is the residual output projection (the init scales it).
- The hidden size `d_ff` is given explicitly in the config (no 2/3 * 4d rounding
  rule hidden here), so presets state exactly what they build. `bias` adds biases
  to every linear (GPT-NeoX).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from strata.model.config import ModelConfig
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # gate
        self.w3 = nn.Linear(d_model, d_ff, bias=bias)  # up
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)  # down (output projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> hidden (B, T, d_ff) -> (B, T, C)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GeluMLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # up (dense_h_to_4h)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)  # down (dense_4h_to_h, output projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> hidden (B, T, d_ff) -> (B, T, C)
        return self.w2(F.gelu(self.w1(x)))


def make_mlp(config: ModelConfig) -> nn.Module:
    """The config's MLP."""
    cls = GeluMLP if config.mlp == "gelu" else SwiGLU
    return cls(config.d_model, config.d_ff, bias=config.bias)
