"""`strata study RUN_A RUN_B ...`: a parent and its fork (one document excluded, one text
injected) studied alike in one report: every run's rows with a `run` column, the
differences at matched steps (zero at the fork point), the edited documents scored in
both branches, and the parent added when only the fork is given."""

import json

import pytest
from strata.run.config import load_config
from strata.run.ledger import Ledger
from strata.study.tables import read_csv
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides

KNOBS = ["--eval-windows", "4", "--mem-samples", "4", "--mem-prefix", "8", "--mem-length", "8",
         "--device", "cpu", "--quiet"]  # fmt: skip
BASE = {"publish.training_state": "true", "train.deterministic": "true"}
TEXT = "zebra quokka canary"


@pytest.fixture(scope="module")
def branches(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    named = {"run.name": "parent", **BASE}
    parent = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **named))
    Trainer(parent).fit()
    doc = int(Ledger.read(parent.run_dir / "data_ledger").rows(6)["document"][0])
    edits = {"run.name": "fork", **BASE, "data.exclude_docs": f"[{doc}]",
             "data.inject": f"[{{text = '{TEXT}', steps = [5, 6, 7]}}]"}  # fmt: skip
    fork = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **edits))
    Trainer(fork, fork_from=str(parent.run_dir / "checkpoints/step4")).fit()
    return parent.run_dir, fork.run_dir, doc


def test_a_parent_and_its_fork_side_by_side(branches, tmp_path):
    from strata.cli import main

    parent, fork, doc = branches
    assert main(["study", str(parent), str(fork), "--out", str(tmp_path), *KNOBS]) == 0
    rows = read_csv(tmp_path / "metrics.csv")
    assert list(rows[0])[0] == "run"
    assert [r["step"] for r in rows if r["run"] == "parent"] == ["0", "1", "2", "4", "8", "12"]
    assert [r["step"] for r in rows if r["run"] == "fork"] == ["4", "8", "12"]
    diffs = {r["step"]: r for r in read_csv(tmp_path / "differences.csv")}
    assert sorted(diffs) == ["12", "4", "8"] and float(diffs["4"]["d_val_loss"]) == 0.0
    assert float(diffs["12"]["d_val_loss"]) != 0.0  # the edits changed what was learned
    docs = read_csv(tmp_path / "documents.csv")
    labels = {r["document"] for r in docs}
    assert labels == {f"excluded {doc}", "injected 0"}
    by = {(r["run"], r["step"], r["document"]): r for r in docs}
    for label in labels:  # the same weights at the fork point, not after it
        assert by[("parent", "4", label)]["doc_loss"] == by[("fork", "4", label)]["doc_loss"]
        assert by[("parent", "12", label)]["doc_loss"] != by[("fork", "12", label)]["doc_loss"]
    injected = [float(by[(run, "12", "injected 0")]["doc_loss"]) for run in ("parent", "fork")]
    assert injected[1] < injected[0]  # shown three times in the fork, never in the parent
    page = (tmp_path / "report.html").read_text()
    assert "2 runs side by side" in page and "fork of step4" in page
    assert "Edited documents at every revision" in page
    names = json.loads((tmp_path / "study.json").read_text())["runs"]
    assert [r["name"] for r in names] == ["parent", "fork"]
    for png in ("compare_loss.png", "compare_memorisation.png", "differences.png",
                "documents.png"):  # fmt: skip
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fork_alone_brings_its_parent_up_to_the_fork_point(branches, tmp_path):
    from strata.study.compare import branches as runs_of

    parent, fork, _ = branches
    runs = runs_of([fork])
    assert [b.name for b in runs] == ["fork", "parent (parent)"]
    assert [r.step for r in runs[1].target.revisions] == [0, 1, 2, 4]
    assert [b.name for b in runs_of([parent, parent])] == ["parent", "parent-2"]
