"""Time `model.attention_backend.attention` (forward + backward) per backend and masking.

    PYTHONPATH=. python benchmarks/attention.py                    # CPU, fp32, small shapes
    PYTHONPATH=. python benchmarks/attention.py --device cuda --dtype bf16 --seq-len 2048 --batch 8

Rows: causal without segment ids, and causal with segment ids (documents of random
lengths, mean --doc-len). On CUDA with flash-attn installed each row runs the flash
path and, forced off, the SDPA path. Prints milliseconds per call (median of --iters).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
from strata.model import attention_backend as ab

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def random_segments(batch: int, seq_len: int, doc_len: int, device: str) -> torch.Tensor:
    """(B, T) ids whose documents end with probability 1/doc_len at each position."""
    ends = torch.rand(batch, seq_len) < 1.0 / doc_len
    return ab.segment_ids_from_tokens(ends.long(), eos_id=1).to(device)


def time_call(fn, iters: int, device: str) -> float:
    """Median milliseconds of fn() after two warm-up calls."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(iters + 2):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=DTYPES)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--doc-len", type=int, default=128)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()

    torch.manual_seed(0)
    dt = DTYPES[a.dtype]
    q = torch.randn(a.batch, a.heads, a.seq_len, a.head_dim, device=a.device, dtype=dt)
    kv_shape = (a.batch, a.kv_heads, a.seq_len, a.head_dim)
    k, v = (torch.randn(kv_shape, device=a.device, dtype=dt) for _ in range(2))
    for x in (q, k, v):
        x.requires_grad_()
    seg = random_segments(a.batch, a.seq_len, a.doc_len, a.device)
    flash = ab._flash_eligible(q, k, v) and ab._flash_module() is not None
    backends = ["flash", "sdpa"] if flash else ["sdpa"]

    print(f"B={a.batch} H={a.heads} Hkv={a.kv_heads} T={a.seq_len} D={a.head_dim}", end=" ")
    print(f"{a.dtype} on {a.device}; {int(ab.segment_boundaries(seg)[0].numel()) - 1} documents")
    for backend in backends:
        for name, ids in (("causal", None), ("causal + segments", seg)):

            def step(ids=ids):
                ab.attention(q, k, v, causal=True, segment_ids=ids).sum().backward()

            with mock.patch.object(ab, "_flash_eligible", lambda *_, b=backend: b == "flash"):
                ms = time_call(step, a.iters, a.device)
            print(f"  {backend:5s}  {name:18s}  {ms:8.2f} ms  (forward + backward)")


if __name__ == "__main__":
    main()
