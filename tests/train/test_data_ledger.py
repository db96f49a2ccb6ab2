"""The data ledger a run writes (`RUN/data_ledger/`): it is the data order the run
trained on, the same after a resume, every revision records its position, and
`strata verify` catches a changed byte, a wrong position and a foreign order."""

import json
import shutil

import numpy as np
import pytest
from strata.checkpoints.verify import verify
from strata.run.config import load_config
from strata.run.ledger import Ledger
from strata.tokenizer import TokenShards
from strata.tokenizer.order import batch_window_indices
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides


def config(dataset, out, **extra):
    extra = {"run.name": "r", **extra}
    return load_config("configs/debug.toml", tiny_overrides(dataset, out, **extra))


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    cfg = config(tiny_dataset, tmp_path_factory.mktemp("ledger"))
    Trainer(cfg).fit()
    return cfg


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(trained.run_dir, copy, ignore=shutil.ignore_patterns("resume", ".lock"))
    return copy


def test_the_ledger_is_the_data_order_with_documents(trained, tiny_dataset):
    ledger = Ledger.read(trained.run_dir / "data_ledger")
    t = trained.train
    assert ledger.steps == t.max_steps
    shards = TokenShards(tiny_dataset, "train")
    starts = np.asarray(shards._doc_starts)
    for step in range(t.max_steps):
        rows = ledger.rows(step)
        windows = batch_window_indices(shards.n_windows(t.seq_len), t.seed, 4, step)
        assert rows["window"].tolist() == windows.tolist()
        assert not rows["source"].any()
        for window, doc, span in zip(windows, rows["document"], rows["span"], strict=True):
            first = int(window) * t.seq_len  # naive: the documents of its first, last token
            holds = [d for d in range(len(starts)) if starts[d] <= first][-1]
            last = [d for d in range(len(starts)) if starts[d] <= first + t.seq_len][-1]
            assert (doc, span) == (holds, last - holds)
        assert rows["span"].max() <= t.seq_len
    meta = json.loads((trained.run_dir / "checkpoints/step8/strata.json").read_text())
    assert meta["ledger"] == ledger.position(8)


def test_a_resumed_run_records_the_same_ledger(tiny_dataset, trained, tmp_path):
    cut = config(tiny_dataset, tmp_path, **{"train.max_steps": 5})
    Trainer(cut).fit()
    shutil.rmtree(cut.run_dir / "data_ledger")  # an older run without one: filled in
    Trainer(config(tiny_dataset, tmp_path)).fit()
    for name in ("index.json",):
        ours = json.loads((cut.run_dir / "data_ledger" / name).read_text())
        theirs = json.loads((trained.run_dir / "data_ledger" / name).read_text())
        assert ours == theirs
    for chunk in (trained.run_dir / "data_ledger").glob("chunk-*"):
        assert (cut.run_dir / "data_ledger" / chunk.name).read_bytes() == chunk.read_bytes()


def test_verify_catches_a_flipped_byte(run):
    assert verify(run) == []
    chunk = next((run / "data_ledger").glob("chunk-*"))
    data = bytearray(chunk.read_bytes())
    data[5] ^= 1
    chunk.write_bytes(bytes(data))
    kinds = {p.kind for p in verify(run)}
    assert "ledger-hash" in kinds


def test_verify_catches_a_wrong_position(run):
    path = run / "checkpoints/step4/strata.json"
    meta = json.loads(path.read_text())
    meta["ledger"]["chunks"][-1] = "0" * 64
    path.write_text(json.dumps(meta))
    assert {p.kind for p in verify(run)} == {"ledger-mismatch"}


def test_verify_catches_another_order(run, tiny_dataset, tmp_path):
    other = config(tiny_dataset, tmp_path / "other", **{"train.seed": 7})
    Trainer(other).fit()
    shutil.rmtree(run / "data_ledger")
    shutil.copytree(other.run_dir / "data_ledger", run / "data_ledger")
    kinds = {p.kind for p in verify(run)}
    assert "ledger-order" in kinds and "ledger-mismatch" in kinds


def test_batch_answers_from_the_ledger_without_the_data(tiny_dataset, tmp_path, capsys):
    from strata.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    cfg = config(data, tmp_path / "runs")
    Trainer(cfg).fit()
    run = str(cfg.run_dir)
    capsys.readouterr()
    assert main(["batch", run, "--step", "5", "--format", "json"]) == 0
    with_data = json.loads(capsys.readouterr().out)["rows"]
    data.rename(tmp_path / "moved")  # the prepared data is gone
    assert main(["batch", run, "--step", "5", "--format", "json"]) == 0
    ledger_rows = json.loads(capsys.readouterr().out)["rows"]
    got = [(r["window"], r["epoch"], r["documents"]) for r in ledger_rows]
    assert got == [(r["window"], r["epoch"], [d["id"] for d in r["documents"]]) for r in with_data]
    assert any(len(r["documents"]) > 1 for r in ledger_rows)  # rows reaching a next document
    assert main(["batch", run, "--step", "5"]) == 0
    assert "decoded text needs the prepared data" in capsys.readouterr().out
    assert main(["batch", run, "--source", "data", "--format", "json"]) == 0
    per_step = json.loads(capsys.readouterr().out)["per_step"]
    assert per_step == [4] * 12
    assert main(["batch", run, "--summary", "--format", "json"]) == 0
    summary = {r["revision"]: r["sources"]["data"] for r in
               json.loads(capsys.readouterr().out)["revisions"]}  # fmt: skip
    ledger = Ledger.read(cfg.run_dir / "data_ledger")
    for revision, step in (("step0", 0), ("step4", 4), ("step12", 12)):
        assert summary[revision]["tokens"] == step * 4 * cfg.train.seq_len
        docs = {}  # naive: documents a row overlaps, by epochs seen
        for s in range(step):
            rows = ledger.rows(s)
            for d, n, e in zip(*(rows[k].tolist() for k in ("document", "span", "epoch")),
                               strict=True):  # fmt: skip
                for doc in range(d, d + n + 1):
                    docs.setdefault(doc, set()).add(e)
        naive = {}
        for epochs in docs.values():
            naive[len(epochs)] = naive.get(len(epochs), 0) + 1
        assert {int(k): v for k, v in summary[revision]["documents_seen"].items()} == naive
    assert main(["batch", run, "--find", "def"]) == 2  # text needs the data


def test_doc_from_the_ledger_equals_the_data_answer(tiny_dataset, tmp_path, capsys):
    """--doc counts every row overlapping the document, with the data and without it."""
    from strata.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    cfg = config(data, tmp_path / "runs")
    Trainer(cfg).fit()
    run, answers = str(cfg.run_dir), {}
    n_docs = Ledger.read(cfg.run_dir / "data_ledger").header.sources[0].n_documents
    docs = range(0, n_docs, max(1, n_docs // 6))
    for where in ("data", "ledger"):
        if where == "ledger":
            data.rename(tmp_path / "moved")
        for doc in docs:
            capsys.readouterr()
            assert main(["batch", run, "--doc", str(doc), "--format", "json"]) == 0
            out = json.loads(capsys.readouterr().out)
            hits = [(h["step"], h["row"], h["window"], h["epoch"]) for h in out["hits"]]
            answers.setdefault(doc, []).append((hits, out["steps"], out["revisions"]))
    for doc, (with_data, from_ledger) in answers.items():
        assert with_data[0] == from_ledger[0] and with_data[1] == from_ledger[1], doc
        assert [r["batches_seen"] for r in with_data[2]] == [
            r["batches_seen"] for r in from_ledger[2]]  # fmt: skip
    assert any(answers[d][0][0] for d in docs)


def test_an_older_ledger_format_is_recorded_again(tiny_dataset, trained, tmp_path):
    cut = config(tiny_dataset, tmp_path, **{"train.max_steps": 5})
    Trainer(cut).fit()
    index = cut.run_dir / "data_ledger/index.json"
    index.write_text(json.dumps(json.loads(index.read_text()) | {"format_version": 1}))
    Trainer(config(tiny_dataset, tmp_path)).fit()
    ours, theirs = (json.loads((r / "data_ledger/index.json").read_text())
                    for r in (cut.run_dir, trained.run_dir))  # fmt: skip
    assert ours == theirs


def test_verify_checks_the_documents_against_the_data(run):
    """A ledger whose document column was rewritten, with hashes and positions made to
    match again, still disagrees with the data's index."""
    from strata.run.ledger import Ledger
    from strata.run.ledger_write import LedgerWriter

    ledger = Ledger.read(run / "data_ledger")
    h = ledger.header
    rows = [ledger.rows(s) for s in range(ledger.steps)]
    shutil.rmtree(run / "data_ledger")
    names = [s.name for s in h.sources]
    writer = LedgerWriter.open(run / "data_ledger", h.batch_size, names,
                               [s.n_documents for s in h.sources],
                               [s.n_windows for s in h.sources], h.max_epoch,
                               h.max_span)  # fmt: skip
    for step, r in enumerate(rows):
        spans = r["span"] if step != 7 else r["span"] * 0  # rows reaching no next document
        writer.append(step, r["source"], r["document"], spans, r["window"], r["epoch"])
    assert rows[7]["span"].any()
    writer.flush()
    for folder in (run / "checkpoints").glob("step*"):  # positions made to match
        path = folder / "strata.json"
        meta = json.loads(path.read_text())
        meta["ledger"] = writer.position(meta["step"])
        path.write_text(json.dumps(meta))
    problems = [p for p in verify(run) if p.kind == "ledger-order"]
    assert problems and "step 7: a row's documents are not the data's" in problems[0].detail
