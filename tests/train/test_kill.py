"""Real interruptions of multi-process runs: `kill -9` of every process, and SIGTERM
through launch.sh (to launch.sh alone, or to the whole process group as SLURM does).

A 2-process run (torchrun, gloo, FSDP2) is killed with SIGKILL once its first resume
checkpoint exists; rerunning the same command with 2 processes, or with 1, finishes
with the losses and weights of an uninterrupted run and publishes each revision once.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_overrides
from tests.train.runs import ENV, ROOT, read_metrics, run_ok, train_cmd

STEPS = 24


def victim_cmd(nproc, dataset, out, name):
    return train_cmd(nproc, dataset, out, **{"run.name": name, "train.max_steps": STEPS})


def kill_all(proc, sig=signal.SIGKILL):
    """Signal torchrun's workers (torchrun starts them in sessions of their own) and
    torchrun itself."""
    subprocess.run(["pkill", f"-{int(sig)}", "-P", str(proc.pid)], check=False)
    os.killpg(proc.pid, sig)


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def killed(tiny_dataset, tmp_path_factory):
    """(folder, reference run, killed run): killed right after its first resume checkpoint."""
    out = tmp_path_factory.mktemp("kill")
    run_ok(victim_cmd(1, tiny_dataset, out, "reference"))
    victim = out / "victim"
    proc = subprocess.Popen(
        victim_cmd(2, tiny_dataset, out, "victim"),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (victim / "resume" / "latest").exists(), proc)
        kill_all(proc)
    finally:
        if proc.poll() is None:
            kill_all(proc)
        proc.wait()
    return out, out / "reference", victim


@pytest.mark.parametrize("nproc", [2, 1])
def test_kill9_then_rerun_resumes_the_same_run(killed, tiny_dataset, nproc):
    out, reference, victim = killed
    name = f"resumed-on-{nproc}"
    shutil.copytree(victim, out / name)
    latest = (out / name / "resume" / "latest").read_text().strip()
    saved = int(latest.split("-")[1])
    assert saved < STEPS and read_metrics(victim)[-1]["step"] < STEPS  # really cut short

    stderr = run_ok(victim_cmd(nproc, tiny_dataset, out, name))
    assert f"at step {saved}" in stderr
    ref, resumed = read_metrics(reference), read_metrics(out / name)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(ref[saved:], resumed[saved:], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4), a["step"]
        assert b["batch_sha256"] == a["batch_sha256"], a["step"]  # the same data
    manifest = json.loads((out / name / "checkpoints" / "manifest.json").read_text())
    expected = json.loads((reference / "checkpoints" / "manifest.json").read_text())
    assert [r["step"] for r in manifest["revisions"]] == [r["step"] for r in expected["revisions"]]
    assert not list((out / name / "checkpoints").glob(".*tmp"))  # leftovers cleared
    a = load_file(reference / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    b = load_file(out / name / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize(("nproc", "target"), [(2, "launcher"), (2, "group"), (1, "launcher")])
def test_sigterm_through_launch_sh_exits_zero_with_a_checkpoint(
    tiny_dataset, tmp_path, nproc, target
):
    values = {"run.name": "term", "train.max_steps": 400, "train.threads": 1}
    cmd = ["./launch.sh", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path, **values)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**ENV, "NPROC": str(nproc), "STUDY": "1"},  # no study after a preemption
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run_dir = tmp_path / "term"
    try:
        wait_for(lambda: len(read_metrics(run_dir)) >= 2, proc)
        if target == "launcher":
            os.kill(proc.pid, signal.SIGTERM)
        else:  # SLURM signals every process of the job step
            subprocess.run(["pkill", "-TERM", "-f", f"{tmp_path}.*run.name=term"], check=False)
            os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_all(proc)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by signal" in output and "strata study" not in output
    last = read_metrics(run_dir)[-1]["step"]
    assert last < 400
    assert (run_dir / "resume" / "latest").read_text().strip() == f"step-{last:08d}"
