"""End to end through the command line: `strata train configs/debug.toml` and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def strata(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "strata.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_debug_config_end_to_end(tiny_dataset, tmp_path):
    result = strata(
        "train",
        "configs/debug.toml",
        *tiny_overrides(tiny_dataset, tmp_path, **{"train.max_steps": 20}),
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "debug"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))
    for key in ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        assert key in records[0]
    assert records[-1]["loss"] < records[0]["loss"]
    assert (run / "config.toml").read_text().count("[train]") == 1
    assert (run / "resume" / "latest").read_text().strip() == "step-00000020"
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    manifest = json.loads((run / "checkpoints" / "manifest.json").read_text())
    assert [r["step"] for r in manifest["revisions"]] == [0, 1, 2, 4, 8, 12, 16, 20]

    again = strata(
        "train",
        "configs/debug.toml",
        *tiny_overrides(tiny_dataset, tmp_path, **{"train.max_steps": 20}),
    )
    assert again.returncode == 0 and "resumed" in again.stderr


def test_bad_key_is_one_line_error(tmp_path):
    result = strata("train", "configs/debug.toml", "train.seq_lenn=3")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "strata: error: unknown key 'train.seq_lenn'; did you mean 'seq_len'? valid: seed, "
        "seq_len, global_batch_size, micro_batch_size, max_steps,"
    )


def test_missing_dataset_is_one_line_error(tmp_path):
    result = strata(
        "train",
        "configs/debug.toml",
        f"data.dataset='{tmp_path}/none'",
        f"run.out_dir='{tmp_path}'",
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "none" in result.stderr


def test_config_without_hf_class_publishes_native_revisions(tiny_dataset, tmp_path):
    """No Hugging Face class has a Llama layout with a parallel residual: the run still
    publishes, with our own names; Strata reads it back, `export --to hf` says why not."""
    values = {"model.parallel_residual": "true", "train.max_steps": 4}
    result = strata(
        "train", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path, **values)
    )
    assert result.returncode == 0, result.stderr
    assert "Strata's own parameter names" in result.stderr and "parallel_residual" in result.stderr
    rev = tmp_path / "debug" / "checkpoints" / "step4"
    meta = json.loads((rev / "strata.json").read_text())
    assert meta["weights_format"] == "strata" and not (rev / "config.json").exists()
    out = strata("generate", str(rev), "--prompt", "def f", "--max-new-tokens", "4",
                 "--temperature", "0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    exported = strata("export", str(rev), "--to", "hf", "--out", str(tmp_path / "hf"))
    assert exported.returncode == 2 and "parallel_residual" in exported.stderr
    assert len(exported.stderr.strip().splitlines()) == 1 and not (tmp_path / "hf").exists()


def test_sigterm_exits_zero_with_a_resume_checkpoint(tiny_dataset, tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = tiny_overrides(
        tiny_dataset, tmp_path, **{"train.max_steps": 100000, "checkpoint.every": 100000}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "strata.cli", "train", "configs/debug.toml", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = tmp_path / "debug" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by signal" in err and "stopped early" in out
    step = int(err.split("stopped by signal at step ")[1].split(":")[0])
    latest = (tmp_path / "debug" / "resume" / "latest").read_text().strip()
    assert latest == f"step-{step:08d}" and step > 0


def test_launch_sh_trains_then_writes_the_study_report(tiny_dataset, tmp_path):
    """What `./launch.sh` does for the quickstart, on the tiny data: train, then study."""
    assert strata("config", "configs/debug.toml", "run.name=x", "--get", "run.dir").stdout == (
        "runs/x\n"
    )
    values = {"train.max_steps": 8, "train.threads": 1}
    result = subprocess.run(
        ["./launch.sh", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path, **values)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "STUDY": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"+ strata study {tmp_path / 'debug'}" in result.stdout
    study = tmp_path / "debug" / "study"
    rows = (study / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5  # header + revisions 0, 1, 2, 4, 8
    assert (study / "report.html").stat().st_size > 1000
