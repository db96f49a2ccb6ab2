"""The language-model head and loss: plain cross-entropy against the chunked, fused form.

    PYTHONPATH=. python benchmarks/loss.py                        # CPU, fp32, 2 threads
    PYTHONPATH=. python benchmarks/loss.py --device cuda --dtype bf16 --vocab 50304 \
        --positions 16384 --d-model 2048

Times forward + backward of final hidden states (N, C) -> lm_head -> loss
(`model.loss`: `loss_from_logits` on whole logits, or `chunked_loss` with
`loss_chunk_size` positions per chunk) and measures the memory it needs: each case runs
in a fresh process, and the extra peak RSS (CPU) or peak allocated memory (CUDA) over
the inputs is reported. Loss and gradients are checked against the plain form.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from strata.model.loss import chunked_loss, loss_from_logits

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def one_case(args: argparse.Namespace) -> dict:
    """Run one configuration in this process; returns seconds, extra peak memory, loss."""
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator(device=dev).manual_seed(0)
    N, C, V = args.positions, args.d_model, args.vocab
    dtype = DTYPES[args.dtype]
    hidden = torch.randn(N, C, device=dev, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(V, C, device=dev, generator=g) * C**-0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (1, N), device=dev, generator=g)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step() -> torch.Tensor:
        if args.chunk == 0:
            loss, _ = loss_from_logits((hidden @ weight.T)[None], targets, args.z_loss)
        else:
            loss, _ = chunked_loss(hidden[None], weight, targets, V, args.z_loss, args.chunk)
        loss.backward()
        return loss.detach()

    base = _memory(dev, reset=True)
    times = []
    for _ in range(args.repeat + 1):  # the first one warms up
        hidden.grad = weight.grad = None
        sync()
        start = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times[1:]),
        "extra_mib": (_memory(dev) - base) / 2**20,
        "loss": loss.item(),
        "grad_h": hidden.grad.double().norm().item(),
        "grad_w": weight.grad.double().norm().item(),
    }


def _memory(dev: torch.device, reset: bool = False) -> float:
    """Peak bytes so far: RSS on CPU, allocated memory on CUDA."""
    if dev.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(dev)
        return torch.cuda.max_memory_allocated(dev)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="hidden and weight")
    p.add_argument("--positions", type=int, default=4096, help="N = batch x sequence length")
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--z-loss", type=float, default=1e-4)
    p.add_argument("--chunks", default="0,4096,1024,256", help="0 = plain; comma-separated")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)  # one case
    args = p.parse_args()
    if args.chunk is not None:
        print(json.dumps(one_case(args)))
        return

    shape = f"N={args.positions}, d_model={args.d_model}, vocab={args.vocab}"
    print(f"{shape}, z_loss={args.z_loss}, {args.device} {args.dtype}, {args.threads} threads")
    plain = None
    for chunk in (int(c) for c in args.chunks.split(",")):
        cmd = [sys.executable, *sys.argv, "--chunk", str(chunk)]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
        plain = plain or out  # the first case is the reference
        diff = max(abs(out[k] - plain[k]) / abs(plain[k]) for k in ("loss", "grad_h", "grad_w"))
        name = "plain" if chunk == 0 else f"chunks of {chunk}"
        print(
            f"  {name:16s} {out['seconds'] * 1e3:8.1f} ms  extra peak {out['extra_mib']:7.0f} MiB"
            f"  (loss and gradient norms within {diff:.1e} of the first)"
        )


if __name__ == "__main__":
    main()
