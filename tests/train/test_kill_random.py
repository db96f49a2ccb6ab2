"""`kill -9` at seeded random moments, over and over, then rerun until the run completes.

One process: the debug model trains 80 steps on the tiny dataset, writing a resume
checkpoint every 2 steps and publishing on the Pythia schedule every 4, so a good part of
the training time is spent writing. Each attempt is killed with SIGKILL either during
start-up (imports, resume loading, the step-0 publication) or at a random moment shortly
after it commits its first new checkpoint, ten times; then the same command runs to the
end. After every kill, `resume/latest` names a complete checkpoint and every revision in
the manifest is complete; a rerun resumes from `latest`; at the end every published
revision is bitwise equal to an uninterrupted run's, the manifest lists each once, and
`strata verify` passes. Run with `-s` to see where each kill landed (the `.tmp` folders
it left are the writes it interrupted).

Two processes (torchrun, gloo, FSDP2): one worker is killed (rank 0 while training, then
rank 1 during start-up); torchrun tears the other down within seconds; rerunning resumes;
every revision is bitwise equal to an uninterrupted 2-process run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from strata.checkpoints.load import verify_revision
from strata.checkpoints.safe_dcp import METADATA, check_files, read_metadata_file
from strata.run import Manifest

from tests.train.runs import ENV, ROOT, train_cmd

TIMEOUT = 120.0  # seconds for any one attempt: nothing here may hang
WINDOW = 4  # steps' worth of time after an attempt's first new checkpoint: the kill window


@dataclass
class Timing:
    """Of the uninterrupted reference run: seconds to the first step, and per step after."""

    startup: float
    step: float


def victim_cmd(nproc: int, dataset: Path, out: Path, name: str, steps: int) -> list[str]:
    values = {"run.name": name, "train.max_steps": steps, "train.eval_every": 0,
              "checkpoint.every": 2, "checkpoint.keep": 2, "publish.every": 4}  # fmt: skip
    return train_cmd(nproc, dataset, out, **values)


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True
        )


def finish(cmd: list[str], log: Path) -> str:
    proc = start(cmd, log)
    try:
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    return log.read_text()


def workers(proc: subprocess.Popen) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_workers(proc: subprocess.Popen, n: int) -> list[int]:
    """torchrun's `n` worker pids, once it has started them all."""
    t0 = time.monotonic()
    while len(pids := workers(proc)) < n:
        assert proc.poll() is None and time.monotonic() - t0 < TIMEOUT, "no workers started"
        time.sleep(0.01)
    return pids


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of an attempt: torchrun's workers (by pid), then its group."""
    for pid in workers(proc):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def first_step_seen(log: Path) -> bool:
    text = log.read_text() if log.exists() else ""
    return text.startswith("step ") or "\nstep " in text


def wait_first_step(proc: subprocess.Popen, log: Path) -> float:
    """Seconds from now until the attempt logs its first training step (or ends)."""
    t0 = time.monotonic()
    while not first_step_seen(log) and proc.poll() is None:
        assert time.monotonic() - t0 < TIMEOUT, "the attempt never started training"
        time.sleep(0.01)
    return time.monotonic() - t0


def latest_step(run_dir: Path) -> int | None:
    pointer = run_dir / "resume" / "latest"
    return int(pointer.read_text().strip().split("-")[1]) if pointer.is_file() else None


def check_consistent(run_dir: Path) -> None:
    """What a kill may never leave: a `latest` or a manifest entry that is not complete."""
    step = latest_step(run_dir)
    if step is not None:
        folder = run_dir / "resume" / f"step-{step:08d}"
        assert (folder / "trainer.json").is_file(), f"latest names incomplete {folder}"
        check_files(folder, read_metadata_file(folder / METADATA))
    ckpt = run_dir / "checkpoints"
    names = [r.revision for r in Manifest.read(ckpt).revisions]
    assert len(names) == len(set(names)), names
    for name in names:
        assert not name.startswith(".") and ".tmp" not in name, name
        verify_revision(ckpt / name)  # every listed folder is complete, hashes match


def wait_new_checkpoint(proc: subprocess.Popen, run_dir: Path, before: int | None) -> None:
    """Until the attempt commits a resume checkpoint past `before` (or ends)."""
    t0 = time.monotonic()
    while latest_step(run_dir) == before and proc.poll() is None:
        assert time.monotonic() - t0 < TIMEOUT, "the attempt never wrote a checkpoint"
        time.sleep(0.005)


def wait_early(proc: subprocess.Popen, log: Path, seconds: float) -> None:
    """Until `seconds` have passed, or the attempt has trained a step (so it stays early)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and not first_step_seen(log) and proc.poll() is None:
        time.sleep(0.01)


def kill_attempt(cmd: list[str], run_dir: Path, log: Path, rng: random.Random, timing: Timing):
    """Run once and SIGKILL it (or, under torchrun, one worker) at a seeded random moment:
    during start-up (imports, resume loading, the step-0 publication) a quarter of the
    time, else within WINDOW steps' time after the attempt's first new checkpoint (so
    every such attempt makes progress). Returns what was killed, None if it ended first."""
    before = latest_step(run_dir)
    proc = start(cmd, log)
    try:
        if rng.random() < 0.25:
            wait_early(proc, log, rng.uniform(0.3, 1.0) * timing.startup)
        else:
            wait_new_checkpoint(proc, run_dir, before)
            time.sleep(rng.uniform(0.0, WINDOW * timing.step))
        if proc.poll() is not None:
            return None
        if "torch.distributed.run" not in cmd:
            os.kill(proc.pid, signal.SIGKILL)
            return "trainer"
        pids = wait_workers(proc, 2)
        victim = rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)  # torchrun notices and tears the other worker down
        return f"worker {pids.index(victim)} of {len(pids)}"
    finally:
        stop(proc)


def in_flight(run_dir: Path) -> list[str]:
    """Half-written folders a kill left behind (evidence it hit a write)."""
    found = [*(run_dir / "resume").glob("*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]
    return sorted(p.name for p in found)


def kill_until_done(cmd: list[str], run_dir: Path, kills: int, seed: int, timing: Timing):
    """`kills` SIGKILLs at seeded random moments, then one run to the end; returns its log."""
    rng, done, logs = random.Random(seed), 0, run_dir.parent / f"{run_dir.name}-logs"
    logs.mkdir()
    while done < kills:
        log = logs / f"attempt-{done}.log"
        before = latest_step(run_dir)
        killed = kill_attempt(cmd, run_dir, log, rng, timing)
        assert killed is not None, f"attempt {done} ended before its kill:\n{log.read_text()}"
        check_consistent(run_dir)
        print(f"kill {done}: {killed} at latest={latest_step(run_dir)}, left {in_flight(run_dir)}")
        text = log.read_text()
        if "resumed from" in text:  # it got that far: it resumed from the pointer it found
            assert f"at step {before}" in text, text[-2000:]
        done += 1
    saved = latest_step(run_dir)
    text = finish(cmd, logs / "final.log")
    assert saved is None or f"at step {saved}" in text, text[-2000:]
    check_consistent(run_dir)
    return text


def assert_same_revisions(reference: Path, run_dir: Path) -> None:
    """The same revisions, listed once each, with bitwise equal weights."""
    ref, got = Manifest.read(reference / "checkpoints"), Manifest.read(run_dir / "checkpoints")
    assert [r.revision for r in got.revisions] == [r.revision for r in ref.revisions]
    for entry in ref.revisions:
        a = load_file(reference / "checkpoints" / entry.revision / "model.safetensors")
        b = load_file(run_dir / "checkpoints" / entry.revision / "model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (entry.revision, key)


def reference_run(cmd: list[str], log: Path, steps: int) -> Timing:
    """Run uninterrupted; returns how long it took to start and per step."""
    proc = start(cmd, log)
    try:
        startup = wait_first_step(proc, log)
        t0 = time.monotonic()
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    return Timing(startup, (time.monotonic() - t0) / (steps - 1))


def test_random_kill9_single_process(tiny_dataset, tmp_path):
    steps = 80
    ref_cmd = victim_cmd(1, tiny_dataset, tmp_path, "ref", steps)
    timing = reference_run(ref_cmd, tmp_path / "ref.log", steps)
    run_dir = tmp_path / "victim"
    cmd = victim_cmd(1, tiny_dataset, tmp_path, "victim", steps)
    kill_until_done(cmd, run_dir, kills=10, seed=1, timing=timing)
    assert_same_revisions(tmp_path / "ref", run_dir)
    assert not [p for p in (run_dir / "resume").iterdir() if p.name.endswith(".tmp")]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    verify = subprocess.run(
        [sys.executable, "-m", "strata.cli", "verify", str(run_dir)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_random_kill9_of_one_rank(tiny_dataset, tmp_path):
    steps = 20
    ref_cmd = victim_cmd(2, tiny_dataset, tmp_path, "ref2", steps)
    timing = reference_run(ref_cmd, tmp_path / "ref2.log", steps)
    run_dir = tmp_path / "victim2"
    cmd = victim_cmd(2, tiny_dataset, tmp_path, "victim2", steps)
    kill_until_done(cmd, run_dir, kills=2, seed=7, timing=timing)  # rank 0 late, 1 early
    assert_same_revisions(tmp_path / "ref2", run_dir)  # bitwise on CPU with 2 processes too
