"""L2 norms of parameter groups, and their relative change since the previous revision.

Design choices:
- Groups come from the stable parameter names (model/transformer.py): `embed`
  (tok_embeddings), `final_norm` (norm), `lm_head` (absent when tied to the
  embedding), and per block `layers.<i>.<sub>` where <sub> is the sublayer (`attn`,
  `mlp`, or whatever a future MoE layer is called) and `norms` gathers the block's own
  norms (attn_norm, mlp_norm). Unknown top-level names form their own group.
- Each per-layer group also belongs to a *kind* (`attn`, `mlp`, `norms`, ...), and the
  kind's column aggregates every layer: the summary the plots draw. `total` is the
  whole model. A norm is the Frobenius norm of all the group's tensors together,
  sqrt(sum of squares), so aggregates are exact combinations of their parts.
- `dnorm/<g>` = ||W_N - W_prev||_2 / ||W_prev||_2 over group g, W_prev being the
  previous revision studied (None for the first one, or when shapes differ).
  Revisions are log-spaced, so this is a change per revision interval, not per step.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import torch

KINDS = ("embed", "attn", "mlp", "norms", "final_norm", "lm_head")
TOP = {"tok_embeddings": "embed", "norm": "final_norm", "lm_head": "lm_head"}
LAYER = re.compile(r"layers\.(\d+)\.([^.]+)")


def group_of(name: str) -> tuple[str, str]:
    """(group, kind) of a parameter name."""
    match = LAYER.match(name)
    if match:
        sub = "norms" if match.group(2).endswith("norm") else match.group(2)
        return f"layers.{match.group(1)}.{sub}", sub
    top = name.split(".")[0]
    return TOP.get(top, top), TOP.get(top, top)


def _order(name: str) -> tuple:
    match = LAYER.match(name)
    if match:
        return (2, int(match.group(1)), _kind_rank(name.split(".")[-1]), name)
    return (0 if name != "total" else 1, 0, _kind_rank(name), name)


def _kind_rank(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float32 CPU copies of the model's parameters (a tied matrix once)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


def _squares(params: dict, prev: dict | None) -> tuple[dict, dict, dict]:
    """Per group/kind/total: ||W||^2, ||W - W_prev||^2, ||W_prev||^2 (NaN: not comparable)."""
    norm2, delta2, prev2 = defaultdict(float), defaultdict(float), defaultdict(float)
    for name, w in params.items():
        group, kind = group_of(name)
        w = w.double()
        old = prev.get(name) if prev is not None else None
        ok = old is not None and old.shape == w.shape
        n2 = float(w.pow(2).sum())
        d2 = float((w - old.double()).pow(2).sum()) if ok else math.nan
        p2 = float(old.double().pow(2).sum()) if ok else math.nan
        for key in {group, kind, "total"}:
            norm2[key] += n2
            delta2[key] += d2
            prev2[key] += p2
    return norm2, delta2, prev2


def norm_columns(
    params: dict[str, torch.Tensor], prev: dict[str, torch.Tensor] | None
) -> dict[str, float | None]:
    """`norm/<g>` for every group, kind and total, then `dnorm/<g>` (None without prev)."""
    norm2, delta2, prev2 = _squares(params, prev)
    names = sorted(norm2, key=_order)
    row: dict[str, float | None] = {f"norm/{g}": math.sqrt(norm2[g]) for g in names}
    for g in names:
        ok = prev2[g] > 0  # False for NaN
        row[f"dnorm/{g}"] = math.sqrt(delta2[g] / prev2[g]) if ok else None
    return row
