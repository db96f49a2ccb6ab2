"""Training-step throughput: Strata's `GPT` against `transformers`' `LlamaForCausalLM`.

    PYTHONPATH=. python benchmarks/train_step.py                      # CPU, fp32, 2 threads
    PYTHONPATH=. python benchmarks/train_step.py --preset llama-130m --device cuda \\
        --dtype bf16 --batch 16 --seq-len 1024 --compile

Both models have the same shape (the preset, Llama family) and the same weights
(Strata's initialisation, exported with `checkpoints.hf_weights`), train on the same batch
with the same fused AdamW (each side's default on torch >= 2.8), in the same process
and thread count. They run alternately, `--steps` timed steps each per round, so that
machine noise hits both alike; a step is forward + loss + backward + AdamW + zero_grad.
Each side computes its loss its own default way: Strata's lm_head fused into chunked
cross-entropy (`model.loss_chunk_size`, 1024; `--loss-chunk-size 0` for the plain loss),
transformers' `cross_entropy` on the whole logits.
Prints tokens/s per round, the medians, their ratio (Strata / transformers) and, with
a peak FLOP/s known for the device (`--peak-tflops` or the trainer's table), MFU.
A third contender, the "kernel floor", runs only the matmuls, attention kernels and
AdamW that both models run (`kernel_floor`); its tokens/s over transformers' is the
highest ratio any change outside those kernels could reach at this shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from strata.checkpoints.hf import hf_config
from strata.checkpoints.hf_weights import to_hf_state_dict
from strata.model import GPT, ModelConfig
from strata.train.metrics import peak_flops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_pair(config: ModelConfig, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(Strata GPT, transformers Llama) with identical weights, on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ours = GPT(config)
    ours.init_weights(seed=0)
    hf_dict = hf_config(config, bos_id=1, eos_id=0, pad_id=2)
    hf_dict.pop("architectures", None)
    hf_dict.pop("model_type", None)
    hf_cfg = LlamaConfig(**hf_dict)
    hf_cfg._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(hf_cfg)
    theirs.load_state_dict(to_hf_state_dict(ours.state_dict(), config), strict=False)
    return ours.to(device).train(), theirs.to(device).train()


def step_fn(model: torch.nn.Module, hf: bool, batch: torch.Tensor, dtype: torch.dtype):
    """One training step closure: forward, loss, backward, AdamW, zero_grad."""
    # fused on both sides: Strata's optimizer and transformers' default (adamw_torch_fused)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    autocast = torch.autocast(batch.device.type, dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            if hf:
                logits = model(input_ids=inputs).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), targets.flatten()
                )
            else:
                loss = model(inputs, targets).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def kernel_floor(config: ModelConfig, batch: torch.Tensor, dtype: torch.dtype):
    """A step of nothing but the work no implementation of this shape can skip: every
    linear's three matmuls (forward, input gradient, weight gradient), the attention
    kernel forward and backward, and fused AdamW over the same parameters. Any model
    running these kernels is slower than this, so transformers' time over this one's
    bounds the ratio any Strata change can reach without touching the kernels."""
    c, dev = config, batch.device
    B, T = batch.shape[0], batch.shape[1] - 1
    dq, dkv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    per_layer = [(c.d_model, dq), (c.d_model, dkv), (c.d_model, dkv), (dq, c.d_model)]
    per_layer += [(c.d_model, c.d_ff), (c.d_model, c.d_ff), (c.d_ff, c.d_model)]
    shapes = per_layer * c.n_layers + [(c.d_model, c.padded_vocab_size)]
    x = {i: torch.randn(B * T, i, device=dev, dtype=dtype) for i in {s[0] for s in shapes}}
    g = {o: torch.randn(B * T, o, device=dev, dtype=dtype) for o in {s[1] for s in shapes}}
    weights = [torch.randn(o, i, device=dev, dtype=dtype) * i**-0.5 for i, o in shapes]
    params = [torch.nn.Parameter(torch.zeros_like(w)) for w in weights]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def qkv(h: int) -> torch.Tensor:
        return torch.randn(B, h, T, c.head_dim, device=dev, dtype=dtype, requires_grad=True)

    q, k, v = qkv(c.n_heads), qkv(c.n_kv_heads), qkv(c.n_kv_heads)
    dout = torch.randn(B, c.n_heads, T, c.head_dim, device=dev, dtype=dtype)
    gqa = c.n_kv_heads != c.n_heads

    def step() -> None:
        for (i, o), w, p in zip(shapes, weights, params, strict=True):
            x[i] @ w.T  # forward (N, o)
            g[o] @ w  # input gradient (N, i)
            p.grad = g[o].T @ x[i]  # weight gradient (o, i)
        for _ in range(c.n_layers):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            torch.autograd.grad(out, (q, k, v), dout)
        opt.step()

    return step


def timed(step, n: int, device: str) -> float:
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="debug-10m", help="a Llama-family preset or debug-10m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument(
        "--loss-chunk-size", type=int, default=None,
        help="Strata's model.loss_chunk_size (default: the config's, 1024; 0 = plain loss)",
    )  # fmt: skip
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.preset == "debug-10m":  # ~10M parameters, Llama layout, vocab 4096
        config = ModelConfig(
            vocab_size=4096, d_model=384, n_layers=6, n_heads=6, n_kv_heads=6, d_ff=1024,
            max_seq_len=max(args.seq_len, 256),
        )  # fmt: skip
    else:
        config = ModelConfig.from_preset(args.preset, max_seq_len=max(args.seq_len, 256))
    if args.loss_chunk_size is not None:
        config = dataclasses.replace(config, loss_chunk_size=args.loss_chunk_size)
    if config.family != "llama":
        raise SystemExit(f"--preset {args.preset}: a Llama-family preset is needed")
    ours, theirs = build_pair(config, args.device)
    flops = GPT.flops_per_token(ours, args.seq_len)  # the same model shape on both sides
    if args.compile:
        ours, theirs = torch.compile(ours), torch.compile(theirs)
    dtype = DTYPES[args.dtype]
    batch = torch.randint(0, config.vocab_size, (args.batch, args.seq_len + 1), device=args.device)
    steps = {
        "strata": step_fn(ours, False, batch, dtype),
        "transformers": step_fn(theirs, True, batch, dtype),
        "kernel floor": kernel_floor(config, batch, dtype),
    }
    tokens = args.batch * args.seq_len * args.steps
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up (and compilation)
        timed(step, 2, args.device)
    for r in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(tokens / timed(step, args.steps, args.device))
        print(f"round {r}: " + ", ".join(f"{n} {v[-1]:,.0f} tok/s" for n, v in rates.items()))
    n_params = sum(p.numel() for p in ours.parameters())
    shape = f"batch {args.batch} x {args.seq_len}, {args.device} {args.dtype}"
    print(f"\n{args.preset}: {n_params / 1e6:.1f}M params, {shape}, {args.threads} threads")
    print(f"  Strata's loss_chunk_size: {config.loss_chunk_size}")
    median = {n: statistics.median(v) for n, v in rates.items()}
    peak = peak_flops(torch.device(args.device), args.peak_tflops)
    for name, value in median.items():
        mfu = f", MFU {flops * value / peak:.1%}" if peak and flops else ""
        print(f"  {name:13s} {value:12,.0f} tokens/s (median of {args.rounds} rounds){mfu}")
    print(f"  ratio strata / transformers: {median['strata'] / median['transformers']:.2f}")
    ceiling = median["kernel floor"] / median["transformers"]
    print(f"  the most any model running these kernels can reach: {ceiling:.2f}")


if __name__ == "__main__":
    main()
