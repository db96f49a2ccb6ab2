"""The one attention function of the model, and its backends.

Design choices:
- `attention(q, k, v, causal, segment_ids)` is the only attention kernel entry point;
  the backend is chosen inside it and nowhere else:
  * flash-attn, when the `flash_attn` package imports, q is on CUDA (compute
    capability >= 8.0), q/k/v are fp16/bf16 and head_dim <= 256 (a multiple of 8).
    Without segment ids: `flash_attn_func` on (B, T, H, D) views (a transpose in and
    out, no copy). With segment ids: `flash_attn_varlen_func` on the flattened
    (B * T, H, D) tokens with int32 `cu_seqlens` (see `segment_boundaries`).
    flash-attn handles grouped-query attention itself, so k/v go in un-repeated.
  * otherwise `torch.nn.functional.scaled_dot_product_attention` (which picks
    FlashAttention / memory-efficient kernels on GPUs and a fused kernel on CPU).
    Without segment ids: `is_causal=causal`, no mask is materialised. With segment
    ids: a boolean (B, 1, T, T) mask = same document AND (lower-triangular if causal).
- Layout at the interface is (B, H, T, D); k, v are (B, Hkv, T, D) with Hkv dividing H.
  Query head h uses kv head h // (H / Hkv) (Hugging Face `repeat_kv`, and flash-attn's
  own convention). The SDPA path repeats k/v explicitly rather than passing
  `enable_gqa=True`: not every SDPA kernel accepts GQA on every platform and torch
  version (e.g. the memory-efficient kernel on ROCm), and a kernel that does not is
  skipped silently, down to the O(T^2)-memory math kernel when a mask is given.
- Document masking is expressed at the model level as `segment_ids` (B, T), one
  integer document id per position, not as flash-attn's `cu_seqlens`: ids have a
  static shape tied to the batch, are cheap to compute from tokens alone
  (`segment_ids_from_tokens`), work for every backend (SDPA needs a mask, flash-attn
  cumulative lengths, both derived here), and keep data-dependent shapes out of the
  model. `cu_seqlens` is a flash-attn detail built inside the flash path (this needs
  one host sync for `max_seqlen`).
- A document is a maximal run of equal ids along T. Ids are normally non-decreasing
  (as `segment_ids_from_tokens` makes them); an id that reappears after a different
  one starts a new document, so both backends agree on every input.
- Rows are never merged: every row start is a document start, so a document that
  spans rows b and b + 1 is two sequences. Rows are independent training windows.
- Positions (rotary) are not reset per document; that is the caller's choice. No
  dropout; the softmax scale is 1/sqrt(head_dim).
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import torch
import torch.nn.functional as F

_HALF = (torch.float16, torch.bfloat16)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, T, D) -> (B, Hkv * n_rep, T, D), each kv head repeated n_rep times in place."""
    if n_rep == 1:
        return x
    B, Hkv, T, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, T, D).reshape(B, Hkv * n_rep, T, D)


def segment_ids_from_tokens(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Document id per position (B, T): a document includes its trailing EOS token.

    id[b, t] = number of EOS tokens in idx[b, :t] (a cumulative sum shifted right by
    one), so the token after an EOS starts the next document. Each row counts from 0.
    """
    is_eos = (idx == eos_id).long()  # (B, T)
    return is_eos.cumsum(dim=1) - is_eos


def document_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: True where a document starts, i.e. at t == 0 and wherever the id changes."""
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return starts


def segment_boundaries(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """flash-attn varlen bookkeeping for the flattened (B * T) tokens of a (B, T) batch.

    Returns (cu_seqlens, max_seqlen): cu_seqlens is int32 (n + 1,) on segment_ids'
    device, the flat start offset of each of the n sequences followed by B * T;
    max_seqlen is the longest sequence's length (a Python int, one host sync).
    A new sequence starts at every row start b * T and wherever the id changes.
    """
    B, T = segment_ids.shape
    starts = document_starts(segment_ids).flatten().nonzero().squeeze(1)  # (n,)
    total = torch.full((1,), B * T, dtype=starts.dtype, device=starts.device)
    cu_seqlens = torch.cat([starts, total]).to(torch.int32)  # (n + 1,)
    return cu_seqlens, int(cu_seqlens.diff().max())


_LAST_BOUNDARIES: list = []  # [(segment_ids, its _version, segment_boundaries(...))]


def _boundaries_of(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`segment_boundaries`, computed once per batch: every layer of a forward passes the
    same segment_ids tensor, so the host sync happens once, not once per layer."""
    last = _LAST_BOUNDARIES[0] if _LAST_BOUNDARIES else None
    if last is not None and last[0] is segment_ids and last[1] == segment_ids._version:
        return last[2]
    result = segment_boundaries(segment_ids)
    _LAST_BOUNDARIES[:] = [(segment_ids, segment_ids._version, result)]
    return result


def document_mask(segment_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, T, T) bool: query t may attend to key s (same document, and s <= t if causal)."""
    doc = document_starts(segment_ids).cumsum(dim=1)  # (B, T) run index per row
    mask = doc[:, None, :, None] == doc[:, None, None, :]  # (B, 1, T, T)
    if causal:
        T = segment_ids.size(1)
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
    return mask


@functools.cache
def _flash_module() -> ModuleType | None:
    """The `flash_attn` module, imported on first use; None when it is not installed."""
    try:
        import flash_attn
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == "flash_attn":
            return None  # not installed: the normal case off GPU clusters
        # installed but broken (built for another torch, a missing dependency): say so
        warnings.warn(f"flash_attn fails to import ({e}); using SDPA", stacklevel=2)
        return None
    return flash_attn


def _flash_eligible(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether these tensors suit flash-attn: CUDA sm80+, fp16/bf16, head_dim <= 256, % 8."""
    D = q.size(-1)
    return (
        q.is_cuda
        and q.dtype in _HALF
        and k.dtype == v.dtype == q.dtype
        and D <= 256
        and D % 8 == 0
        and torch.cuda.get_device_capability(q.device)[0] >= 8
    )


def _flash(
    fa: ModuleType,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    segment_ids: torch.Tensor | None,
) -> torch.Tensor:
    """flash-attn on (B, H, T, D) q and (B, Hkv, T, D) k, v; returns (B, H, T, D)."""
    deterministic = torch.are_deterministic_algorithms_enabled()  # flash-attn's own switch
    if segment_ids is None:
        out = fa.flash_attn_func(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            causal=causal,
            deterministic=deterministic,
        )
        return out.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
    B, H, T, D = q.shape
    cu_seqlens, max_seqlen = _boundaries_of(segment_ids.to(q.device))
    q, k, v = (x.transpose(1, 2).reshape(B * T, x.size(1), D) for x in (q, k, v))  # (B*T, h, D)
    out = fa.flash_attn_varlen_func(
        q,
        k,
        v,
        cu_seqlens,
        cu_seqlens,
        max_seqlen,
        max_seqlen,
        causal=causal,
        deterministic=deterministic,
    )  # (B*T, H, D)
    return out.view(B, T, H, D).transpose(1, 2)


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    segment_ids: torch.Tensor | None,
) -> torch.Tensor:
    """torch SDPA on (B, H, T, D) q and (B, Hkv, T, D) k, v; returns (B, H, T, D)."""
    n_rep = q.size(1) // k.size(1)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T, D)
    if segment_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    mask = document_mask(segment_ids.to(q.device), causal)  # (B, 1, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _check_shapes(
    q: torch.Tensor, k: torch.Tensor, causal: bool, segment_ids: torch.Tensor | None
) -> None:
    B, H, T, _ = q.shape
    Hkv, S = k.size(1), k.size(2)
    if H % Hkv:
        raise ValueError(f"attention: kv heads ({Hkv}) must divide query heads ({H})")
    if (causal or segment_ids is not None) and T != S:
        raise ValueError(f"attention: causal/segments need equal q/k lengths, got {T}, {S}")
    if segment_ids is not None:
        if segment_ids.shape != (B, T):
            raise ValueError(f"attention: segment_ids {tuple(segment_ids.shape)} != {(B, T)}")
        if segment_ids.is_floating_point() or segment_ids.is_complex():
            raise ValueError(f"attention: segment_ids must be integers, got {segment_ids.dtype}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with grouped-query support and document masking.

    q (B, H, T, D); k, v (B, Hkv, T, D) with Hkv dividing H (grouped-query attention);
    segment_ids (B, T) integer document ids, or None. Returns (B, H, T, D).
    With segment_ids, position t attends only to positions s of its own document
    (s with segment_ids[b, s] == segment_ids[b, t] in the same run, and s <= t when
    causal): attention never crosses a document boundary in a packed sequence.
    Without segment_ids and causal=False, k/v may have a different length S than q.
    """
    _check_shapes(q, k, causal, segment_ids)
    fa = _flash_module() if _flash_eligible(q, k, v) else None
    if fa is not None:
        return _flash(fa, q, k, v, causal, segment_ids)
    return _sdpa(q, k, v, causal, segment_ids)
