"""`strata verify --recompute` and `--replay`: planted faults that the bookkeeping alone
cannot see (swapped revisions with their hashes rewritten, weights of another seed, a
revision overwritten by a later one, a one-ulp change), each found."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from strata.checkpoints.verify import check
from strata.run.config import load_config
from strata.train.trainer import Trainer

from strata.cli import main
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = "model.safetensors"


def train(dataset, out, name, **extra):
    values = {"run.name": name, "train.deterministic": "true", "checkpoint.keep": 2, **extra}
    cfg = load_config("configs/debug.toml", tiny_overrides(dataset, out, **values))
    Trainer(cfg).fit()
    return cfg.run_dir


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """A deterministic 12-step run (revisions 0 1 2 4 8 12, resume checkpoints 8 and 12
    kept) and the same run with another seed."""
    out = tmp_path_factory.mktemp("recompute")
    return train(tiny_dataset, out, "main"), train(tiny_dataset, out, "other", **{"train.seed": 7})


@pytest.fixture
def run(runs, tmp_path):
    copy = tmp_path / "runs" / "main"
    shutil.copytree(runs[0], copy)
    return copy


def put_weights(revision, source) -> None:
    """Replace `revision`'s weights by `source`'s file and rewrite the recorded hash, so
    that the plain check finds nothing."""
    if source != revision / WEIGHTS:
        shutil.copyfile(source, revision / WEIGHTS)
    meta = json.loads((revision / "strata.json").read_text())
    meta["sha256"][WEIGHTS] = hashlib.sha256((revision / WEIGHTS).read_bytes()).hexdigest()
    (revision / "strata.json").write_text(json.dumps(meta))


def problems(run, **kw) -> set[tuple[str, str]]:
    report = check(run, progress=False, **kw)
    return {(p.kind, p.path.split("/checkpoints/")[-1].split("/")[0]) for p in report.problems}


def test_a_clean_run_recomputes_to_its_records(run):
    assert problems(run, recompute=True) == set()
    path = run / "checkpoints/step8/strata.json"
    meta = json.loads(path.read_text())
    assert meta["eval_dtype"] == "fp32" and meta["val_loss"] is not None
    path.write_text(json.dumps(meta | {"eval_dtype": "fp8"}))
    assert problems(run) == {("bad-metadata", "step8")}


def test_swapped_revisions_with_rewritten_hashes(run, tmp_path):
    ckpt = run / "checkpoints"
    shutil.copyfile(ckpt / "step4" / WEIGHTS, tmp_path / "w4")
    put_weights(ckpt / "step4", ckpt / "step8" / WEIGHTS)
    put_weights(ckpt / "step8", tmp_path / "w4")
    assert problems(run) == set()  # the bookkeeping is self-consistent
    found = problems(run, recompute=True)
    assert {("val-loss-mismatch", "step4"), ("val-loss-mismatch", "step8")} <= found
    assert ("loss-rise", "step8") in found  # step 4's weights after step 8's: worse


def test_weights_of_another_seed(run, runs):
    put_weights(run / "checkpoints/step8", runs[1] / "checkpoints/step8" / WEIGHTS)
    assert problems(run) == set()
    assert problems(run, recompute=True) == {("val-loss-mismatch", "step8")}


def test_identical_pair_blames_the_revision_that_does_not_fit(run):
    ckpt = run / "checkpoints"
    put_weights(ckpt / "step4", ckpt / "step12" / WEIGHTS)  # Pythia: an early one is wrong
    assert problems(run) == {("identical-weights", "step12")}  # the plain check: the later
    report = check(run, progress=False, recompute=True)
    same = [p for p in report.problems if p.kind == "identical-weights"]
    assert len(same) == 1 and "/step4" in same[0].path
    assert "step4 and step12 hold the same weights" in same[0].detail
    assert "step4's record does not fit" in same[0].detail


def one_ulp(revision) -> None:
    weights = load_file(revision / WEIGHTS)
    name = sorted(weights)[0]
    flat = weights[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    save_file(weights, revision / WEIGHTS, metadata={"format": "pt"})
    put_weights(revision, revision / WEIGHTS)


def test_replay_is_bitwise_and_finds_a_one_ulp_change(run, capsys):
    assert main(["verify", str(run), "--replay", "step12"]) == 0  # from resume step 8
    out = capsys.readouterr().out
    assert "replayed 4 step(s) from resume step 8: weights equal bitwise" in out
    assert main(["verify", str(run), "--replay", "step4"]) == 0  # no resume <= 4: step 0
    assert "replayed 4 step(s) from step 0 (the seed)" in capsys.readouterr().out
    one_ulp(run / "checkpoints/step12")
    assert main(["verify", str(run), "--recompute"]) == 0  # one ulp: no loss can show it
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["verify", str(run), "--replay", "step12"])
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert "PROBLEM replay-mismatch" in out and "1 tensor(s) differ beyond bitwise" in out


def test_identical_pair_without_records_is_judged_by_the_neighbours(run):
    ckpt = run / "checkpoints"
    put_weights(ckpt / "step4", ckpt / "step12" / WEIGHTS)
    for step in (4, 12):  # no recorded loss to compare with: the neighbours decide
        meta = json.loads((ckpt / f"step{step}" / "strata.json").read_text())
        meta.pop("val_loss")
        (ckpt / f"step{step}" / "strata.json").write_text(json.dumps(meta))
    report = check(run, progress=False, recompute=True)
    same = [p for p in report.problems if p.kind == "identical-weights"]
    assert len(same) == 1 and "/step4" in same[0].path  # step 2 and 8 are far from it
    assert "by its neighbours' losses, step4 is the misplaced one" in same[0].detail
