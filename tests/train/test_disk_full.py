"""A full disk at start-up (the tokenizer copy) or in `export` / `import`: one line, the
command's own temporary folder removed, everything written before left as it was, and a
rerun after space is freed succeeds."""

import errno
import os
import shutil

import strata.checkpoints.export as export
import strata.train.build as build

from strata.cli import main
from tests.conftest import tiny_overrides


def test_full_disk_while_copying_the_tokenizer(tiny_dataset, tmp_path, monkeypatch, capsys):
    overrides = tiny_overrides(tiny_dataset, tmp_path, **{"train.max_steps": 2, "run.name": "r"})
    args = ["train", "configs/debug.toml", *overrides]
    real = shutil.copytree

    def copy_then_fill(src, dst, *a, **kw):
        real(src, dst, *a, **kw)  # part of it landed, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(build.shutil, "copytree", copy_then_fill)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(".tokenizer.tmp: No space left on device")
    run = tmp_path / "r"
    assert not (run / ".tokenizer.tmp").exists() and not (run / "tokenizer").exists()
    monkeypatch.setattr(build.shutil, "copytree", real)  # space freed: the rerun trains
    assert main(args) == 0 and (run / "checkpoints" / "step2").is_dir()


def test_full_disk_during_export_leaves_nothing(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    overrides = tiny_overrides(tiny_dataset, out, **{"train.max_steps": 2, "run.name": "r"})
    assert main(["train", "configs/debug.toml", *overrides]) == 0
    revision = out / "r" / "checkpoints" / "step2"
    real = export.write_revision

    def write_then_fill(folder, *a, **kw):
        real(folder, *a, **kw)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))

    monkeypatch.setattr(export, "write_revision", write_then_fill)
    capsys.readouterr()
    assert main(["export", str(revision), "--to", "hf", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("model.safetensors: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no e/, no .e.tmp/
    assert main(["import", str(revision), "--out", str(tmp_path / "i")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    monkeypatch.setattr(export, "write_revision", real)
    assert main(["export", str(revision), "--to", "hf", "--out", str(tmp_path / "e")]) == 0
