"""Measure sharded initialisation: meta device -> FSDP2 `parallelize` -> `materialize`.

    PYTHONPATH=. python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        benchmarks/sharded_init.py --preset pythia-1b
    PYTHONPATH=. python -m torch.distributed.run --standalone --nproc_per_node=1 \\
        benchmarks/sharded_init.py --preset pythia-1b      # world size 1: no sharding

The path is the trainer's `build_model` (`train/build.py`), spelled out so that each
step can be measured: build the preset (its own vocabulary) on the meta device, shard
it with `parallelize` and a default `TrainConfig` (fp32 on CPU) over a 1-D gloo mesh
from `train.dist.device_mesh`, then allocate and initialise it with `materialize`.

Per rank: the full model's parameter bytes, the bytes of this rank's local shards, the
resident set size before building (baseline, VmRSS), the peak RSS of the process
(`getrusage(RUSAGE_SELF).ru_maxrss`, which includes everything before the build), RSS
after materialising, and the wall time of build + parallelize + materialize. Rank 0
prints a table. The claim under test: peak per rank is about baseline + local shard +
the largest single parameter (drawn in full, one at a time, by `materialize`), never
the whole model. A model larger than RAM (pythia-12b on a 24 GiB machine) needs swap;
then resident plus swapped-out bytes (VmRSS + VmSwap, sampled every 50 ms) is the
measure of what a process holds, and the table reports it beside the RSS.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import torch
import torch.distributed as tdist
from strata.model import ModelConfig
from strata.run.config import TrainConfig
from strata.train import dist
from strata.train.build import build_model

GIB = 1024**3


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 when absent, as VmSwap may be)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def current_rss() -> int:
    """Resident set size now, in bytes (Linux /proc)."""
    return _status("VmRSS")


def footprint() -> int:
    """Resident plus swapped-out bytes now: what the process holds, wherever it lives."""
    return _status("VmRSS") + _status("VmSwap")


class PeakFootprint(threading.Thread):
    """Samples `footprint()` every 50 ms while the build runs and keeps the largest; on a
    machine with swap, the peak RSS alone would understate a model bigger than RAM."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = footprint(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, footprint())

    def finish(self) -> int:
        self.stop.set()
        self.join()
        return max(self.peak, footprint())


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def local_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def measure(preset: str, seed: int) -> dict[str, float]:
    """Build, shard and materialise `preset` on CPU; return this rank's measurements."""
    device = torch.device("cpu")
    config = ModelConfig.from_preset(preset)
    train = TrainConfig(device="cpu", seed=seed)
    dist.barrier()
    baseline = current_rss()
    sampler = PeakFootprint()
    sampler.start()
    start = time.perf_counter()
    model = build_model(config, train, device)  # the trainer's own path
    seconds = time.perf_counter() - start
    peak_footprint = sampler.finish()
    params = list(model.parameters())
    itemsize = torch.finfo(torch.float32).bits // 8
    return {
        "rank": dist.rank(),
        "n_params": sum(p.numel() for p in params),
        "full": sum(p.numel() for p in params) * itemsize,
        "largest": max(p.numel() for p in params) * itemsize,
        "local": sum(local_bytes(p) for p in params),
        "buffers": sum(local_bytes(b) for b in model.buffers()),
        "baseline": baseline,
        "peak": peak_rss(),
        "peak_footprint": peak_footprint,
        "after": current_rss(),
        "after_footprint": footprint(),
        "seconds": seconds,
        "sharded": any(hasattr(p, "to_local") for p in params),
    }


def gather(row: dict[str, float]) -> list[dict[str, float]]:
    if not tdist.is_initialized():
        return [row]
    rows: list[dict[str, float]] = [{} for _ in range(dist.world_size())]
    tdist.all_gather_object(rows, row)
    return rows


def report(preset: str, rows: list[dict[str, float]]) -> None:
    first = rows[0]
    print(
        f"{preset}: {first['n_params']:,} parameters, full fp32 {first['full'] / GIB:.2f} GiB, "
        f"largest parameter {first['largest'] / GIB:.3f} GiB, {len(rows)} process(es), "
        f"sharded: {first['sharded']}"
    )
    header = (
        "rank | local shard GiB | baseline RSS GiB | peak RSS GiB | peak RSS+swap GiB "
        "| peak - baseline GiB | RSS+swap after GiB | seconds"
    )
    print(header)
    print("|".join("---" for _ in header.split("|")))
    for r in rows:
        peak = max(r["peak"], r["peak_footprint"])
        print(
            f"{r['rank']} | {r['local'] / GIB:.2f} | {r['baseline'] / GIB:.2f} | "
            f"{r['peak'] / GIB:.2f} | {r['peak_footprint'] / GIB:.2f} | "
            f"{(peak - r['baseline']) / GIB:.2f} | {r['after_footprint'] / GIB:.2f} | "
            f"{r['seconds']:.1f}"
        )
    worst = max(max(r["peak"], r["peak_footprint"]) - r["baseline"] for r in rows)
    print(
        f"max growth over baseline {worst / GIB:.2f} GiB = "
        f"{worst / first['full']:.0%} of the full model"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="pythia-1b", choices=ModelConfig.presets())
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()
    dist.init_distributed(torch.device("cpu"))
    rows = gather(measure(a.preset, a.seed))
    if dist.is_rank0():
        report(a.preset, rows)
    dist.shutdown_distributed()


if __name__ == "__main__":
    main()
