"""Checkpoint write speed: resume checkpoints (sync and async DCP) and published
revisions, against a plain copy of the same bytes on the same disk.

    PYTHONPATH=. python benchmarks/checkpoint.py                    # llama-60m on CPU
    PYTHONPATH=. python benchmarks/checkpoint.py --preset llama-1b --device cuda --out /scratch
    PYTHONPATH=. python benchmarks/checkpoint.py --preset pythia-1b --only publish
    PYTHONPATH=. python benchmarks/checkpoint.py --only state          # publish.training_state
    PYTHONPATH=. python benchmarks/checkpoint.py --preset pythia-1b --only state --sync

One process. A model and its AdamW state (one step taken, so the moments exist) are
saved `--repeat` times each way; medians are reported in seconds and GB/s of bytes on
disk. "blocked" is the time the training loop waits: all of a synchronous save; for an
async save, the staging copy inside `save()` (the write runs in a background thread and
is waited for separately). Published revisions are measured both ways too: synchronous
(`publish.async = false`: gather, write, hash, rename) and in the background (the
trainer's default: training waits for the gather into CPU memory only). The reference
is `shutil.copytree` of the written resume checkpoint, and `shutil.copyfile` of the
published weights. The last line turns the blocked time of a background publication
into the step time above which it costs under 1% of training at `publish.every` steps
between saves. `--only state` measures a publication with `publish.training_state`:
the revision and the pinned resume checkpoint of its step, as the trainer writes them
(both in the background, or with `--sync` both synchronous: a model whose state and a
staging copy of it do not fit in memory), with the disk the two take per revision.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from strata.checkpoints.publish import Publisher
from strata.checkpoints.resume import ResumeWriter
from strata.model import GPT, ModelConfig


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(preset: str, device: str, optimizer: bool = True) -> tuple[GPT, Any]:
    model = GPT(ModelConfig.from_preset(preset)).to(device)
    model.init_weights(seed=0)
    if not optimizer:  # publication reads the weights only
        return model, None
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


def publish_case(root: Path, model, background: bool, repeat: int) -> dict[str, float]:
    publisher = Publisher(root / f"ckpts-{background}", background=background)
    blocked, total = [], []
    for step in range(repeat):
        t0 = time.perf_counter()
        publisher.publish(step, model, model.config, None, {})
        t1 = time.perf_counter()
        publisher.wait()
        blocked.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    publisher.close()
    weights = publisher.root / "step0" / "model.safetensors"
    copy = statistics.median(
        timed(lambda i=i: shutil.copyfile(weights, root / f"w-{background}-{i}"))
        for i in range(repeat)
    )
    size = weights.stat().st_size
    for i in range(repeat):  # large models: free the disk for the next case
        (root / f"w-{background}-{i}").unlink()
    shutil.rmtree(publisher.root)
    return {
        "bytes": size,
        "blocked": statistics.median(blocked),
        "total": statistics.median(total),
        "copy": copy,
    }


def state_case(root: Path, model, opt, background: bool, repeat: int) -> dict[str, float]:
    """A revision and its training state per step, as `publish.training_state` writes."""
    publisher = Publisher(root / "ckpts-state", background=background)
    writer = ResumeWriter(root / "resume-state", keep=1, background=background)
    blocked, total = [], []
    for step in range(repeat):
        writer.pinned.add(step)
        t0 = time.perf_counter()
        publisher.publish(step, model, model.config, None, {})
        writer.save(step, model, opt, {"tokens": 0})
        t1 = time.perf_counter()
        publisher.wait()
        writer.wait()
        blocked.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    publisher.close()
    first = (publisher.root / "step0", writer.resume_dir / "step-00000000")
    size = sum(folder_bytes(f) for f in first)
    return {"bytes": size, "blocked": statistics.median(blocked),
            "total": statistics.median(total)}  # fmt: skip


def report(name: str, r: dict[str, float]) -> None:
    gb = r["bytes"] / 1e9
    line = f"{name:14s} {gb:6.2f} GB  {r['total']:6.2f} s ({gb / r['total']:.2f} GB/s)"
    if "blocked" in r:
        line += f", blocks training {r['blocked']:.2f} s"
    if "copy" in r:
        line += f"; plain copy {r['copy']:.2f} s ({gb / r['copy']:.2f} GB/s)"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-60m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="folder on the disk to measure")
    p.add_argument("--only", choices=("all", "resume", "publish", "state"), default="all")
    p.add_argument("--sync", action="store_true", help="with --only state: no background")
    p.add_argument("--publish-every", type=int, default=1000, help="steps between saves")
    args = p.parse_args()
    model, opt = build(args.preset, args.device, optimizer=args.only != "publish")
    print(f"{args.preset}: {model.num_params() / 1e6:.1f}M parameters, {args.device}")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        root = Path(tmp)
        if args.only == "state":
            how = "sync" if args.sync else "async"
            report(f"state ({how})", state_case(root, model, opt, not args.sync, args.repeat))
        if args.only in ("all", "resume"):
            report("resume (sync)", resume_case(root, model, opt, False, args.repeat))
            report("resume (async)", resume_case(root, model, opt, True, args.repeat))
        if args.only in ("all", "publish"):
            report("publish (sync)", publish_case(root, model, False, args.repeat))
            r = publish_case(root, model, True, args.repeat)
            report("publish (async)", r)
            floor = r["blocked"] / (0.01 * args.publish_every)
            print(
                f"background publication blocks {r['blocked']:.2f} s per save: under 1% of "
                f"training every {args.publish_every} steps when a step takes over "
                f"{floor:.3f} s"
            )


if __name__ == "__main__":
    main()
