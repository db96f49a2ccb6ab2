"""Training states kept with every revision (`publish.training_state`) and forks from them
(`strata train CONFIG --from RUN/checkpoints/stepN`): a fork with no change trains the
parent's steps bit for bit (on one process and on two), a WSD anneal from the fork
step, the records of the fork, verify across the fork point, and the refusals."""

import json
import shutil

import numpy as np
import pytest
from strata.checkpoints.verify import verify
from strata.run.config import load_config
from strata.run.ledger import Ledger
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides
from tests.train.runs import read_metrics, run_ok, train_cmd

PARENT = {
    "run.name": "parent", "publish.training_state": "true", "train.deterministic": "true",
    "checkpoint.every": 5, "checkpoint.keep": 1, "train.grad_clip": 0.0,
    "optim.schedule": "'constant'",
}  # fmt: skip


def config(dataset, out, **extra):
    return load_config("configs/debug.toml", tiny_overrides(dataset, out, **(PARENT | extra)))


@pytest.fixture(scope="module")
def parent(tiny_dataset, tmp_path_factory):
    cfg = config(tiny_dataset, tmp_path_factory.mktemp("fork"))
    Trainer(cfg).fit()
    return cfg


def read_meta(run, step):
    return json.loads((run / f"checkpoints/step{step}/strata.json").read_text())


def weights(run, step):
    return (run / f"checkpoints/step{step}/model.safetensors").read_bytes()


def test_every_revision_keeps_its_training_state(parent):
    run = parent.run_dir
    kept = sorted(p.name for p in (run / "resume").iterdir() if p.is_dir())
    published = [0, 1, 2, 4, 8, 12]
    assert kept == sorted(f"step-{s:08d}" for s in [*published, 10])  # 5 pruned, keep = 1
    manifest = json.loads((run / "checkpoints/manifest.json").read_text())
    for entry in manifest["revisions"]:
        meta = json.loads((run / "checkpoints" / entry["revision"] / "strata.json").read_text())
        assert (
            meta["training_state"] == entry["training_state"] == f"resume/step-{meta['step']:08d}"
        )
    assert verify(run) == []


def test_verify_reports_a_missing_or_misnamed_state(parent, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(parent.run_dir, run, ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(run / "resume/step-00000004")
    path = run / "checkpoints/step2/strata.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"training_state": "../x"}))
    found = {(p.kind, p.path.split("/")[-1]) for p in verify(run)}
    assert ("missing-training-state", "step-00000004") in found
    assert ("bad-training-state", "strata.json") in found


def test_a_fork_without_changes_trains_the_parents_steps_bit_for_bit(parent, tiny_dataset):
    cfg = config(tiny_dataset, parent.run_dir.parent, **{"run.name": "same"})
    Trainer(cfg, fork_from=str(parent.run_dir / "checkpoints/step4")).fit()
    fork, mother = cfg.run_dir, parent.run_dir
    for step in (4, 8, 12):  # the fork point and after
        assert weights(fork, step) == weights(mother, step), step
    ours = [(r["step"], r["loss"], r["batch_sha256"]) for r in read_metrics(fork)]
    theirs = [(r["step"], r["loss"], r["batch_sha256"]) for r in read_metrics(mother)]
    assert ours == theirs[4:]
    record = json.loads((fork / "fork.json").read_text())
    assert record == {"parent_run": str(mother), "parent_revision": "step4", "step": 4,
                      "changed": {}, "order": {"weights": [1], "start_sample": 0,
                                               "offsets": []}}  # fmt: skip
    for step in (4, 8, 12):
        assert (
            json.loads((fork / f"checkpoints/step{step}/strata.json").read_text())["fork"] == record
        )
    ledger, full = Ledger.read(fork / "data_ledger"), Ledger.read(mother / "data_ledger")
    assert ledger.position(12) == full.position(12)  # steps 0 .. 11, the parent's too
    assert json.loads((fork / "data_ledger/index.json").read_text())["fork"] == record
    assert verify(fork) == []
    tampered = fork / "checkpoints/step4/strata.json"
    tampered.write_text(
        json.dumps(json.loads(tampered.read_text()) | {"fork": record | {"step": 2}})
    )
    assert "fork-mismatch" in {p.kind for p in verify(fork)}


def test_a_fork_on_two_processes_trains_the_same_weights(parent, tiny_dataset, tmp_path):
    """One process wrote the state; two continue it: each rank's one micro-batch of 2 rows
    adds the same numbers as the parent's two (no clipping), so the weights are equal."""
    values = {k: v for k, v in PARENT.items() if k != "run.name"} | {"run.name": "two"}
    source = str(parent.run_dir / "checkpoints/step4")
    run_ok(train_cmd(2, tiny_dataset, parent.run_dir.parent, "--from", source, **values))
    fork = parent.run_dir.parent / "two"
    for step in (8, 12):
        assert weights(fork, step) == weights(parent.run_dir, step), step


def test_a_wsd_fork_anneals_from_the_fork_step(parent, tiny_dataset):
    changes = {"run.name": "anneal", "optim.schedule": "'wsd'", "optim.decay_fraction": 0.5,
               "train.max_steps": 16}  # fmt: skip
    cfg = config(tiny_dataset, parent.run_dir.parent, **changes)
    Trainer(cfg, fork_from=str(parent.run_dir / "checkpoints/step8")).fit()
    assert weights(cfg.run_dir, 8) == weights(parent.run_dir, 8)
    peak = parent.optim.lr
    assert {r["lr"] for r in read_metrics(parent.run_dir)[4:]} == {peak}  # constant
    lrs = [r["lr"] for r in read_metrics(cfg.run_dir)]  # steps 9 .. 16
    assert len(lrs) == 8 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[0] < peak and lrs[-1] == pytest.approx(peak * cfg.optim.min_lr_ratio)
    changed = json.loads((cfg.run_dir / "fork.json").read_text())["changed"]
    assert changed == {"optim.decay_fraction": [parent.optim.decay_fraction, 0.5],
                       "optim.schedule": ["constant", "wsd"],
                       "train.max_steps": [12, 16]}  # fmt: skip
    assert verify(cfg.run_dir) == []


def test_a_stopped_fork_resumes_with_the_same_command(parent, tiny_dataset):
    source = str(parent.run_dir / "checkpoints/step4")
    short = config(tiny_dataset, parent.run_dir.parent, **{"run.name": "again",
                                                            "train.max_steps": 8})  # fmt: skip
    Trainer(short, fork_from=source).fit()
    record = json.loads((short.run_dir / "fork.json").read_text())
    cfg = config(tiny_dataset, parent.run_dir.parent, **{"run.name": "again"})
    Trainer(cfg, fork_from=source).fit()  # resumes at 8, runs to 12
    assert weights(cfg.run_dir, 12) == weights(parent.run_dir, 12)
    assert json.loads((cfg.run_dir / "fork.json").read_text()) == record
    assert read_meta(cfg.run_dir, 12)["fork"] == record
    assert verify(cfg.run_dir) == []


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.d_model=32", "model.d_model (64 -> 32)"),
        ("train.seq_len=16", "train.seq_len (32 -> 16)"),
        ("train.seed=5", "train.seed"),
        ("run.name=parent", "a fork needs its own run.name"),
    ],
)
def test_changes_the_state_cannot_hold_are_refused(parent, tiny_dataset, capsys, override,
                                                   named):  # fmt: skip
    from strata.cli import main

    overrides = [*tiny_overrides(tiny_dataset, parent.run_dir.parent, **PARENT), "run.name=bad"]
    source = str(parent.run_dir / "checkpoints/step4")
    capsys.readouterr()
    assert main(["train", "configs/debug.toml", *overrides, override, "--from", source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert not (parent.run_dir.parent / "bad" / "resume").exists()


def test_a_revision_without_state_cannot_be_forked(tiny_dataset, tmp_path, capsys):
    from strata.cli import main

    plain = config(tiny_dataset, tmp_path, **{"publish.training_state": "false",
                                               "train.max_steps": 2})  # fmt: skip
    Trainer(plain).fit()
    overrides = [*tiny_overrides(tiny_dataset, tmp_path, **PARENT), "run.name=f"]
    capsys.readouterr()
    source = str(plain.run_dir / "checkpoints/step2")
    assert main(["train", "configs/debug.toml", *overrides, "--from", source]) == 2
    err = capsys.readouterr().err
    assert "keeps no training state" in err and "publish.training_state = true" in err


def test_an_exclusion_fork_never_shows_the_documents_again(parent, tiny_dataset, capsys):
    mother = Ledger.read(parent.run_dir / "data_ledger")
    later = [int(d) for step in range(4, 12) for d in mother.rows(step)["document"]]
    docs = sorted(set(later))[:2]  # documents the parent trained on after step 4
    assert all(mother.rows_with(0, document=d)[:, 0].max() >= 4 for d in docs)
    cfg = config(tiny_dataset, parent.run_dir.parent,
                 **{"run.name": "without", "data.exclude_docs": str(docs)})  # fmt: skip
    Trainer(cfg, fork_from=str(parent.run_dir / "checkpoints/step4")).fit()
    ledger = Ledger.read(cfg.run_dir / "data_ledger")
    for d in docs:  # the fork's rows overlapping them: only before the fork
        assert ledger.rows_with(0, document=d)[:, 0].max(initial=-1) < 4
    changed = 0
    for step in range(4, 12):  # every other row is the parent's
        ours, theirs = ledger.rows(step), mother.rows(step)
        first, last = theirs["document"], theirs["document"] + theirs["span"]
        overlaps = np.any([(first <= d) & (d <= last) for d in docs], axis=0)  # (B,)
        assert np.array_equal(ours["window"] != theirs["window"], overlaps), step
        changed += int(overlaps.sum())
    assert changed > 0
    assert json.loads((cfg.run_dir / "fork.json").read_text())["changed"] == {
        "data.exclude_docs": [[], docs]}  # fmt: skip
    from strata.cli import main

    edited = [
        s for s in range(4, 12) if (ledger.rows(s)["window"] != mother.rows(s)["window"]).any()
    ]
    step = edited[0]
    assert main(["batch", str(cfg.run_dir), "--step", str(step), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)  # with the data present: the fork's rows
    assert [r["window"] for r in shown["rows"]] == ledger.rows(step)["window"].tolist()
    logged = {r["step"]: r["batch_sha256"] for r in read_metrics(cfg.run_dir)}
    assert shown["batch_sha256"] == logged[step + 1]
    assert verify(cfg.run_dir) == []


def test_an_injection_fork_shows_the_text_at_its_steps(parent, tiny_dataset, capsys):
    from strata.cli import main

    text = "zebra quokka canary"
    inject = f"[{{text = '{text}', steps = [5, 9]}}]"
    cfg = config(tiny_dataset, parent.run_dir.parent, **{"run.name": "with", "data.inject": inject})
    Trainer(cfg, fork_from=str(parent.run_dir / "checkpoints/step4")).fit()
    ledger = Ledger.read(cfg.run_dir / "data_ledger")
    assert [s.name for s in ledger.header.sources][-1] == "inject"
    shown = ledger.rows_with("inject", document=0)  # (step, row, window, epoch)
    assert shown.tolist() == [[5, 3, 0, 0], [9, 3, 0, 1]]  # the last row; seen once before
    mother = Ledger.read(parent.run_dir / "data_ledger")
    for step in range(4, 12):  # every other row is the parent's
        rows = slice(0, 3) if step in (5, 9) else slice(0, 4)
        assert np.array_equal(ledger.rows(step)["window"][rows], mother.rows(step)["window"][rows])
    capsys.readouterr()
    assert main(["batch", str(cfg.run_dir), "--step", "5", "--source", "inject"]) == 0
    assert text in capsys.readouterr().out  # decoded from the config's injection
    logged = {r["step"]: r["batch_sha256"] for r in read_metrics(cfg.run_dir)}
    assert main(["batch", str(cfg.run_dir), "--step", "5", "--source", "inject",
                 "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["batch_sha256"] == logged[6]
    assert verify(cfg.run_dir) == []


def test_a_fork_with_other_weights_follows_them_from_the_fork_step(tiny_dataset, tmp_path):
    def sources(a, b):
        return (f"[{{dataset = '{tiny_dataset}', weight = {a}, name = 'a'}}, "
                f"{{dataset = '{tiny_dataset}', weight = {b}, name = 'b'}}]")  # fmt: skip

    first = config(tiny_dataset, tmp_path, **{"data.sources": sources(0.75, 0.25)})
    Trainer(first).fit()
    cfg = config(
        tiny_dataset, tmp_path, **{"run.name": "b-heavy", "data.sources": sources(0.25, 0.75)}
    )
    Trainer(cfg, fork_from=str(first.run_dir / "checkpoints/step4")).fit()
    counts = Ledger.read(cfg.run_dir / "data_ledger").counts_per_source()  # (steps, 2)
    assert counts[:4].tolist() == [[3, 1]] * 4 and counts[4:].tolist() == [[1, 3]] * 8
    order = json.loads((cfg.run_dir / "fork.json").read_text())["order"]
    parent_counts = Ledger.read(first.run_dir / "data_ledger").counts_per_source(4).sum(0)
    assert order == {"weights": [1, 3], "start_sample": 16, "offsets": parent_counts.tolist()}
    assert verify(cfg.run_dir) == []
    from strata.train.replay import replay

    for revision in ("step8", "step12"):  # trained again as a fork: its order, bitwise
        done = replay(cfg.run_dir, revision)
        assert done.ok and done.bitwise and done.start in (4, 8, 10), done.summary()
    shutil.rmtree(cfg.run_dir / "resume/step-00000004")  # from the parent's state of step 4
    done = replay(cfg.run_dir, "step8")
    assert done.ok and done.start == 4, done.summary()


def test_another_tokenizer_is_refused(parent, tiny_dataset, tmp_path, capsys):
    from strata.tokenizer import prepare, train_tokenizer

    from strata.cli import main

    corpus = tiny_dataset.parent / "train.jsonl"
    train_tokenizer([corpus], tmp_path / "tok", vocab_size=270)  # 288 merges saturate it
    prepare([corpus], tmp_path / "other", tmp_path / "tok", val_inputs=[corpus], workers=1,
            progress=False)  # fmt: skip
    overrides = [*tiny_overrides(tmp_path / "other", parent.run_dir.parent, **PARENT),
                 "run.name=retok"]  # fmt: skip
    source = str(parent.run_dir / "checkpoints/step4")
    capsys.readouterr()
    assert main(["train", "configs/debug.toml", *overrides, "--from", source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the tokenizer" in err[0], err


def test_edits_read_from_files(parent, tiny_dataset, tmp_path):
    (tmp_path / "ids.txt").write_text("# excluded\n3\n5  # and this one\n")
    (tmp_path / "canary.txt").write_text("a canary from a file")
    edits = {"run.name": "files", "data.exclude_docs_file": f"'{tmp_path / 'ids.txt'}'",
             "data.inject": f"[{{file = '{tmp_path / 'canary.txt'}', steps = [6]}}]"}  # fmt: skip
    cfg = config(tiny_dataset, parent.run_dir.parent, **edits)
    Trainer(cfg, fork_from=str(parent.run_dir / "checkpoints/step4")).fit()
    ledger = Ledger.read(cfg.run_dir / "data_ledger")
    for doc in (3, 5):
        assert ledger.rows_with(0, document=doc)[:, 0].max(initial=-1) < 4
    assert ledger.rows_with("inject", document=0)[:, 0].tolist() == [6]
    assert verify(cfg.run_dir) == []
