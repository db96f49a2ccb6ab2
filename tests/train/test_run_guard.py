"""One run, never two mixed: the run-folder lock, resume refusing a changed config, and
no revision of non-finite weights ever published."""

import json
import re
import shutil

import pytest
import torch
from strata.run.config import ConfigError, load_config
from strata.run.lock import RunLock, RunLocked
from strata.train.trainer import RunStopped, Trainer

from strata.cli import main
from tests.conftest import tiny_overrides


def test_a_second_trainer_on_the_same_run_is_refused(tiny_dataset, tmp_path, capsys):
    args = ["train", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path,
                                                          **{"run.name": "locked"})]  # fmt: skip
    run = tmp_path / "locked"
    holder = RunLock(run).acquire()  # as another `strata train` on this folder holds it
    try:
        assert main([*args, "optim.lr=1e-4"]) == 2
        err = capsys.readouterr().err.strip()
        assert re.fullmatch(r"strata: error: .*locked: in use by pid \d+ on \S+ \(another .*", err)
        assert not (run / "config.toml").exists()  # refused before writing anything
    finally:
        holder.release()
    assert main(args) == 0  # free again: trains, and lets go of the folder at the end
    RunLock(run).acquire().release()
    with pytest.raises(RunLocked, match="in use by pid"), RunLock(run), RunLock(run):
        pass


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    """A run stopped at step 8 (resume checkpoint step-00000008, revisions 0 1 2 4 8),
    trained once for the module."""
    out = tmp_path_factory.mktemp("guard")
    overrides = tiny_overrides(tiny_dataset, out, **{"run.name": "r", "train.max_steps": 8})
    Trainer(load_config("configs/debug.toml", overrides)).fit()
    return out / "r"


@pytest.fixture
def stopped_run(trained_run, tiny_config, tmp_path):
    """`tiny_config` over a fresh copy of the stopped run (as `tmp_path / "r"`)."""
    shutil.copytree(trained_run, tmp_path / "r")
    return tiny_config


@pytest.mark.parametrize(
    "change, named",
    [
        ({"train.seed": 7}, "train.seed (1337 -> 7)"),
        ({"train.seq_len": 16}, "train.seq_len (32 -> 16)"),
        ({"train.global_batch_size": 8}, "train.global_batch_size (4 -> 8)"),
        ({"model.n_layers": 3}, "model.n_layers (2 -> 3)"),
        ({"optim.lr": 1e-4}, "optim.lr (0.003 -> 0.0001)"),
    ],
)
@pytest.mark.parametrize("config_toml", ["kept", "deleted"])
def test_resume_with_a_changed_data_order_or_model_is_refused(
    stopped_run, change, named, config_toml
):
    cfg = stopped_run(**{"run.name": "r", **change})
    if config_toml == "deleted":  # the copy in strata.json stands in for it
        (cfg.run_dir / "config.toml").unlink()
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    message = str(err.value)
    assert named in message and "\n" not in message and "new run.name" in message


def test_resume_with_changes_that_keep_the_run_is_accepted(stopped_run):
    trainer = Trainer(stopped_run(**{"run.name": "r", "train.max_steps": 12,
                                     "log.every": 2, "train.micro_batch_size": 1}))  # fmt: skip
    assert trainer.step == 8
    trainer.fit()
    assert trainer.step == 12


def test_resume_on_a_dataset_with_other_content_is_refused(stopped_run, tiny_dataset, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(tiny_dataset, edited)
    index = edited / "index.json"
    index.write_text(index.read_text() + " ")  # same shards, another fingerprint
    with pytest.raises(ConfigError, match=r"data\.dataset content \(fingerprint"):
        Trainer(stopped_run(**{"run.name": "r", "data.dataset": f"'{edited}'"}))
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dataset, moved)  # the same content elsewhere: resumes
    assert Trainer(stopped_run(**{"run.name": "r", "data.dataset": f"'{moved}'"})).step == 8


def test_non_finite_weights_are_never_published(tiny_config, monkeypatch):
    cfg = tiny_config(**{"run.name": "poisoned", "train.max_steps": 8})
    original = Trainer.train_step

    def poison_at_step_2(self, step):
        out = original(self, step)
        if step == 1:  # the update to step 2 leaves a NaN weight
            with torch.no_grad():
                self.model.lm_head.weight[0, 0] = float("nan")
        return out

    monkeypatch.setattr(Trainer, "train_step", poison_at_step_2)
    with pytest.raises(RunStopped, match="not all finite after step 2: revision step2 was not"):
        Trainer(cfg).fit()
    published = sorted(p.name for p in (cfg.run_dir / "checkpoints").glob("step*"))
    assert published == ["step0", "step1"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"log.every": 1}, "not all finite after step 3: the run stopped"),
        ({"log.every": 100, "checkpoint.every": 3},
         "not all finite after step 3: its resume checkpoint was not written and the run"),
    ],
    ids=["log-step", "checkpoint-step"],
)  # fmt: skip
def test_non_finite_weights_stop_the_run_at_the_next_log_or_checkpoint_step(
    tiny_config, monkeypatch, extra, message
):
    """Weights made non-finite by an update whose loss and gradients were finite (no
    revision is due at step 3) stop the run there, with no checkpoint of them written."""
    cfg = tiny_config(**{"run.name": "poisoned", "train.max_steps": 8, **extra})
    original = Trainer.train_step

    def poison_at_step_3(self, step):
        out = original(self, step)
        if step == 2:
            with torch.no_grad():
                self.model.lm_head.weight[0, 0] = float("inf")
        return out

    monkeypatch.setattr(Trainer, "train_step", poison_at_step_3)
    with pytest.raises(RunStopped, match=message):
        Trainer(cfg).fit()
    assert not (cfg.run_dir / "resume").exists() or not list((cfg.run_dir / "resume").iterdir())
    records = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["step"] <= 3 for r in records)  # nothing trained past it


@pytest.mark.parametrize(
    "step, rename, message",
    [
        (None, False, r"key 'step': expected a non-negative integer, got None"),
        (3.7, False, r"key 'step': expected a non-negative integer, got 3\.7"),
        (10**6, False, r"step 1000000 disagrees with its folder's name step-00000008"),
        (10**6, True, r"step 1000000 is past train\.max_steps = 12; raise train\.max_steps"),
    ],
    ids=["missing", "float", "folder-name", "past-max-steps"],
)
def test_a_tampered_trainer_state_is_refused(stopped_run, tmp_path, capsys, step, rename, message):
    """trainer.json's step: an integer, the one in its folder's name, not past max_steps;
    else one line before anything is written (not a KeyError, a truncated step, or a
    run that ends at once as done)."""
    import json

    from tests.conftest import tiny_overrides as overrides

    resume = tmp_path / "r" / "resume"
    folder = resume / "step-00000008"
    state = json.loads((folder / "trainer.json").read_text())
    state.pop("step") if step is None else state.update(step=step)
    (folder / "trainer.json").write_text(json.dumps(state))
    if rename:
        folder = folder.rename(resume / "step-01000000")
        (resume / "latest").write_text("step-01000000\n")
    files = lambda: {  # noqa: E731 - every file but the lock's pid and host
        p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != ".lock"
    }
    before = files()
    cfg = stopped_run()
    args = [
        "train",
        "configs/debug.toml",
        *overrides(cfg.data.dataset, tmp_path, **{"run.name": "r"}),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert str(folder / "trainer.json") in err[0]
    assert files() == before
