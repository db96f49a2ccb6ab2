"""`strata study RUN --tasks`: a local multiple-choice task (harness YAML, data in a local
JSON file, no network) through lm-evaluation-harness at every revision: accuracy above
chance once trained, the same numbers as the harness's own Hugging Face model on the
revision's folder, cache reuse, and one line when the extra is missing."""

import json
import sys

import pytest
from strata.run.config import load_config
from strata.study import study
from strata.study.tables import read_csv
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides, write_mc_task

pytest.importorskip("lm_eval")
KNOBS = {"eval_windows": 4, "mem_samples": 4, "device": "cpu", "quiet": True}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_mc_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    extra = {"run.name": "tasks", "train.max_steps": 24, "publish.every": 12,
             "publish.log_spaced": "false", "train.eval_every": 0}  # fmt: skip
    out = tmp_path_factory.mktemp("r")
    cfg = load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **extra))
    Trainer(cfg).fit()
    return cfg.run_dir


def test_a_trained_model_beats_chance_and_every_number_is_recorded(run, task, tmp_path):
    report = study(run, out=tmp_path, tasks=str(task), **KNOBS)
    rows = {r["step"]: r for r in read_csv(tmp_path / "metrics.csv")}
    assert sorted(rows, key=int) == ["0", "12", "24"]
    assert float(rows["24"]["task/strata_mc/acc"]) > 0.5 + 2 * float(
        rows["24"]["task/strata_mc/acc_stderr"] or 0)  # fmt: skip
    ran = json.loads((tmp_path / "study.json").read_text())["tasks"]
    assert ran["harness"] == __import__("importlib.metadata").metadata.version("lm_eval")
    assert list(ran["configs"]) == ["strata_mc"] and len(ran["configs"]["strata_mc"]) == 64
    assert ran["num_fewshot"] == 0 and ran["chance"] == {"strata_mc": 0.5}
    page = report.read_text()
    assert "Downstream tasks (lm-evaluation-harness)" in page and "strata_mc" in page
    assert (tmp_path / "tasks.png").read_bytes()[:4] == b"\x89PNG"


def test_the_harness_on_the_revision_folder_gives_the_same_numbers(run, task, tmp_path):
    """Independent reference: lm_eval's own Hugging Face model on the published folder."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    study(run, out=tmp_path, tasks=str(task), **KNOBS)
    ours = json.loads((tmp_path / "cache/step24.tasks.json").read_text())
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(run / "checkpoints/step24"), "device": "cpu",
                                "dtype": "float32"},
        tasks=["strata_mc"], task_manager=TaskManager(include_path=str(task.parent),
                                                      include_defaults=False),
        num_fewshot=0, log_samples=True, verbosity="ERROR", bootstrap_iters=1000,
    )  # fmt: skip
    assert ours["columns"]["task/strata_mc/acc"] == theirs["results"]["strata_mc"]["acc,none"]
    reference = {s["doc_id"]: s["filtered_resps"][s["target"]][0]
                 for s in theirs["samples"]["strata_mc"]}  # fmt: skip
    assert len(reference) == len(ours["examples"]["strata_mc"]) == 24
    for example in ours["examples"]["strata_mc"]:
        assert example["loglikelihood"] == pytest.approx(reference[example["doc_id"]], abs=1e-4)


def test_tasks_are_cached_apart_from_the_other_metrics(run, task, tmp_path):
    study(run, out=tmp_path, tasks=str(task), **KNOBS)
    study(run, out=tmp_path, tasks=str(task), **KNOBS)
    done = json.loads((tmp_path / "study.json").read_text())
    assert done["evaluated"] == [] and done["tasks_evaluated"] == []
    study(run, out=tmp_path, tasks=str(task), num_fewshot=1, **KNOBS)
    done = json.loads((tmp_path / "study.json").read_text())
    assert done["evaluated"] == [] and done["tasks_evaluated"] == ["step0", "step12", "step24"]


def test_without_the_extra_tasks_are_one_line(run, task, tmp_path, monkeypatch, capsys):
    from strata.cli import main

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    capsys.readouterr()
    code = main(["study", str(run), "--out", str(tmp_path), "--tasks", str(task), "--quiet",
                 "--eval-windows", "4", "--mem-samples", "4"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install -e '.[eval]'" in err[0], err


def test_tasks_are_named_or_read_from_yaml_files_and_folders(task, tmp_path):
    from strata.checkpoints.harness import task_spec

    assert task_spec("hellaswag, arc_easy") == (["hellaswag", "arc_easy"], None)
    assert task_spec(str(task)) == (["strata_mc"], str(task.parent))
    assert task_spec(f"{task.parent},piqa") == (["strata_mc", "piqa"], str(task.parent))
    with pytest.raises(FileNotFoundError, match="no such file"):
        task_spec(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("dataset_path: json\n")
    with pytest.raises(ValueError, match="a `task:` name"):
        task_spec(str(tmp_path / "bad.yaml"))
