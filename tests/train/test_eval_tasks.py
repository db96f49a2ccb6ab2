"""`train.eval_tasks`: the harness at every publication step, recorded in metrics.jsonl and
each revision's strata.json, with the numbers `strata study --tasks` computes from the
published revision; a missing extra is one line before the run folder exists."""

import json
import sys

import pytest
from strata.run.config import ConfigError, load_config
from strata.study import study
from strata.study.tables import read_csv
from strata.train.build import preflight
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides, write_mc_task
from tests.train.runs import read_metrics

pytest.importorskip("lm_eval")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def config(dataset, out, task):
    extra = {"run.name": "tasks", "train.max_steps": 4, "train.eval_tasks": f"'{task}'",
             "publish.log_spaced": "false"}  # fmt: skip
    return load_config("configs/debug.toml", tiny_overrides(dataset, out, **extra))


def test_publication_steps_record_the_tasks(tiny_dataset, tmp_path):
    task = write_mc_task(tmp_path)
    cfg = config(tiny_dataset, tmp_path / "runs", task)
    Trainer(cfg).fit()
    logged = {r["step"]: r for r in read_metrics(cfg.run_dir) if "task/strata_mc/acc" in r}
    assert sorted(logged) == [0, 4]  # the publication steps
    study(cfg.run_dir, out=tmp_path / "study", tasks=str(task), eval_windows=4, mem_samples=4,
          device="cpu", quiet=True)  # fmt: skip
    computed = {r["step"]: r for r in read_csv(tmp_path / "study/metrics.csv")}
    for step in (0, 4):
        meta = json.loads((cfg.run_dir / f"checkpoints/step{step}/strata.json").read_text())
        recorded = meta["tasks"]
        assert recorded["configs"].keys() == {"strata_mc"} and recorded["harness"]
        acc = recorded["columns"]["task/strata_mc/acc"]
        assert acc == logged[step]["task/strata_mc/acc"]
        assert acc == pytest.approx(float(computed[str(step)]["task/strata_mc/acc"]), abs=1e-9)
    plain = study(cfg.run_dir, out=tmp_path / "plain", eval_windows=4, mem_samples=4,
                  device="cpu", quiet=True)  # fmt: skip
    copied = {r["step"]: r for r in read_csv(tmp_path / "plain/metrics.csv")}
    assert copied["4"]["task/strata_mc/acc"] == computed["4"]["task/strata_mc/acc"]
    assert "Downstream tasks" in plain.read_text()


def test_without_the_extra_the_run_is_refused_before_it_starts(tiny_dataset, tmp_path,
                                                                monkeypatch):  # fmt: skip
    cfg = config(tiny_dataset, tmp_path / "runs", write_mc_task(tmp_path))
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ConfigError, match=r"train.eval_tasks = .*pip install -e '.\[eval\]'"):
        preflight(cfg)
    assert not cfg.run_dir.exists()
