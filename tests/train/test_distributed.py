"""Two CPU processes (torchrun, gloo) train on the same global batches as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def run(nproc, dataset, out, name):
    overrides = tiny_overrides(
        dataset, out, **{"run.name": name, "train.max_steps": 8, "train.threads": 1}
    )
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "train.cli",
    ]
    cmd = launcher if nproc > 1 else [sys.executable, "-m", "train.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*cmd, "train", "configs/debug.toml", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (out / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_two_processes_match_one(tiny_dataset, tmp_path):
    one = run(1, tiny_dataset, tmp_path, "one")
    two = run(2, tiny_dataset, tmp_path, "two")
    assert [r["step"] for r in two] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), a["step"]
    manifest = json.loads((tmp_path / "two" / "checkpoints" / "manifest.json").read_text())
    assert [r["step"] for r in manifest["revisions"]] == [0, 1, 2, 4, 8]
    assert (tmp_path / "two" / "resume" / "latest").read_text().strip() == "step-00000008"
