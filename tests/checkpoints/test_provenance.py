"""`strata batch`: batch N rebuilt offline equals what the trainer trained on; --find and
--doc agree with brute-force scans over every batch."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from strata.checkpoints import provenance
from strata.checkpoints.provenance import find_doc, find_text, read_batch, read_run
from strata.tokenizer import Tokenizer, TokenShards, batch_window_indices
from strata.tokenizer.order import batch_digest, row_digests

from tests.conftest import synthetic_docs, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "quokka zebra umbrella"


def strata(*args):
    """Run the installed console script (falls back to `python -m strata.cli`)."""
    script = Path(sys.executable).with_name("strata")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "strata.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run whose corpus holds PLANTED in many documents."""
    from strata.run.config import load_config
    from strata.tokenizer import prepare, train_tokenizer
    from strata.train.trainer import Trainer

    root = tmp_path_factory.mktemp("prov")
    docs = synthetic_docs(400)
    for i in range(3, 400, 7):  # at varied offsets, so some occurrences cross windows
        docs[i]["text"] = docs[i]["text"][: i % 40] + PLANTED + docs[i]["text"][i % 40 :]
    for name, rows in (("train", docs), ("val", synthetic_docs(40, 1000))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in rows))
    train_tokenizer([root / "train.jsonl"], root / "tok", vocab_size=320)
    data = root / "shards"
    prepare([root / "train.jsonl"], data, root / "tok", val_inputs=[root / "val.jsonl"],
            workers=1, progress=False)  # fmt: skip
    cfg = load_config(ROOT / "configs/debug.toml", tiny_overrides(data, root / "runs"))
    Trainer(cfg).fit()
    return cfg.run_dir


@pytest.fixture(scope="module")
def spec(run):
    return read_run(run)


@pytest.fixture(scope="module")
def shards(spec):
    return TokenShards(spec.dataset, "train")


def test_digest_definition():
    rows = np.array([[1, 2, 3], [70000, 5, 6]], dtype=np.int64)
    inner = [hashlib.sha256(np.asarray(r, dtype="<u4").tobytes()).digest() for r in rows]
    assert row_digests(rows).tobytes() == b"".join(inner)
    assert batch_digest(rows) == hashlib.sha256(b"".join(inner)).hexdigest()
    halves = np.concatenate([row_digests(rows[:1]), row_digests(rows[1:])])  # per rank
    assert hashlib.sha256(halves.tobytes()).hexdigest() == batch_digest(rows)
    with pytest.raises(ValueError, match="2-D"):
        row_digests(rows[0])


def test_rows_match_what_the_trainer_trained_on(spec, shards):
    from strata.train.data import TrainBatches

    T, G = spec.seq_len, spec.global_batch_size
    whole = TrainBatches(shards, T, G, 2, spec.seed)
    ranks = [TrainBatches(shards, T, G, 1, spec.seed, rank=r, world_size=2) for r in (0, 1)]
    for step in [*range(spec.max_steps), spec.max_steps + 200]:  # the last straddles epochs
        batch = read_batch(spec, shards, step)
        assert np.array_equal(batch.tokens, whole.local_tokens(step).numpy())
        halves = [read_batch(spec, shards, step, rank=r, world=2) for r in (0, 1)]
        for half, loader in zip(halves, ranks, strict=True):
            assert np.array_equal(half.tokens, loader.local_tokens(step).numpy())
            assert half.batch_sha256 == batch.batch_sha256
            assert half.slice_sha256 == batch_digest(half.tokens)
        assert np.array_equal(np.concatenate([h.tokens for h in halves]), batch.tokens)
        assert batch.batch_sha256 == batch_digest(whole.local_tokens(step))
    with pytest.raises(ValueError, match="step"):
        read_batch(spec, shards, -1)


def test_digests_match_the_metrics_log(spec, shards):
    records = [json.loads(x) for x in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, spec.max_steps + 1))
    for r in records:  # record `step` was produced by global batch step - 1
        assert r["batch_sha256"] == read_batch(spec, shards, r["step"] - 1).batch_sha256


def test_documents_of_a_window(spec, shards):
    batch = read_batch(spec, shards, 3)
    for w, docs in zip(batch.windows.tolist(), batch.documents, strict=True):
        span = range(w * spec.seq_len, w * spec.seq_len + spec.seq_len + 1)
        assert [d for d, _ in docs] == sorted({shards.document_at(p)[0] for p in span})
        assert all(s.startswith("mod_") for _, s in docs)


def brute_force_text(spec, shards, tok, text):
    """Steps (< max_steps) whose rows hold `text` in the decoded text of one document's
    part of their seq_len + 1 tokens (inputs and targets)."""
    T, n = spec.seq_len, shards.n_windows(spec.seq_len)
    steps = set()
    for step in range(spec.max_steps):
        for w in batch_window_indices(n, spec.seed, spec.global_batch_size, step):
            window = shards.window(int(w), T).tolist()
            cuts = [-1] + [i for i, t in enumerate(window) if t == shards.eos_id] + [len(window)]
            parts = [window[a + 1 : b] for a, b in zip(cuts, cuts[1:], strict=False)]
            if any(text in tok.decode(part) for part in parts):
                steps.add(step)
    return sorted(steps)


def test_a_text_ending_on_the_last_target_token_was_trained_on(spec, shards):
    """The last token of window w is only a target, but it was trained on: `--find` says
    so, as `--doc` does for the document that holds it."""
    T, tok = spec.seq_len, Tokenizer.load(spec.run_dir / "tokenizer")
    rows = read_batch(spec, shards, 0)
    tails = [rows.tokens[r, T - 5 :].tolist() for r in range(len(rows.windows))]  # 6 tokens
    row = next(r for r, t in enumerate(tails) if shards.eos_id not in t and len(tok.decode(t)) > 7)
    w, text = int(rows.windows[row]), tok.decode(tails[row])
    found = find_text(spec, shards, tok, text)
    end = w * T + T - 5
    hit = next(h for h in found["hits"] if h["window"] == w)
    assert hit["step"] == 0 and end in hit["positions"]
    doc = shards.document_at(w * T + T)[0]
    assert w in find_doc(spec, shards, doc)["windows"]


@pytest.mark.parametrize("max_steps", [None, 500])  # 500 steps: about 2.5 epochs
def test_find_text_matches_a_brute_force_scan(spec, shards, max_steps):
    spec = dataclasses.replace(spec, max_steps=max_steps or spec.max_steps)
    tok = Tokenizer.load(spec.run_dir / "tokenizer")
    found = find_text(spec, shards, tok, PLANTED)
    assert found["query"]["method"] == "bytes"
    assert found["occurrences"] == 57 and found["across_windows"] > 0
    parts = ("in_one_window", "across_windows", "after_last_window")
    assert found["occurrences"] == sum(found[k] for k in parts)
    expected = brute_force_text(spec, shards, tok, PLANTED)
    assert found["steps"] == expected and expected
    for hit in found["hits"]:
        rows = read_batch(spec, shards, hit["step"])
        assert rows.windows[hit["row"]] == hit["window"]
        T = spec.seq_len  # every position inside the window's seq_len + 1 tokens
        assert all(hit["window"] * T <= p <= hit["window"] * T + T for p in hit["positions"])
    first = expected[0]
    assert found["revisions"][0]["step"] > first  # stepM has seen batches 0..M-1
    assert all(
        r["batches_seen"] == sum(s < r["step"] for s in expected) for r in found["revisions"]
    )


def test_find_falls_back_to_token_search(spec, shards, monkeypatch):
    tok = Tokenizer.load(spec.run_dir / "tokenizer")
    monkeypatch.setattr(provenance, "token_bytes", lambda tok: [b"?"] * tok.vocab_size)
    found = find_text(spec, shards, tok, PLANTED)
    assert found["query"]["method"] == "tokens"
    assert set(found["steps"]) <= set(brute_force_text(spec, shards, tok, PLANTED))


def test_find_doc_matches_the_batch_listings(spec, shards):
    found = find_doc(spec, shards, 10)
    expected = [
        (step, row)
        for step in range(spec.max_steps)
        for row, docs in enumerate(read_batch(spec, shards, step).documents)
        if 10 in [d for d, _ in docs]
    ]
    assert [(h["step"], h["row"]) for h in found["hits"]] == expected
    assert found["query"]["source"] == "mod_0.py"
    with pytest.raises(ValueError, match="document id"):
        find_doc(spec, shards, 10**6)


def test_dataset_is_found_from_the_launch_folder(run, tmp_path, monkeypatch):
    moved = tmp_path / "runs" / "debug"
    shutil.copytree(run, moved)
    dataset = read_run(run).dataset
    shutil.copytree(dataset, tmp_path / "data")
    text = (moved / "config.toml").read_text().replace(str(dataset), "data")
    (moved / "config.toml").write_text(text.replace(str(run.parent), "runs"))
    monkeypatch.chdir(ROOT)  # not the launch folder: found relative to runs/<name>/
    assert read_run(moved).dataset.resolve() == (tmp_path / "data").resolve()
    meta = moved / "checkpoints/step12/strata.json"
    meta.write_text(
        meta.read_text().replace('"dataset_fingerprint": "', '"dataset_fingerprint": "0')
    )
    with pytest.raises(ValueError, match="not the dataset this run trained on"):
        read_run(moved)


def test_cli_step_json_and_errors(run, spec, shards):
    out = strata("batch", str(run), "--step", "13", "--rank", "1", "--world", "2",
                 "--format", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = read_batch(spec, shards, 13, rank=1, world=2)
    assert got["future"] and [r["row"] for r in got["rows"]] == [2, 3]
    assert [r["tokens"] for r in got["rows"]] == expected.tokens.tolist()
    assert got["batch_sha256"] == expected.batch_sha256
    bad = strata("batch", str(run), "--step", "-1")
    assert bad.returncode == 2 and bad.stderr.startswith("strata: error: --step -1")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_find_text(run):
    out = strata("batch", str(run), "--find", PLANTED)
    assert out.returncode == 0, out.stderr
    assert (
        "57 occurrence(s)" in out.stdout and "revisions (manifest) that have seen it" in out.stdout
    )
