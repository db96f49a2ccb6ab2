"""A folder that cannot be written (read-only, or full) ends `strata train` and `strata
study` with one line naming the path, never an OSError traceback."""

import errno
import os
import pathlib
import stat

import pytest

from strata.cli import main
from tests.conftest import tiny_overrides


def deny_writes_under(monkeypatch, root: pathlib.Path) -> None:
    """Every mkdir and file open for writing below `root` fails as on a read-only mount
    (root in a container ignores chmod, so permissions alone cannot show it)."""
    mkdir, open_ = pathlib.Path.mkdir, pathlib.Path.open

    def guarded_mkdir(self, *args, **kwargs):
        if root in self.resolve().parents or self.resolve() == root:
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    def guarded_open(self, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and root in self.resolve().parents:
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return open_(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", guarded_mkdir)
    monkeypatch.setattr(pathlib.Path, "open", guarded_open)


def test_train_into_a_read_only_folder_is_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = (tmp_path / "ro").resolve()
    out.mkdir()
    deny_writes_under(monkeypatch, out)
    args = ["train", "configs/debug.toml", *tiny_overrides(tiny_dataset, out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"strata: error: {out}")
    assert "Read-only file system" in err[0]


def test_study_of_a_read_only_run_is_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    assert main(["train", "configs/debug.toml", *tiny_overrides(tiny_dataset, out,
                 **{"train.max_steps": 2, "run.name": "r"})]) == 0  # fmt: skip
    capsys.readouterr()
    deny_writes_under(monkeypatch, (out / "r").resolve())
    assert main(["study", str(out / "r"), "--eval-windows", "2", "--mem-samples", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study" in err[0] and "Read-only file system" in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_chmod_read_only_run_folder(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["train", "configs/debug.toml", *tiny_overrides(tiny_dataset, out)]) == 2
        assert "Permission denied" in capsys.readouterr().err
    finally:
        out.chmod(stat.S_IRWXU)
