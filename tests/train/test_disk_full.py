"""A full disk at start-up (the tokenizer copy), inside torch's checkpoint writer, or in
`export` / `import`: one line, the command's own temporary folder removed, everything
written before left as it was, and a rerun after space is freed succeeds."""

import errno
import os
import shutil

import pytest
import strata.checkpoints.export as export
import strata.train.build as build
import torch.distributed.checkpoint.filesystem as dcp_files
from strata.checkpoints.verify import verify

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


TORCH_SAVE_FULL = "[enforce fail at inline_container.cc:664] . unexpected pos 1088 vs 996"


@pytest.mark.parametrize(
    "error, background",
    [("oserror", "true"), ("torch.save", "false")],
    ids=["ENOSPC-wrapped-background", "inline_container-sync"],
)
def test_full_disk_inside_torch_checkpoint_writes(
    tiny_dataset, tmp_path, monkeypatch, capsys, error, background
):
    """The real failures: DCP wraps each rank's OSError in a CheckpointException (a
    BaseException), and torch.save into a full disk raises a RuntimeError from
    inline_container.cc with no errno. Step 8 is a resume and a publication step."""
    extra = {"run.name": "r", "checkpoint.async": background, "publish.async": background}
    args = ["train", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path, **extra)]
    real = dcp_files._write_item

    def write_then_fill(transforms, stream, *a, **kw):
        if "step-00000008" not in getattr(stream, "name", ""):
            return real(transforms, stream, *a, **kw)
        stream.write(b"partial")
        if error == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise RuntimeError(TORCH_SAVE_FULL)

    monkeypatch.setattr(dcp_files, "_write_item", write_then_fill)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1  # the run stopped: its fault line, exit 1
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("step ")]
    assert len(err) == 1 and err[0].startswith("strata: error:"), err  # no traceback
    assert "writing failed" in err[0]
    assert "resume/step-00000004, is intact" in err[0]
    run = tmp_path / "r"
    assert sorted(p.name for p in (run / "resume").iterdir()) == ["latest", "step-00000004"]
    assert not [p for p in run.rglob("*") if "tmp" in p.name]
    monkeypatch.setattr(dcp_files, "_write_item", real)  # space freed: the rerun finishes
    assert main(args) == 0
    assert verify(run) == []
