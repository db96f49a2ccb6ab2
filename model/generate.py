"""Sampling from a `GPT` with a key/value cache.

Design choices:
- The prompt is run once through the model (prefill), filling a `KVCache`; every new
  token then costs one single-position forward pass that attends to the cache.
- Sampling is a pure function of the last position's logits: temperature, then top-k,
  then top-p (nucleus) filtering, then a draw from a `torch.Generator`, so a seed
  reproduces a sample. Temperature 0 means greedy decoding (argmax), which matches
  `transformers`' greedy `generate`.
- Generation stops after `max_new_tokens`, at the model's `max_seq_len`, or when every
  sequence has produced `eos_id`.
- The sampling arguments are checked once, before any forward pass, by a typed
  `Sampling` (`model/typed.py`): a NaN temperature or `top_p = 0` is a one-line
  ValueError naming the argument, not a NaN probability deep inside `multinomial`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NoReturn

import torch
from strata.model.kv_cache import KVCache
from strata.model.typed import Typed, setting


@dataclass(frozen=True)
class Sampling(Typed):
    """The arguments of `generate` that choose tokens, validated on creation
    (`max_new_tokens = -1: expected an integer >= 0`)."""

    max_new_tokens: int = setting(100, ge=0, expected="an integer >= 0")
    """Tokens to add at most (0: the prompt comes back unchanged)."""
    temperature: float = setting(1.0, ge=0, expected="a finite number >= 0 (0 = greedy)")
    """Logits are divided by it before sampling; 0 is greedy decoding (argmax)."""
    top_k: int = setting(0, ge=0, expected="an integer >= 0 (0 = no top-k filter)")
    """Sample among the k most likely tokens only; 0 turns the filter off."""
    top_p: float = setting(1.0, gt=0, le=1, expected="a number in (0, 1] (1 = off)")
    """Sample within the smallest set of tokens holding this probability mass; 1 is off."""

    def fail(self, name: str, expected: str) -> NoReturn:
        """Every error of a field says what the field accepts (NaN, a bool, a float k)."""
        rules = next(f.metadata for f in dataclasses.fields(self) if f.name == name)
        super().fail(name, rules.get("expected", expected))


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / top-p nucleus to -inf. logits: (B, V)."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """Extend prompts idx (B, T) by up to max_new_tokens tokens; returns (B, T + n).

    `vocab` limits the choice to the first `vocab` token ids (a tokenizer smaller than the
    model's output, e.g. a foreign folder whose config counts padding rows). Out-of-range
    sampling arguments raise ValueError naming the argument (see `Sampling`)."""
    Sampling(max_new_tokens, temperature, top_k, top_p)
    B, T = idx.shape
    max_len = min(model.config.max_seq_len, T + max_new_tokens)
    if T >= model.config.max_seq_len:
        raise ValueError(f"prompt of {T} tokens leaves no room below max_seq_len")
    cache = KVCache.for_model(model, batch_size=B, max_len=max_len)
    logits = model(idx, cache=cache)[:, -1, :vocab]  # (B, V)
    out, done = [idx], torch.zeros(B, dtype=torch.bool, device=idx.device)
    n_new = max_len - T
    for i in range(n_new):
        nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)
            done |= nxt == eos_id
        out.append(nxt[:, None])
        if i == n_new - 1 or bool(done.all()):
            break
        logits = model(nxt[:, None], cache=cache)[:, -1, :vocab]  # (B, V)
    return torch.cat(out, dim=1)
