"""Checkpoint write speed: resume checkpoints (sync and async DCP) and published
revisions, against a plain copy of the same bytes on the same disk.

    PYTHONPATH=. python benchmarks/checkpoint.py                    # llama-60m on CPU
    PYTHONPATH=. python benchmarks/checkpoint.py --preset llama-1b --device cuda --out /scratch

One process. A model and its AdamW state (one step taken, so the moments exist) are
saved `--repeat` times each way; medians are reported in seconds and GB/s of bytes on
disk. "blocked" is the time the training loop waits: all of a synchronous save; for an
async save, the staging copy inside `save()` (the write runs in a background thread and
is waited for separately). The reference is `shutil.copytree` of the written resume
checkpoint, and `shutil.copyfile` of the published weights.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from checkpoints.publish import publish_revision
from checkpoints.resume import ResumeWriter
from model import GPT, ModelConfig


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(preset: str, device: str) -> tuple[GPT, torch.optim.Optimizer]:
    model = GPT(ModelConfig.from_preset(preset)).to(device)
    model.init_weights(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return model, opt


def resume_case(root: Path, model, opt, background: bool, repeat: int) -> dict[str, float]:
    writer = ResumeWriter(root / f"resume-{background}", keep=1, background=background)
    blocked, total = [], []
    for step in range(1, repeat + 1):
        t0 = time.perf_counter()
        writer.save(step, model, opt, {"tokens": 0})
        t1 = time.perf_counter()
        writer.wait()
        blocked.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    folder = writer.resume_dir / f"step-{repeat:08d}"
    copy = statistics.median(
        timed(lambda i=i: shutil.copytree(folder, root / f"copy-{background}-{i}"))
        for i in range(repeat)
    )
    return {
        "bytes": folder_bytes(folder),
        "blocked": statistics.median(blocked),
        "total": statistics.median(total),
        "copy": copy,
    }


def publish_case(root: Path, model, repeat: int) -> dict[str, float]:
    times = [
        timed(lambda s=s: publish_revision(root / "ckpts", s, model, model.config, None, {}))
        for s in range(repeat)
    ]
    weights = root / "ckpts" / "step0" / "model.safetensors"
    copy = statistics.median(
        timed(lambda i=i: shutil.copyfile(weights, root / f"w-{i}")) for i in range(repeat)
    )
    return {"bytes": weights.stat().st_size, "total": statistics.median(times), "copy": copy}


def report(name: str, r: dict[str, float]) -> None:
    gb = r["bytes"] / 1e9
    line = f"{name:14s} {gb:6.2f} GB  {r['total']:6.2f} s ({gb / r['total']:.2f} GB/s)"
    if "blocked" in r:
        line += f", blocks training {r['blocked']:.2f} s"
    line += f"; plain copy {r['copy']:.2f} s ({gb / r['copy']:.2f} GB/s)"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-60m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="folder on the disk to measure")
    args = p.parse_args()
    model, opt = build(args.preset, args.device)
    print(f"{args.preset}: {model.num_params() / 1e6:.1f}M parameters, {args.device}")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        root = Path(tmp)
        report("resume (sync)", resume_case(root, model, opt, False, args.repeat))
        report("resume (async)", resume_case(root, model, opt, True, args.repeat))
        report("publish", publish_case(root, model, args.repeat))


if __name__ == "__main__":
    main()
