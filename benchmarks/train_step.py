"""Training-step throughput: Strata's `GPT` against `transformers`' `LlamaForCausalLM`.

    PYTHONPATH=. python benchmarks/train_step.py                      # CPU, fp32, 2 threads
    PYTHONPATH=. python benchmarks/train_step.py --preset llama-130m --device cuda \\
        --dtype bf16 --batch 16 --seq-len 1024 --compile

Both models have the same shape (the preset, Llama family) and the same weights
(Strata's initialisation, exported with `checkpoints.hf_weights`), train on the same batch
with the same fused AdamW (each side's default on torch >= 2.8), in the same process
and thread count. They run alternately, `--steps` timed steps each per round, so that
machine noise hits both alike; a step is forward + loss + backward + AdamW + zero_grad.
Prints tokens/s per round, the medians, their ratio (Strata / transformers) and, with
a peak FLOP/s known for the device (`--peak-tflops` or the trainer's table), MFU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from checkpoints.hf import hf_config
from checkpoints.hf_weights import to_hf_state_dict
from model import GPT, ModelConfig
from train.metrics import peak_flops

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
                _, loss = model(inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

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
    median = {n: statistics.median(v) for n, v in rates.items()}
    peak = peak_flops(torch.device(args.device), args.peak_tflops)
    for name, value in median.items():
        mfu = f", MFU {flops * value / peak:.1%}" if peak and flops else ""
        print(f"  {name:13s} {value:12,.0f} tokens/s (median of {args.rounds} rounds){mfu}")
    print(f"  ratio strata / transformers: {median['strata'] / median['transformers']:.2f}")


if __name__ == "__main__":
    main()
