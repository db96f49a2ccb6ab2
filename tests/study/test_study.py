"""`strata study` end to end on a tiny trained run: CSVs, report, cache, HF folders, errors."""

import base64
import errno
import io
import json
import math
import os
import re
import shutil

import matplotlib.image
import pytest
import torch
from safetensors.torch import load_file, save_file
from strata.checkpoints.export import export_hf
from strata.checkpoints.load import load, read_metadata
from strata.checkpoints.publish import publish_revision
from strata.run.config import load_config
from strata.study import study
from strata.study.style import DPI, SIZE
from strata.study.tables import read_csv
from strata.tokenizer import Tokenizer
from strata.train.trainer import Trainer

from strata.cli import main
from tests.conftest import tiny_overrides

SMALL = {"eval_windows": 8, "mem_samples": 8, "quiet": True}
STEPS = [0, 1, 2, 4, 8, 12]
PNG_SHAPE = (round(SIZE[1] * DPI), round(SIZE[0] * DPI), 4)  # RGBA


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A 12-step debug run publishing steps 0, 1, 2, 4, 8, 12."""
    out = tmp_path_factory.mktemp("study_run")
    cfg = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **{"run.name": "r"}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg).fit()
    finally:
        torch.set_num_threads(before)
    return out / "r"


@pytest.fixture(scope="module")
def studied(tiny_run):
    return study(tiny_run, **SMALL)


def png_shape(data: bytes) -> tuple[int, ...]:
    return matplotlib.image.imread(io.BytesIO(data)).shape


def study_log(report):
    return json.loads((report.parent / "study.json").read_text())


def test_one_finite_row_per_revision(tiny_run, studied):
    assert studied == tiny_run / "study" / "report.html"
    rows = read_csv(studied.parent / "metrics.csv")
    assert list(rows[0])[:7] == ["revision", "step", "tokens", "val_loss", "val_bpb",
                                 "mem_seen", "mem_unseen"]  # fmt: skip
    assert [int(r["step"]) for r in rows] == STEPS
    assert [int(r["tokens"]) for r in rows] == [s * 4 * 32 for s in STEPS]
    for row in rows:
        for key in ("val_loss", "val_bpb", "norm/total", "norm/layers.1.mlp", "mem_all"):
            assert math.isfinite(float(row[key])), (row["revision"], key)
        assert int(row["n_seen"]) + int(row["n_unseen"]) == 8
    assert rows[0]["dnorm/total"] == "" and rows[0]["mem_seen"] == "" and rows[0]["n_seen"] == "0"
    assert all(float(r["dnorm/total"]) > 0 for r in rows[1:])
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert float(rows[0]["val_loss"]) == pytest.approx(math.log(288), abs=0.3)
    sources = read_csv(studied.parent / "sources.csv")
    for row in rows:
        mine = [s for s in sources if s["revision"] == row["revision"]]
        assert sum(int(s["eval_tokens"]) for s in mine) == int(row["val_tokens"])
        assert {s["source"] for s in mine} <= {f"mod_{i}.py" for i in range(10)}


def test_report_is_self_contained(studied):
    page = studied.read_text()
    log = study_log(studied)
    assert {"loss.png", "memorisation.png", "norms.png", "dnorm.png", "sources.png"} <= set(
        log["figures"]
    )
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(log["figures"])
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert png_shape(base64.b64decode(src.split(",", 1)[1])) == PNG_SHAPE
    for href in re.findall(r'href="([^"]*)"', page):
        assert (studied.parent / href).is_file(), href
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)  # base64 may hold "http"
    assert "http" not in text.lower() and "<link" not in text and "<script" not in text
    assert "Study of r" in page and "step12" in page


def test_cache_reuses_and_evaluates_only_new_revisions(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("study", "resume"))
    first = study(run, **SMALL)
    assert study_log(first)["evaluated"] == [f"step{s}" for s in STEPS]
    before = (first.parent / "metrics.csv").read_text()
    again = study(run, **SMALL)
    assert study_log(again)["evaluated"] == [] and len(study_log(again)["cached"]) == 6
    assert (again.parent / "metrics.csv").read_text() == before
    last = run / "checkpoints" / "step12"
    model, meta = load(last), read_metadata(last)
    with torch.no_grad():
        model.tok_embeddings.weight.mul_(1.01)
    info = {"data": meta.data.to_dict(), "run": meta.run, "tokens": 16 * 128}
    publish_revision(run / "checkpoints", 16, model, model.config, Tokenizer.load(last), info)
    third = study(run, **SMALL)
    assert study_log(third)["evaluated"] == ["step16"]
    rows = read_csv(third.parent / "metrics.csv")
    assert rows[-1]["step"] == "16" and float(rows[-1]["dnorm/embed"]) == pytest.approx(0.01)
    forced = study(run, **SMALL, force=True)
    assert len(study_log(forced)["evaluated"]) == 7
    other_settings = study(run, **(SMALL | {"eval_windows": 4}))
    assert len(study_log(other_settings)["evaluated"]) == 7


def test_moe_routing_from_strata_json(tiny_run, studied, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("resume"))  # keeps the cache
    for i, step in enumerate(STEPS):
        path = run / "checkpoints" / f"step{step}" / "strata.json"
        meta = json.loads(path.read_text())
        frac = [0.25 + 0.05 * i, 0.25, 0.25, 0.25 - 0.05 * i]
        meta["moe_routing"] = {
            f"layers.{layer}": {
                "fraction": frac,
                "max_mean_ratio": 4 * frac[0],
                "entropy": 1.0,
                "entropy_normalized": 0.7,
            }
            for layer in (0, 1)
        }
        path.write_text(json.dumps(meta))  # fmt: skip
    report = study(run, **SMALL)
    assert study_log(report)["evaluated"] == []  # routing is read, not evaluated
    rows = read_csv(report.parent / "metrics.csv")
    assert float(rows[2]["moe/layers.1/max_mean_ratio"]) == pytest.approx(1.4)
    assert float(rows[0]["moe/layers.0/entropy"]) == 1.0 and rows[0]["mem_all"] != ""
    figures = study_log(report)["figures"]
    assert {"moe_balance.png", "moe_layers.0.png", "moe_layers.1.png"} <= set(figures)
    assert png_shape((report.parent / "moe_layers.1.png").read_bytes()) == PNG_SHAPE


def test_hugging_face_folders(tiny_run, studied, tiny_dataset, tmp_path):
    hf = tmp_path / "hf"
    for step in (0, 4, 12):
        export_hf(tiny_run / "checkpoints" / f"step{step}", hf / f"step{step}")
    exported = read_csv(study(hf, **SMALL).parent / "metrics.csv")  # strata.json kept
    ours = {r["step"]: r for r in read_csv(studied.parent / "metrics.csv")}
    for row in exported:
        for key in ("tokens", "val_loss", "mem_seen", "norm/total"):
            assert row[key] == ours[row["step"]][key], key
    for step in (0, 4, 12):
        (hf / f"step{step}" / "strata.json").unlink()  # now plain Hugging Face folders
    with pytest.raises(ValueError, match="records no dataset; pass --data"):
        study(hf, **SMALL)
    report = study(hf, out=tmp_path / "plain", data=tiny_dataset, seq_len=32, **SMALL)
    rows = read_csv(report.parent / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "4", "12"] and rows[0]["tokens"] == ""
    assert rows[0]["n_seen"] == "" and math.isfinite(float(rows[-1]["mem_all"]))
    assert all(math.isfinite(float(r["val_bpb"])) for r in rows)
    for row in rows:  # same weights, same windows: the same numbers without strata.json
        for key in ("val_loss", "val_bpb"):  # (the memorisation sample differs: no order)
            assert row[key] == ours[row["step"]][key], key
    (hf / "step4" / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="step4: tokenizer sha256"):
        study(hf, data=tiny_dataset, seq_len=32, out=tmp_path / "o", **SMALL)


def test_default_windows_are_the_trainers_so_val_loss_matches_strata_json(tiny_run, tmp_path):
    report = study(tiny_run, out=tmp_path / "default", mem_samples=4, quiet=True)
    assert "4 windows of 32 tokens" in report.read_text()  # train.eval_windows = 4
    rows = read_csv(report.parent / "metrics.csv")
    assert len(rows) == len(STEPS)
    for row in rows:
        meta = read_metadata(tiny_run / "checkpoints" / row["revision"])
        assert float(row["val_loss"]) == pytest.approx(meta.val_loss, abs=1e-5), row["step"]
        if meta.last_batch_loss is None:  # step 0: no batch made it
            assert row["last_batch_loss"] == "" and row["step"] == "0"
        else:
            assert float(row["last_batch_loss"]) == pytest.approx(meta.last_batch_loss, rel=1e-9)


def pad_vocabulary(folder, padded: int) -> None:
    """Make an exported folder look like a padded foreign one (Pythia's 50304 outputs for
    50277 tokens): config.json counts `padded` outputs, the extra rows are large."""
    config = json.loads((folder / "config.json").read_text())
    vocab, config["vocab_size"] = config["vocab_size"], padded
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    for name, w in weights.items():
        if w.shape[0] == vocab and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            extra = torch.full((padded - vocab, *w.shape[1:]), 0.5, dtype=w.dtype)
            weights[name] = torch.cat([w, extra])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_foreign_padded_outputs_are_scored_over_the_dataset_vocabulary(
    tiny_run, studied, tiny_dataset, tmp_path
):
    hf = tmp_path / "hf"
    for step in (4, 12):
        export_hf(tiny_run / "checkpoints" / f"step{step}", hf / f"step{step}")
        (hf / f"step{step}" / "strata.json").unlink()
    plain = read_csv(study(hf, out=tmp_path / "a", data=tiny_dataset, seq_len=32, **SMALL)
                     .parent / "metrics.csv")  # fmt: skip
    for step in (4, 12):
        pad_vocabulary(hf / f"step{step}", 448)
    assert load(hf / "step12").lm_head.weight.shape[0] == 448  # the padding rows are there
    report = study(hf, out=tmp_path / "b", data=tiny_dataset, seq_len=32, **SMALL)
    padded = read_csv(report.parent / "metrics.csv")
    ours = {r["step"]: r for r in read_csv(studied.parent / "metrics.csv")}
    assert len(padded) == len(plain) == 2
    for row, before in zip(padded, plain, strict=True):
        for key in ("val_loss", "val_bpb", "mem_all", "mem_acc_all"):
            assert row[key] == before[key], (row["step"], key)
        assert row["val_loss"] == ours[row["step"]]["val_loss"]


def test_bad_inputs_are_clear_errors(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        study(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no revision folders"):
        study(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        study(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="is one revision"):
        study(tiny_run / "checkpoints" / "step4")
    with pytest.raises(FileNotFoundError, match="index.json"):
        study(tiny_run, data=tmp_path / "empty", **SMALL)
    with pytest.raises(ValueError, match="--eval-windows = 0: expected a positive integer"):
        study(tiny_run, eval_windows=0)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        study(tiny_run, out=tmp_path / "o", mem_prefix=200, mem_length=100, **SMALL)


def test_command_line(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["study", str(tiny_run / "checkpoints"), "--out", str(out), "--eval-windows", "4",
            "--mem-samples", "4", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "6 revisions (0 cached, 6 evaluated)" in capsys.readouterr().out
    assert main(args + ["--quiet"]) == 0 and capsys.readouterr().out == ""
    assert (out / "report.html").is_file() and (out / "metrics.csv").is_file()
    assert main(["study", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("strata: error: ") and "missing" in err[0]


def test_full_disk_keeps_the_earlier_outputs_and_the_cache(tiny_run, tmp_path, monkeypatch, capsys):
    """Out of space while caching a revision, then while writing the report: one line,
    no temporary file left, the earlier report and tables byte for byte, the revisions
    cached before kept, and a rerun continues from them."""
    import strata.run.jsonfile as jsonfile
    import strata.study.run as study_run

    out = tmp_path / "s"
    first = study(tiny_run, out, **SMALL)
    outputs = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cli = ["study", str(tiny_run), "--out", str(out), "--quiet", "--mem-samples", "8"]
    args = [*cli, "--eval-windows", "4"]  # other settings: every revision again
    real_fsync, real_report = os.fsync, study_run.write_report

    def full(fd):  # the cache entry of step4 is written, but cannot be made durable
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f"step4.json.tmp-{os.getpid()}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(jsonfile.os, "fsync", full)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"strata: error: {out}: No space left on device")
    assert "while writing the results of step4" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == outputs
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]

    def report_then_full(path, *a):
        real_report(path, *a)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.undo()
    monkeypatch.setattr(study_run, "write_report", report_then_full)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "while writing the report and tables" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == outputs
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cache"]  # no .outputs.tmp
    monkeypatch.undo()  # space freed: the rerun evaluates nothing again
    assert main(args) == 0
    assert study_log(first)["evaluated"] == [] and study_log(first)["settings"]["eval_windows"] == 4
