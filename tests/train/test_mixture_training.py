"""Training on a mixture of prepared datasets (`[[data.sources]]`): the per-source counts
of every batch, the per-source validation losses, resumes, a one-source mixture equal to
the plain run, and the refusals (another tokenizer, a source that would run out)."""

import json
import re
import shutil

import numpy as np
import pytest
from strata.run.config import ConfigError, load_config
from strata.train.trainer import Trainer

from tests.conftest import synthetic_docs, tiny_overrides

WEIGHTS = (0.6, 0.3, 0.1)


@pytest.fixture(scope="module")
def sources(tiny_dataset, tmp_path_factory):
    """Three small datasets prepared with the tiny dataset's tokenizer."""
    from strata.tokenizer import prepare

    root = tmp_path_factory.mktemp("sources")
    out = []
    for i, name in enumerate(("web", "code", "books")):
        for split, docs in (("train", synthetic_docs(60 + 40 * i, 2000 * i)),
                            ("val", synthetic_docs(12, 2000 * i + 900))):  # fmt: skip
            with open(root / f"{name}-{split}.jsonl", "w") as f:
                f.writelines(json.dumps(d) + "\n" for d in docs)
        prepare([root / f"{name}-train.jsonl"], root / name, tiny_dataset / "tokenizer",
                val_inputs=[root / f"{name}-val.jsonl"], workers=1, progress=False)  # fmt: skip
        out.append(root / name)
    return out


def mixture(paths, weights=WEIGHTS, **extra) -> str:
    tables = []
    for path, weight in zip(paths, weights, strict=True):
        more = "".join(f", {k} = {v}" for k, v in extra.get(path.name, {}).items())
        tables.append(f"{{dataset = '{path}', weight = {weight}{more}}}")
    return f"data.sources=[{', '.join(tables)}]"


def config(dataset, out, *more, **extra):
    overrides = tiny_overrides(dataset, out, **{"run.name": "m", **extra})
    return load_config("configs/debug.toml", [*overrides, *more])


def test_per_source_counts_and_validation_losses(sources, tmp_path):
    cfg = config(sources[0], tmp_path, mixture(sources), **{"train.global_batch_size": 10,
                 "train.micro_batch_size": 5, "train.max_steps": 6})  # fmt: skip
    trainer = Trainer(cfg)
    for step in range(6):  # 10 rows a batch: exactly 6, 3 and 1 of web, code, books
        origin = trainer.batches.origin(step)
        assert np.bincount(origin.sources, minlength=3).tolist() == [6, 3, 1]
        spike = trainer.batches.spike_rows(step, ["web", "code", "books"])  # a spike's rows
        assert spike["windows"] == origin.windows.tolist()
        assert [spike["sources"].count(n) for n in ("web", "code", "books")] == [6, 3, 1]
    trainer.fit()
    records = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if r.get("val_loss") is not None]
    assert evaluated, records
    for r in evaluated:  # every source scored on its own split; the run's is the first's
        assert {"val_loss/web", "val_loss/code", "val_loss/books"} <= r.keys()
        assert r["val_loss"] == r["val_loss/web"]
        assert len({r["val_loss/web"], r["val_loss/code"], r["val_loss/books"]}) == 3


def test_a_resumed_mixture_trains_the_same_batches(sources, tmp_path):
    whole = config(sources[0], tmp_path / "a", mixture(sources))
    Trainer(whole).fit()
    cut = config(sources[0], tmp_path / "b", mixture(sources), **{"train.max_steps": 4})
    Trainer(cut).fit()
    Trainer(config(sources[0], tmp_path / "b", mixture(sources))).fit()  # resumes at 4

    def digests(cfg):
        lines = (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["batch_sha256"], r["loss"]) for r in map(json.loads, lines)]

    assert digests(whole) == digests(cut)
    final = "checkpoints/step12/model.safetensors"
    assert (whole.run_dir / final).read_bytes() == (cut.run_dir / final).read_bytes()


def test_a_one_source_mixture_is_the_plain_run(tiny_dataset, tmp_path):
    plain = config(tiny_dataset, tmp_path / "plain")
    one = config(tiny_dataset, tmp_path / "one", f"data.sources=[{{dataset = '{tiny_dataset}'}}]")
    Trainer(plain).fit()
    Trainer(one).fit()
    for step in ("step0", "step4", "step12"):
        weights = f"checkpoints/{step}/model.safetensors"
        assert (plain.run_dir / weights).read_bytes() == (one.run_dir / weights).read_bytes()


def test_a_source_that_would_run_out_is_refused(sources, tmp_path):
    limit = mixture(sources, **{"books": {"max_repetition": 0.1}})
    with pytest.raises(ConfigError, match=r"'books' would be read .* the mixture supports \d+ "):
        Trainer(config(sources[0], tmp_path, limit, **{"train.max_steps": 400}))
    assert not (tmp_path / "m").exists()


def test_sources_with_another_tokenizer_are_refused(sources, tmp_path):
    from strata.tokenizer import prepare, train_tokenizer

    other = tmp_path / "other"
    other.mkdir()
    with open(other / "t.jsonl", "w") as f:
        for i in range(80):  # prose: another vocabulary
            text = f"Lorem ipsum dolor sit amet {i}, consectetur adipiscing elit. " * 3
            f.write(json.dumps({"text": text, "source": "prose"}) + "\n")
    train_tokenizer([other / "t.jsonl"], other / "tok", vocab_size=300)
    prepare([other / "t.jsonl"], other / "data", other / "tok", workers=1, progress=False)
    cfg = config(sources[0], tmp_path, mixture([sources[0], other / "data"], (0.5, 0.5)))
    with pytest.raises(ValueError, match=r"data: prepared with another tokenizer than .*web"):
        Trainer(cfg)
    shutil.rmtree(other)


def test_verify_and_batch_read_a_mixture_run(sources, tmp_path, capsys):
    from strata.checkpoints.verify import check, verify

    from strata.cli import main

    cfg = config(sources[0], tmp_path, mixture(sources))
    Trainer(cfg).fit()
    run = cfg.run_dir
    meta = json.loads((run / "checkpoints/step4/strata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["web", "code", "books"]
    assert [s["weight"] for s in meta["sources"]] == [6, 3, 1]
    assert meta["source_val_loss"]["web"] == meta["val_loss"]
    assert verify(run) == []
    assert check(run, progress=False, recompute=True).problems == []  # the first source
    meta["sources"][2]["weight"] = 2  # a tampered record: its hash still matches
    (run / "checkpoints/step4/strata.json").write_text(json.dumps(meta))
    assert "data-mismatch" in {p.kind for p in verify(run)}
    capsys.readouterr()
    origin = Trainer(config(sources[0], tmp_path / "again", mixture(sources))).batches.origin(3)
    assert main(["batch", str(run), "--step", "3", "--format", "json"]) == 0  # the ledger
    got = json.loads(capsys.readouterr().out)
    rows = got["rows"]
    assert [r["source"] for r in rows] == [["web", "code", "books"][s] for s in origin.sources]
    assert [r["window"] for r in rows] == origin.windows.tolist()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert got["batch_sha256"] == next(r["batch_sha256"] for r in logged if r["step"] == 4)
    assert main(["batch", str(run), "--step", "3", "--rank", "1", "--world", "2",
                 "--format", "json"]) == 0  # fmt: skip
    half = json.loads(capsys.readouterr().out)
    assert half["rows"] == rows[2:] and half["batch_sha256"] == got["batch_sha256"]
    assert main(["batch", str(run), "--step", "3", "--rank", "0", "--world", "3"]) == 2
    assert main(["batch", str(run), "--step", "3"]) == 0
    text = capsys.readouterr().out
    assert "def function_" in text and "needs the prepared data" not in text


def test_batch_find_searches_every_source_of_a_mixture(sources, tmp_path, capsys):
    from strata.tokenizer import TokenShards

    from strata.cli import main

    cfg = config(sources[0], tmp_path, mixture(sources))
    Trainer(cfg).fit()
    run, shards = str(cfg.run_dir), [TokenShards(p, "train") for p in sources]
    trainer = Trainer(config(sources[0], tmp_path / "again", mixture(sources)))
    rows = []  # (step, row, source, window) of every trained row
    for t in range(cfg.train.max_steps):
        origin = trainer.batches.origin(t)
        pairs = zip(origin.sources.tolist(), origin.windows.tolist(), strict=True)
        rows += [(t, j, s, w) for j, (s, w) in enumerate(pairs)]
    text = {r: _decode(sources[r[2]], shards[r[2]].window(r[3], 32)) for r in rows}
    name = next(m for r in rows if r[2] == 1 for m in re.findall(r"function_2\d+\(", text[r]))
    want = [(t, j, w) for (t, j, s, w) in rows if s == 1 and name in text[(t, j, s, w)]]
    capsys.readouterr()
    assert main(["batch", run, "--find", name, "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["sources"]["code"]["occurrences"] == 1  # code holds function_2000 .. 2099
    assert found["sources"]["web"]["occurrences"] == found["sources"]["books"]["occurrences"] == 0
    assert [(h["step"], h["row"], h["window"]) for h in found["hits"]] == want  # naive
    assert want and all(h["source"] == "code" for h in found["hits"])
    assert main(["batch", run, "--find", name]) == 0
    assert "per source: web 0, code 1, books 0" in capsys.readouterr().out
    shutil.move(sources[2], tmp_path / "moved")  # one source's data gone
    try:
        assert main(["batch", run, "--find", name]) == 2
        assert "needs the prepared data of every source" in capsys.readouterr().err
        assert main(["batch", run, "--step", "1"]) == 0
        assert "decoded text needs the prepared data" in capsys.readouterr().out
    finally:
        shutil.move(tmp_path / "moved", sources[2])


def _decode(dataset, tokens):
    from strata.tokenizer import Tokenizer

    return Tokenizer.load(dataset / "tokenizer").decode(tokens.tolist())


def test_two_processes_read_the_rows_of_one(sources):
    """Each rank's rows, in rank order, are the one-process batch, for any micro-batch."""
    from strata.tokenizer import TokenShards
    from strata.train.data import TrainBatches

    shards = [TokenShards(p, "train") for p in sources]
    whole = TrainBatches(shards, 32, 10, 5, seed=3, weights=(6, 3, 1))
    ranks = [TrainBatches(shards, 32, 10, 1, seed=3, rank=r, world_size=2, weights=(6, 3, 1))
             for r in (0, 1)]  # fmt: skip
    for step in (0, 1, 7, 50):
        both = np.concatenate([r.local_tokens(step).numpy() for r in ranks])
        assert np.array_equal(both, whole.local_tokens(step).numpy())
        origin = whole.origin(step)
        for row, source, window in zip(both, origin.sources, origin.windows, strict=True):
            assert np.array_equal(row, shards[source].window(int(window), 32))


def test_the_study_of_a_mixture_has_one_source_group_per_source(sources, tmp_path):
    from strata.study import study
    from strata.study.tables import read_csv

    cfg = config(sources[0], tmp_path, mixture(sources), **{"train.max_steps": 4})
    Trainer(cfg).fit()
    study(cfg.run_dir, quiet=True)
    rows = read_csv(cfg.run_dir / "study/sources.csv")
    metrics = {r["revision"]: r for r in read_csv(cfg.run_dir / "study/metrics.csv")}
    for rev in ("step0", "step4"):
        meta = json.loads((cfg.run_dir / "checkpoints" / rev / "strata.json").read_text())
        mine = {r["source"]: r for r in rows if r["revision"] == rev}
        assert sorted(mine) == ["books", "code", "web"]
        for name, loss in meta["source_val_loss"].items():  # the trainer's, per source
            assert float(mine[name]["loss"]) == pytest.approx(loss, rel=1e-5)
            assert float(mine[name]["bpb"]) > 0
        assert float(metrics[rev]["val_loss"]) == pytest.approx(meta["val_loss"], rel=1e-5)
