"""MoE routing statistics, as the trainer records them in each revision's strata.json.

`strata.json["moe_routing"]` = {"layers.<i>": {"fraction": [E floats], "max_mean_ratio":
float, "entropy": float, "entropy_normalized": float}}. Nothing is recomputed: the
study copies `max_mean_ratio` and `entropy` into `moe/<layer>/...` columns and draws
each layer's expert fractions over the revisions as a heatmap. Revisions without the
key (dense models, or revisions published before routing was recorded) leave the
columns empty.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from strata.run import RevisionMeta

STATS = ("max_mean_ratio", "entropy")


def _layer_order(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)", name)
    return (int(match.group(1)) if match else -1, name)


def routing(meta: RevisionMeta | None) -> dict[str, dict[str, Any]]:
    value = (meta.moe_routing if meta else None) or {}
    if not isinstance(value, dict):
        raise ValueError(f"strata.json moe_routing: expected an object, got {type(value).__name__}")
    return {k: value[k] for k in sorted(value, key=_layer_order)}


def moe_columns(meta: RevisionMeta | None) -> dict[str, float | None]:
    """`moe/<layer>/<stat>` for each layer the revision records."""
    return {
        f"moe/{layer}/{stat}": stats.get(stat)
        for layer, stats in routing(meta).items()
        for stat in STATS
    }


def fractions(metas: list[RevisionMeta | None]) -> dict[str, np.ndarray]:
    """Per layer, an (experts, revisions) matrix of routed fractions (NaN where missing)."""
    layers: dict[str, None] = {}
    for meta in metas:
        layers |= dict.fromkeys(routing(meta))
    out = {}
    for layer in sorted(layers, key=_layer_order):
        columns = [routing(m).get(layer, {}).get("fraction") for m in metas]
        experts = max((len(c) for c in columns if c), default=0)
        if experts == 0:
            continue
        matrix = np.full((experts, len(metas)), np.nan)
        for j, col in enumerate(columns):
            if col:
                matrix[: len(col), j] = col
        out[layer] = matrix
    return out
