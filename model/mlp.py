"""SwiGLU feed-forward block (Shazeer, 2020), as in Llama.

Design choices:
- Three bias-free linears with Llama's names: `w1` (gate), `w3` (up), `w2` (down);
  out = w2(silu(w1 x) * w3 x). They map one-to-one onto Hugging Face's
  gate_proj / up_proj / down_proj.
- The hidden size `d_ff` is given explicitly in the config (no 2/3 * 4d rounding
  rule hidden here), so presets state exactly what they build.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)  # gate
        self.w3 = nn.Linear(d_model, d_ff, bias=False)  # up
        self.w2 = nn.Linear(d_ff, d_model, bias=False)  # down (output projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> hidden (B, T, d_ff) -> (B, T, C)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
