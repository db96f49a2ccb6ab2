"""Training runs in a subprocess, for the tests: the CLI in one process or under
torchrun (gloo, `--standalone`), on the tiny dataset (`tests.conftest.tiny_overrides`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


def train_cmd(nproc: int, dataset: Path, out: Path, *extra: str, **values) -> list[str]:
    """`strata train configs/debug.toml` on `nproc` processes with the tiny overrides,
    `values` (config keys, one thread each unless given) and `extra` arguments."""
    overrides = tiny_overrides(dataset, out, **{"train.threads": 1, **values})
    cli = ["-m", "strata.cli", "train", "configs/debug.toml", *overrides, *extra]
    if nproc == 1:
        return [sys.executable, *cli]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [sys.executable, *launcher, *cli]


def run_ok(cmd: list[str], timeout: float = 300) -> str:
    """Run `cmd` from the repository root; assert it exits 0; returns its stderr."""
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of `run_dir/metrics.jsonl` ([] before the first)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
