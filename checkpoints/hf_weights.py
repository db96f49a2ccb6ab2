"""Map our `GPT` weights to and from Hugging Face names and layouts, per family
(`checkpoints.hf.FAMILIES`): `to_hf_state_dict` and `from_hf_state_dict`.

Pure functions over dicts of tensors (no file I/O, no `transformers` import). GPT-NeoX's
fused `attention.query_key_value` rows are interleaved per head, (n_heads, 3, head_dim,
d): our separate wq/wk/wv are stacked on dim 1 to fuse and unbound to split (biases
alike). OLMoE experts are written one tensor per expert and projection, as published;
import also reads transformers 5's fused in-memory layout. A tied output matrix is
omitted on export and recreated from the embedding on import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from strata.checkpoints.hf import _EXPERTS, FAMILIES, _Family, check_hf_compatible
from strata.model import ModelConfig


def _names(config: ModelConfig, fam: _Family) -> list[tuple[tuple[str, ...], str]]:
    """(our state_dict names, HF name) for every weight; several ours = a fused q/k/v.
    `fam` is the config's `check_hf_compatible` result."""
    embed, final_norm, head = fam.top
    norm_p = ("weight", "bias") if config.norm_bias else ("weight",)
    lin_p = ("weight", "bias") if config.bias else ("weight",)
    pairs = [(("tok_embeddings.weight",), f"{embed}.weight")]
    for i in range(config.n_layers):
        ours, theirs = f"layers.{i}.", fam.layer_prefix.format(i=i)
        pairs += [((f"{ours}{o}.{p}",), f"{theirs}{t}.{p}") for o, t in fam.norms for p in norm_p]
        if fam.fused_qkv:
            for p in lin_p:
                qkv = tuple(f"{ours}attn.{w}.{p}" for w in ("wq", "wk", "wv"))
                pairs.append((qkv, f"{theirs}{fam.fused_qkv}.{p}"))
        pairs += [((f"{ours}{o}.{p}",), f"{theirs}{t}.{p}") for o, t in fam.linears for p in lin_p]
    pairs += [((f"norm.{p}",), f"{final_norm}.{p}") for p in norm_p]
    pairs.append((("lm_head.weight",), f"{head}.weight"))
    return pairs


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(H*D, ...) x 3 -> (3*H*D, ...) with rows ordered (head, q/k/v, dim) as in GPT-NeoX."""
    parts = [t.reshape(n_heads, -1, *t.shape[1:]) for t in (q, k, v)]  # (H, D, ...)
    return torch.stack(parts, dim=1).reshape(3 * q.shape[0], *q.shape[1:])  # (H, 3, D, ...)


def _split_qkv(qkv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, ...]:
    """Inverse of `_fuse_qkv`: (3*H*D, ...) -> q, k, v, each (H*D, ...), contiguous."""
    rows = qkv.shape[0] // 3
    per_head = qkv.reshape(n_heads, 3, -1, *qkv.shape[1:])  # (H, 3, D, ...)
    return tuple(t.reshape(rows, *qkv.shape[1:]).contiguous() for t in per_head.unbind(1))


def _check_keys(given: set[str], expected: set[str], where: str) -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise KeyError(f"{where}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


Plan = list[tuple[str, tuple[str, ...], Callable[..., torch.Tensor]]]


def hf_plan(config: ModelConfig, family: _Family | None = None) -> Plan:
    """Every exported tensor in file order: (HF name, our input names, the function of
    those inputs that gives it). A writer can follow it one output at a time, holding
    only that output's inputs (`checkpoints.publish` streams sharded models this way).
    `family`: the config's `check_hf_compatible` result when the caller already has it."""
    fam = family or check_hf_compatible(config)
    tied = {"lm_head.weight"} if config.tie_embeddings else set()
    plan: Plan = []
    real_rows = _RealRows(config.vocab_size)
    for ours, theirs in _names(config, fam):
        if ours[0] in tied:
            continue
        fn = functools.partial(_fuse_qkv, n_heads=config.n_heads) if len(ours) == 3 else identity
        if ours[0] in VOCAB_MATRICES and config.padded_vocab_size > config.vocab_size:
            fn = real_rows
        plan.append((theirs, ours, fn))
    for ours, theirs in _expert_layers(config):  # stacked (E, in, out) -> per expert (out, in)
        for w, proj in _EXPERTS:
            for j in range(config.moe.num_experts):
                plan.append((f"{theirs}{j}.{proj}.weight", (ours + w,), _Expert(j)))
    return plan


def identity(t: torch.Tensor) -> torch.Tensor:
    """The output that is its input unchanged (most of them)."""
    return t


VOCAB_MATRICES = ("tok_embeddings.weight", "lm_head.weight")


@dataclass(frozen=True)
class _RealRows:
    """The first `rows` rows of a padded vocabulary matrix: the real vocabulary's."""

    rows: int

    def __call__(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix[: self.rows]  # (V_padded, d) -> (V, d)


def _pad_rows(matrix: torch.Tensor, config: ModelConfig, name: str) -> torch.Tensor:
    """A vocabulary matrix of `vocab_size` rows padded with zero rows to the model's
    `padded_vocab_size` (already padded ones, as older revisions hold them, pass)."""
    rows, padded = matrix.shape[0], config.padded_vocab_size
    if rows == padded:
        return matrix
    if rows != config.vocab_size:
        raise ValueError(
            f"from_hf_state_dict: {name} has {rows} rows, expected the vocabulary size "
            f"{config.vocab_size} or its padded size {padded}"
        )
    return torch.cat([matrix, matrix.new_zeros(padded - rows, *matrix.shape[1:])])


@dataclass(frozen=True)
class _Expert:
    """Expert j of a stacked (E, in, out) weight, as HF's (out, in) matrix."""

    j: int

    def __call__(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked[self.j].T


def to_hf_state_dict(
    state_dict: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Our `GPT.state_dict()` -> the family's HF names (contiguous; output omitted when tied)."""
    fam = check_hf_compatible(config)
    plan = hf_plan(config, fam)
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    expected = {name for ours, _ in _names(config, fam) for name in ours}
    expected |= {ours + w for ours, _ in _expert_layers(config) for w, _ in _EXPERTS}
    _check_keys(set(state_dict) | optional, expected, "to_hf_state_dict")
    return {
        theirs: fn(*(state_dict[name].detach() for name in ours)).contiguous()
        for theirs, ours, fn in plan
    }


def _expert_layers(config: ModelConfig) -> list[tuple[str, str]]:
    """(our prefix, HF prefix) of each layer's experts; none unless the family has them."""
    fam = FAMILIES[config.family]
    if not fam.experts:
        return []
    return [(f"layers.{i}.mlp.experts.", f"{fam.layer_prefix.format(i=i)}mlp.experts.")
            for i in range(config.n_layers)]  # fmt: skip


def _pop(hf_sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in hf_sd:
        raise KeyError(f"from_hf_state_dict: missing keys [{name!r}]")
    return hf_sd.pop(name)


def _experts_from_hf(hf_sd: dict[str, torch.Tensor], config: ModelConfig):
    """Pops each layer's experts from hf_sd, per-expert (as published) or fused (as
    transformers 5 holds them), and returns our stacked w1, w3, w2."""
    out = {}
    for ours, theirs in _expert_layers(config):
        E, d_ff = config.moe.num_experts, config.moe.d_ff_expert
        if f"{theirs}gate_up_proj" in hf_sd:
            gate_up = _pop(hf_sd, f"{theirs}gate_up_proj")  # (E, 2 * d_ff, d)
            hf = {"w1": gate_up[:, :d_ff], "w3": gate_up[:, d_ff:],
                  "w2": _pop(hf_sd, f"{theirs}down_proj")}  # (E, d, d_ff)  # fmt: skip
        else:
            hf = {w: torch.stack([_pop(hf_sd, f"{theirs}{j}.{proj}.weight") for j in range(E)])
                  for w, proj in _EXPERTS}  # fmt: skip
        out.update({ours + w: t.transpose(1, 2).contiguous() for w, t in hf.items()})
    return out


# HF buffers that some versions keep in the state_dict; recomputed, never loaded.
_BUFFERS = re.compile(r"rotary_emb\.|\.attention\.(bias|masked_bias)$")


def from_hf_state_dict(
    hf_state_dict: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """HF weights -> a state_dict `GPT(config).load_state_dict` accepts (strict)."""
    pairs = _names(config, check_hf_compatible(config))
    hf_sd = {k: v for k, v in hf_state_dict.items() if not _BUFFERS.search(k)}
    head = pairs[-1][1]
    if head not in hf_sd and "lm_head.weight" in hf_sd:  # GPT-NeoX under transformers 5
        hf_sd[head] = hf_sd.pop("lm_head.weight")
    optional = {head} if config.tie_embeddings else set()
    out = _experts_from_hf(hf_sd, config)
    _check_keys(set(hf_sd) | optional, {theirs for _, theirs in pairs}, "from_hf_state_dict")
    for ours, theirs in pairs:
        if theirs not in hf_sd:
            continue
        parts = _split_qkv(hf_sd[theirs], config.n_heads) if len(ours) == 3 else (hf_sd[theirs],)
        if ours[0] in VOCAB_MATRICES:
            parts = (_pad_rows(parts[0], config, theirs),)
        out.update({name: t.contiguous() for name, t in zip(ours, parts, strict=True)})
    if config.tie_embeddings:
        out["lm_head.weight"] = out["tok_embeddings.weight"]
    return out
