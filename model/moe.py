"""Mixture-of-experts feed-forward layer: token-choice top-k routing over SwiGLU experts
(OLMoE, Switch Transformer), dropless unless a capacity factor is set.

Design choices:
- Router: one bias-free linear d_model -> E. Probabilities are a softmax over all E
  experts in float32; each token takes its top-k experts and weighs their outputs by
  those probabilities (renormalised to sum to 1 with `norm_topk_probs`), exactly as
  Hugging Face's `OlmoeTopKRouter`.
- Experts are stacked parameters, one tensor per projection: `w1` (gate) and `w3` (up),
  (E, d_model, d_ff_expert), and `w2` (down, the output projection), (E, d_ff_expert,
  d_model), so `x @ w[e]` needs no transpose and FSDP2 shards them along the expert
  dimension like any other parameter. Hugging Face's per-expert `gate_proj` / `up_proj`
  / `down_proj` weights are `w[e].T` (checkpoints/hf_weights.py).
- Dispatch: the N * k token-assignments are sorted by expert (a stable sort, so every
  expert sees its tokens in token order), pushed through the experts, put back in token
  order and combined as a weighted sum over each token's k slots (a gather, no atomics:
  deterministic). Dropless, every shape is static (N * k rows): no host sync.
- Expert matmuls: one `torch._grouped_mm` per projection (offsets = cumulative counts)
  where this build supports the device and dtype (`grouped_mm_supported`: on CPU fp32
  and bf16 in eager mode, bf16 only under torch.compile, whose meta kernel wants bf16;
  on CUDA bf16: sm90 only before torch 2.9, sm80+ from 2.9, where sm90/sm100 get a fused
  kernel without host sync and other archs torch's own loop; widths 16-byte aligned),
  else a loop over experts, which reads the counts on the host (one sync, and a graph
  break under torch.compile). Both give the
  same result (tests/model/test_moe.py). Under autocast the grouped path casts inputs
  and weights to the autocast dtype itself (`_grouped_mm` is not on autocast's lists).
- capacity_factor (optional): each expert takes at most ceil(cf * N * k / E)
  assignments, first come first served in token order; a dropped assignment adds zero
  to its token's output (the token keeps its other experts, and the residual). Only
  this path has a data-dependent shape.
- Shared experts (DeepSeekMoE) are always on. n shared experts of width d_ff_expert
  are exactly one SwiGLU of width n * d_ff_expert (concatenated hidden units), which is
  how they are stored (`shared`).
- Losses, returned unweighted in `MoEAux` from forward, never stored on the module (the
  block passes them up; `GPT` applies the coefficients and averages over MoE layers):
  load balancing (Switch / OLMoE) E * sum_i f_i * P_i, with f_i the fraction of the
  N * k token-assignments routed to expert i (before capacity drops) and P_i the mean
  router probability of expert i: 1 for uniform routing. (Hugging Face's
  `load_balancing_loss_func` is top_k times this.) Router z-loss (ST-MoE): mean over
  tokens of logsumexp(router logits)^2.
- balance="bias" (DeepSeek-V3, auxiliary-loss-free): a non-trainable per-expert buffer
  `router.expert_bias` (persistent, so resume checkpoints keep it) is added to the
  probabilities for the top-k selection only; the combine weights stay the unbiased
  probabilities. After each optimizer step the trainer calls `update_bias(counts)` with
  the counts summed over micro-batches and ranks: bias += rate * sign(mean(counts) -
  counts), so overloaded experts become less likely to be picked.
- The layer never logs; `routing_stats(counts)` turns counts into plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from strata.model.config import ModelConfig
from strata.model.mlp import SwiGLU
from torch import nn
from torch.torch_version import TorchVersion

__all__ = ["MoE", "MoEAux", "Router", "Experts", "grouped_mm_supported", "routing_stats"]


@dataclass
class MoEAux:
    """What one MoE forward reports besides its output. The losses are unweighted."""

    aux_loss: torch.Tensor
    """0-dim float32 (float64 for float64 inputs), differentiable: load balancing
    E * sum_i f_i * P_i (1 when uniform)."""
    z_loss: torch.Tensor
    """0-dim, like aux_loss, differentiable: router z-loss, mean over tokens of logsumexp^2."""
    counts: torch.Tensor
    """(E,) int64, detached: token-assignments routed to each expert (before drops)."""
    probs: torch.Tensor
    """(E,) float32 or float64, detached: mean router probability of each expert."""
    dropped: torch.Tensor
    """0-dim int64, detached: assignments dropped by the capacity limit (0 if dropless)."""


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# torch 2.9 added a `_grouped_mm` fallback for every CUDA arch from sm80 (pytorch#161407)
GROUPED_MM_FALLBACK = TorchVersion(torch.__version__) >= (2, 9)


def grouped_mm_supported(dtype: torch.dtype, device: torch.device, *widths: int) -> bool:
    """Whether `torch._grouped_mm` runs (with autograd) for this dtype, device and widths."""
    if not hasattr(torch, "_grouped_mm") or dtype not in (torch.bfloat16, torch.float32):
        return False
    if any(w * dtype.itemsize % 16 for w in widths):  # 16-byte aligned strides
        return False
    if device.type == "cuda":  # get_device_properties: constant-folded by torch.compile
        major = torch.cuda.get_device_properties(device).major
        # torch < 2.9 runs it on sm90 only; later releases on sm80+ (a fused kernel on
        # sm90/sm100, elsewhere torch's own loop, which reads the sizes back like ours)
        return dtype == torch.bfloat16 and (major >= 8 if GROUPED_MM_FALLBACK else major == 9)
    if device.type == "cpu":  # the meta kernel torch.compile traces with wants bf16
        return dtype == torch.bfloat16 or not torch.compiler.is_compiling()
    return False


class Router(nn.Module):
    """Scores d_model -> E, softmax over experts, top-k (OLMoE), optional selection bias."""

    def __init__(self, d_model: int, num_experts: int, top_k: int, norm_topk_probs: bool,
                 selection_bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.top_k = top_k
        self.norm_topk_probs = norm_topk_probs
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))  # HF `mlp.gate.weight`
        bias = torch.zeros(num_experts) if selection_bias else None
        self.register_buffer("expert_bias", bias, persistent=True)  # (E,) or None
        nn.init.normal_(self.weight, std=0.02)  # GPT.init_weights redraws it by its scheme

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (N, D) -> logits, probs (N, E) at least fp32; experts, weights (N, k)."""
        logits = _upcast(F.linear(x, self.weight))  # (N, E)
        probs = logits.softmax(dim=-1)  # (N, E)
        scores = probs if self.expert_bias is None else probs + self.expert_bias  # selection only
        experts = scores.topk(self.top_k, dim=-1).indices  # (N, k)
        weights = probs.gather(-1, experts)  # (N, k)
        if self.norm_topk_probs:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, probs, experts, weights

    @torch.no_grad()
    def reset_bias(self) -> None:
        if self.expert_bias is not None:
            self.expert_bias.zero_()


class Experts(nn.Module):
    """E SwiGLU experts as stacked weights; rows arrive sorted by expert."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))  # gate
        self.w3 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))  # up
        self.w2 = nn.Parameter(torch.empty(num_experts, d_ff, d_model))  # down (output)
        self.impl = "auto"  # "auto" (grouped where supported), "grouped" or "loop"
        for w in (self.w1, self.w3, self.w2):  # GPT.init_weights redraws them by its scheme
            nn.init.normal_(w, std=0.02)

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x (M, D) sorted by expert, counts (E,) rows per expert, sum M -> (M, D)."""
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        grouped = self.impl == "grouped" or (
            self.impl == "auto"
            and grouped_mm_supported(dtype, x.device, self.w1.shape[1], self.w1.shape[2])
        )
        return self._grouped(x, counts, dtype) if grouped else self._loop(x, counts)

    def _grouped(self, x: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        offs = counts.cumsum(0).to(torch.int32)  # (E,) end row of each expert
        x = x.to(dtype)
        w1, w3, w2 = (w.to(dtype) for w in (self.w1, self.w3, self.w2))
        h = F.silu(torch._grouped_mm(x, w1, offs=offs)) * torch._grouped_mm(x, w3, offs=offs)
        return torch._grouped_mm(h, w2, offs=offs)  # (M, D)

    def _loop(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        outs = []
        for e, rows in enumerate(x.split(counts.tolist())):  # host sync: the sizes
            h = F.silu(rows @ self.w1[e]) * (rows @ self.w3[e])  # (n_e, F)
            outs.append(h @ self.w2[e])  # (n_e, D)
        return torch.cat(outs)  # (M, D)


class MoE(nn.Module):
    """Router + routed experts (+ shared experts); forward returns (output, MoEAux)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        m = config.moe
        if m is None:
            raise ValueError("MoE needs ModelConfig.moe")
        self.num_experts, self.top_k = m.num_experts, m.top_k
        self.capacity_factor, self.bias_update_rate = m.capacity_factor, m.bias_update_rate
        self.router = Router(config.d_model, m.num_experts, m.top_k, m.norm_topk_probs,
                             selection_bias=m.balance == "bias")  # fmt: skip
        self.experts = Experts(m.num_experts, config.d_model, m.d_ff_expert)
        width = m.shared_experts * m.d_ff_expert
        self.shared = SwiGLU(config.d_model, width) if m.shared_experts else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEAux]:
        B, T, D = x.shape
        flat = x.reshape(B * T, D)  # (N, D)
        logits, probs, experts, weights = self.router(flat)  # (N, E) x 2, (N, k) x 2
        counts = expert_counts(experts, self.num_experts)  # (E,)
        out, dropped = self._routed(flat, experts, weights, counts)  # (N, D)
        if self.shared is not None:
            out = out + self.shared(flat)
        aux = MoEAux(
            aux_loss=load_balancing_loss(probs, counts),
            z_loss=router_z_loss(logits),
            counts=counts.detach(),
            probs=probs.detach().mean(dim=0),
            dropped=dropped,
        )
        return out.view(B, T, D), aux

    def _routed(self, x, experts, weights, counts) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over each token's k experts of weight * expert(x); (N, D), dropped count."""
        N, k = experts.shape
        flat_experts = experts.flatten()  # (M,) M = N * k, assignment j is token j // k
        order = flat_experts.argsort(stable=True)  # (M,) assignments sorted by expert
        xs = x[order // k]  # (M, D)
        if self.capacity_factor is None:
            ys, dropped = self.experts(xs, counts), counts.new_zeros(())  # (M, D)
        else:
            capacity = math.ceil(self.capacity_factor * N * k / self.num_experts)
            kept = within_capacity(flat_experts[order], counts, capacity)  # (M,)
            ys = xs.new_zeros(xs.shape[0], self.experts.w2.shape[-1])  # (M, D)
            ys[kept] = self.experts(xs[kept], counts.clamp(max=capacity)).to(ys.dtype)
            dropped = (~kept).sum()
        ys = ys[inverse_permutation(order)].view(N, k, -1)  # (N, k, D) back in token order
        return (ys * weights.unsqueeze(-1).to(ys.dtype)).sum(dim=1), dropped

    @torch.no_grad()
    def update_bias(
        self, counts: torch.Tensor, rate: float | None = None, keep: torch.Tensor | None = None
    ) -> None:
        """balance="bias": bias += rate * sign(mean(counts) - counts); counts (E,) summed
        over micro-batches and ranks by the caller. rate defaults to moe.bias_update_rate;
        `keep`, a () tensor, scales the change (0.0 skips it without a host sync)."""
        bias = self.router.expert_bias
        if bias is None:
            raise ValueError("MoE.update_bias needs ModelConfig.moe.balance='bias'")
        load = counts.detach().to(device=bias.device, dtype=torch.float32)  # (E,)
        step = (self.bias_update_rate if rate is None else rate) * torch.sign(load.mean() - load)
        if keep is not None:
            step = step * keep
        bias += step.to(bias.dtype)


def expert_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E,) int64 number of assignments per expert, from experts (N, k); static shape."""
    flat = experts.flatten()
    return torch.zeros(num_experts, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat)
    )


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """(M,) inverse of the permutation `order`: inverse[order[j]] = j."""
    positions = torch.arange(len(order), device=order.device)
    return torch.empty_like(order).scatter_(0, order, positions)


def within_capacity(sorted_experts: torch.Tensor, counts: torch.Tensor, capacity: int):
    """(M,) bool: assignment j (sorted by expert) is among its expert's first `capacity`."""
    starts = counts.cumsum(0) - counts  # (E,) first sorted row of each expert
    rank = torch.arange(len(sorted_experts), device=counts.device) - starts[sorted_experts]
    return rank < capacity


def load_balancing_loss(probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """E * sum_i f_i * P_i: f = fraction of assignments (no grad), P = mean probs (N, E)."""
    f = counts.float() / counts.sum().clamp(min=1)  # (E,)
    return probs.shape[-1] * (f * probs.mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of logsumexp(router logits)^2; logits (N, E)."""
    return _upcast(logits).logsumexp(dim=-1).square().mean()


def routing_stats(counts: Any) -> dict[str, Any]:
    """Plain numbers from per-expert counts (E,): `fraction` (list of E floats),
    `max_mean_ratio` (max load / mean load), `entropy` of the load fractions in nats and
    `entropy_normalized` (= entropy / ln E; 1 for uniform load and for E = 1). All zero
    when the counts are all zero."""
    c = torch.as_tensor(counts).detach().to("cpu", torch.float64).flatten()  # (E,)
    E, total = c.numel(), c.sum().item()
    if total <= 0:
        return {"fraction": [0.0] * E, "max_mean_ratio": 0.0, "entropy": 0.0,
                "entropy_normalized": 0.0}  # fmt: skip
    frac = c / total
    entropy = -torch.where(frac > 0, frac * frac.log(), torch.zeros_like(frac)).sum().item()
    return {
        "fraction": frac.tolist(),
        "max_mean_ratio": (c.max() / c.mean()).item(),
        "entropy": entropy,
        "entropy_normalized": entropy / math.log(E) if E > 1 else 1.0,
    }
