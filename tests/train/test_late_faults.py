"""Late write failures on a real full filesystem (small tmpfs mounts; the tests need root
and skip themselves otherwise): a publication, background or not, into a full
`checkpoints/`, and a full `metrics.jsonl`. Each stops the run at once with one line
naming the failed write and the resume checkpoint written where there was room (exit 1);
after space is freed the rerun finishes, republishes what was missed, and every revision
and metrics record equals an uninterrupted run's (train/stops.py)."""

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from strata.checkpoints.verify import verify

from strata.cli import main
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or not shutil.which("mount"),
    reason="mounting a tmpfs needs root",
)


@contextlib.contextmanager
def tmpfs(path: Path, size: int):
    """A tmpfs of `size` bytes mounted on `path` (skips the test when mounting fails)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def args(dataset, out: Path, **extra) -> list[str]:
    extra = {"run.name": "r", "train.max_steps": 12, **extra}
    return ["train", "configs/debug.toml", *tiny_overrides(dataset, out, **extra)]


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """An uninterrupted run: its revisions' weights and its metrics records."""
    out = tmp_path_factory.mktemp("late")
    assert main(args(tiny_dataset, out)) == 0
    return out / "r"


def same_run(run: Path, reference: Path) -> None:
    assert verify(run) == []
    for folder in sorted((reference / "checkpoints").glob("step*")):
        mine = run / "checkpoints" / folder.name / "model.safetensors"
        assert mine.read_bytes() == (folder / "model.safetensors").read_bytes(), folder.name
    keys = ("step", "loss", "lr", "tokens")

    def records(r):
        return [{k: json.loads(line)[k] for k in keys} for line in (r / "metrics.jsonl").open()]

    assert records(run) == records(reference)


def stopped(command: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(command)
    assert stop.value.code == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("strata:")]
    return line


@pytest.mark.parametrize("background", ["true", "false"], ids=["async", "sync"])
def test_a_publication_into_a_full_disk_stops_at_once_with_a_checkpoint(
    tiny_dataset, tmp_path, reference, capsys, background
):
    revision = sum(f.stat().st_size for f in (reference / "checkpoints/step0").iterdir())
    command = args(tiny_dataset, tmp_path, **{"publish.async": background})
    ckpt = tmp_path / "r" / "checkpoints"
    with tmpfs(ckpt, int(revision * 3.5)):  # steps 0, 1, 2 fit; step 4 does not
        line = stopped(command, capsys)
        found = re.search(r"checkpoints/step4: writing failed \(No space left on device\) "
                          r"after step (\d+); revision step4 was not published", line)  # fmt: skip
        assert found, line
        step = int(found[1])
        assert 4 <= step < 8  # reported at once, not at the next publication
        resume = tmp_path / "r" / "resume"
        assert f"a resume checkpoint of step {step}, {resume}/step-{step:08d}." in line
        assert (resume / "latest").read_text().strip() == f"step-{step:08d}"
        assert sorted(p.name for p in ckpt.iterdir()) == ["manifest.json", "step0", "step1",
                                                          "step2"]  # fmt: skip
        resize(ckpt, 64 << 20)  # space freed: the same command finishes the run
        assert main(command) == 0
        same_run(tmp_path / "r", reference)


def test_a_full_metrics_file_stops_at_once_with_a_checkpoint(
    tiny_dataset, tmp_path, reference, capsys, monkeypatch
):
    import strata.train.metrics as metrics

    run = tmp_path / "r"
    command = args(tiny_dataset, tmp_path)
    with tmpfs(run, 4 << 20), tmpfs(run / "resume", 64 << 20), tmpfs(run / "checkpoints", 64 << 20):
        real, filler = metrics.MetricsLogger.log, run / "filler"

        def fill_at_step_5(self, record):  # the disk fills up during the run
            if record["step"] == 5 and not filler.exists():
                with open(filler, "wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            return real(self, record)

        monkeypatch.setattr(metrics.MetricsLogger, "log", fill_at_step_5)
        line = stopped(command, capsys)
        pattern = r"metrics.jsonl: writing failed \(No space left on device\) after step (\d+); "
        found = re.search(pattern + "the run stopped with a resume checkpoint", line)
        assert found, line
        step = int(found[1])
        assert 5 <= step <= 12
        assert (run / "resume/latest").read_text().strip() == f"step-{step:08d}"
        filler.unlink()
        monkeypatch.setattr(metrics.MetricsLogger, "log", real)
        assert main(command) == 0
        same_run(run, reference)  # the record of the failed step too, from the checkpoint


def test_both_disks_full_names_the_checkpoint_kept(tiny_dataset, tmp_path, reference, capsys):
    """No room on `resume/` either: the line says so and names the last complete one."""
    revision = sum(f.stat().st_size for f in (reference / "checkpoints/step0").iterdir())
    one = sum(f.stat().st_size for f in (reference / "resume/step-00000012").iterdir())
    run = tmp_path / "r"
    command = args(tiny_dataset, tmp_path, **{"checkpoint.every": 2, "publish.async": "false"})
    with tmpfs(run / "checkpoints", int(revision * 3.5)), tmpfs(run / "resume", int(one * 1.5)):
        line = stopped(command, capsys)
        # step 2's checkpoint fits, step 4's does not
        assert "checkpoints/step4: writing failed (No space left on device) after step 4" in line
        assert "the resume checkpoint of step 4 could not be written either" in line
        assert f"the last complete one, {run}/resume/step-00000002, is intact" in line
        assert (run / "resume/latest").read_text().strip() == "step-00000002"
        assert not [p for p in (run / "resume").iterdir() if p.name.endswith(".tmp")]
