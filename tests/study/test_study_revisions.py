"""Which folders `strata study` takes as revisions: only canonical `stepN` names, and never
one whose strata.json records another step than its name."""

import json
import shutil

import pytest
from strata.checkpoints.export import export_hf
from strata.run.config import load_config
from strata.run.layout import named_step, revision_step
from strata.study import study
from strata.study.discover import discover
from strata.train.trainer import Trainer

from strata.cli import main
from tests.conftest import tiny_overrides

SMALL = {"eval_windows": 4, "mem_samples": 4, "quiet": True}
CLI = ["--eval-windows", "4", "--mem-samples", "4", "--device", "cpu", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def four_steps(tiny_dataset, tmp_path_factory):
    """A 4-step debug run publishing steps 0, 1, 2, 4 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("revisions_run")
    extra = {"run.name": "r", "train.max_steps": 4, "train.eval_every": 4}
    Trainer(load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **extra))).fit()
    return out / "r"


@pytest.fixture
def run(four_steps, tmp_path):
    return shutil.copytree(four_steps, tmp_path / "r")


def test_revision_names_are_canonical():
    assert [revision_step(n) for n in ("step0", "step1", "step40")] == [0, 1, 40]
    for name in ("step01", "step00", "step", "step-1", "step+1", "step1\u0661", "Step1"):
        assert revision_step(name) is None, name
    assert named_step("step01") == 1 and named_step("step1\u0661") is None


@pytest.mark.parametrize("name, says", [("step01", 1), ("step3", 3)])
def test_a_folder_whose_name_disagrees_with_its_strata_json_is_refused(run, name, says, capsys):
    ckpt = run / "checkpoints"
    (ckpt / "step4").rename(ckpt / name)  # its strata.json says step 4
    line = f"{ckpt / name}: the folder name says step {says} but its strata.json says step 4"
    with pytest.raises(ValueError) as err:
        study(run, **SMALL)
    assert str(err.value) == line
    assert main(["study", str(run), *CLI]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"strata: error: {line}"] and captured.out == ""
    assert not (run / "study").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="the folder name says step"):
        discover(ckpt)  # the checkpoints folder itself too


def test_step01_and_step1_do_not_both_count_as_step_1(run, capsys):
    ckpt = run / "checkpoints"
    shutil.copytree(ckpt / "step1", ckpt / "step01")  # strata.json: step 1, like its name
    assert [r.name for r in discover(run).revisions] == ["step0", "step1", "step2", "step4"]
    report = study(run, **SMALL)
    log = json.loads((report.parent / "study.json").read_text())
    assert log["revisions"] == ["step0", "step1", "step2", "step4"]
    assert log["ignored"] == ["step01"]
    note = f"note: {ckpt / 'step01'}: not a revision name (stepN, no leading zeros); ignored"
    assert capsys.readouterr().err.splitlines() == [note]
    steps = [line.split(",")[1] for line in (report.parent / "metrics.csv").read_text().split()]
    assert steps[1:] == ["0", "1", "2", "4"]


def test_only_misnamed_folders_is_no_revisions(run, tmp_path):
    only = tmp_path / "only"
    shutil.copytree(run / "checkpoints" / "step1", only / "step01")
    with pytest.raises(ValueError) as err:
        discover(only)
    assert str(err.value).startswith(f"{only}: no revision folders")
    assert str(err.value).endswith("; step01: not stepN (no leading zeros)")


def test_hugging_face_folders_without_strata_json(run, tmp_path):
    hf = tmp_path / "hf"
    for name in ("step2", "step4", "step04"):
        export_hf(run / "checkpoints" / f"step{int(name[4:])}", hf / name)
        (hf / name / "strata.json").unlink()
    target = discover(hf)
    assert [(r.name, r.step, r.meta) for r in target.revisions] == [
        ("step2", 2, None),
        ("step4", 4, None),
    ]
    assert target.ignored == [hf / "step04"]


def test_a_clean_run_still_studies(run, capsys):
    assert main(["study", str(run), *CLI]) == 0
    assert capsys.readouterr().err == ""
    log = json.loads((run / "study" / "study.json").read_text())
    assert log["revisions"] == ["step0", "step1", "step2", "step4"] and log["ignored"] == []
