"""Mixture of experts against dense at equal active parameters: training tokens/s.

    PYTHONPATH=. python benchmarks/moe.py                       # CPU: debug-moe and a wider case
    PYTHONPATH=. python benchmarks/moe.py --device cuda --dtype bf16 --batch 16 --seq-len 1024

For each MoE shape the dense twin has the same attention and an MLP as wide as the
experts a token uses (top_k x d_ff_expert), so the two spend about the same matmul
FLOPs per token; the MoE additionally routes, sorts tokens by expert and runs the grouped
(or looped) expert matmuls. Both train alternately in one process (forward + loss +
backward + AdamW), `--steps` timed steps per round; medians over `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from strata.model import GPT, ModelConfig
from strata.model.moe import grouped_mm_supported

from benchmarks.train_step import timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SHAPES = {  # name: (preset, overrides)
    "debug-moe": ("debug-moe", {}),
    "moe-256": (
        "debug-moe",
        dict(
            d_model=256,
            n_layers=4,
            n_heads=8,
            n_kv_heads=8,
            vocab_size=4096,
            moe=dict(num_experts=8, top_k=2, d_ff_expert=512),
        ),
    ),  # fmt: skip
}


def pair(preset: str, overrides: dict, seq_len: int) -> tuple[ModelConfig, ModelConfig]:
    moe = ModelConfig.from_preset(preset, max_seq_len=max(seq_len, 256), **overrides)
    dense_ff = moe.moe.top_k * moe.moe.d_ff_expert
    dense = ModelConfig.from_dict({**moe.to_dict(), "moe": None, "d_ff": dense_ff})
    return moe, dense


def train_step(config: ModelConfig, batch: torch.Tensor, dtype: torch.dtype):
    model = GPT(config).to(batch.device)
    model.init_weights(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs, targets = batch[:, :-1], batch[:, 1:]

    def step() -> None:
        with torch.autocast(batch.device.type, dtype, enabled=dtype != torch.float32):
            loss = model(inputs, targets).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    grouped = grouped_mm_supported(dtype, torch.device(args.device))
    print(f"{args.device} {args.dtype}, {args.threads} threads, grouped matmul: {grouped}")
    for name, (preset, overrides) in SHAPES.items():
        moe_cfg, dense_cfg = pair(preset, overrides, args.seq_len)
        batch = torch.randint(0, moe_cfg.vocab_size, (args.batch, args.seq_len + 1))
        batch = batch.to(args.device)
        models = {
            k: train_step(c, batch, dtype) for k, c in (("moe", moe_cfg), ("dense", dense_cfg))
        }
        rates: dict[str, list[float]] = {k: [] for k in models}
        for _, step in models.values():
            timed(step, 1, args.device)  # warm-up
        for _ in range(args.rounds):
            for key, (_, step) in models.items():
                tokens = args.batch * args.seq_len * args.steps
                rates[key].append(tokens / timed(step, args.steps, args.device))
        m, d = (statistics.median(rates[k]) for k in ("moe", "dense"))
        moe_model = models["moe"][0]
        print(
            f"{name}: moe {m:,.0f} tok/s ({moe_model.num_params() / 1e6:.2f}M total, "
            f"{moe_model.active_params() / 1e6:.2f}M active) vs dense {d:,.0f} tok/s "
            f"({models['dense'][0].num_params() / 1e6:.2f}M): ratio {m / d:.2f}"
        )


if __name__ == "__main__":
    main()
