"""Bad configs and bad data for a run: one-line errors naming the key, file or value, raised
before the run folder is touched (an existing run is left byte-for-byte unchanged)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from strata.run.config import ConfigError, load_config
from strata.tokenizer import TokenShards, prepare, train_tokenizer
from strata.train.data import TrainBatches
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("run.name='..'", "run.name = '..': expected a folder name"),
        ("run.name='.'", "run.name = '.': expected a folder name"),
        ("run.name='a\\\\b'", "expected a folder name (not '.' or '..', no '/' or '\\')"),
        ("train.sead=1", "unknown key 'train.sead'; did you mean 'seed'?"),
        ("chekpoint.every=1", "unknown section '[chekpoint]'; did you mean 'checkpoint'?"),
        ("train.dtype=16", "train.dtype = 16: expected a value of type str"),
        ("data.verify='yes'", "data.verify = 'yes': expected a value of type bool"),
        ("model.d_model=0", "model.d_model = 0: expected a positive integer"),
        ("model.n_layers=-2", "model.n_layers = -2: expected a positive integer"),
        ("train.eval_windows=0", "train.eval_windows = 0: expected a positive integer"),
        ("train.eval_batches=0", "train.eval_batches = 0: expected a positive integer"),
        ("checkpoint.keep=-1", "checkpoint.keep = -1: expected a positive integer"),
        ("publish.every=0", "publish.every = 0: expected a positive integer"),
        ("train.seq_len=257", "train.seq_len = 257: expected at most model.max_seq_len (256)"),
        ("train.micro_batch_size=3", "train.global_batch_size = 16: expected a multiple of"),
        ("optim.weight_decay=inf", "optim.weight_decay = inf: expected a finite number"),
        ("model.init_std=inf", "model.init_std = inf: expected a finite number"),
        ("model.rope_theta=nan", "model.rope_theta = nan: expected a finite number"),
        ("train.grad_clip=-inf", "train.grad_clip = -inf: expected a finite number"),
    ],
)
def test_config_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.preset='debug'", override])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_wrong_type_in_a_toml_file_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nmax_steps = "100"\n')
    with pytest.raises(
        ConfigError, match=r"train\.max_steps = '100': expected a value of type int"
    ):
        load_config(path)


def test_config_values_are_never_evaluated(tmp_path):
    marker = tmp_path / "PWNED"
    code = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "c.toml"
    path.write_text(f'[run]\nout_dir = "{code}"\n')
    assert load_config(path).run.out_dir == code  # a string, nothing ran
    with pytest.raises(ConfigError, match="expected a value of type int"):
        load_config(None, [f"train.seed={code}"])
    assert not marker.exists()


def test_global_batch_not_divisible_by_micro_times_processes(tiny_dataset):
    shards = TokenShards(tiny_dataset)
    with pytest.raises(
        ValueError, match=r"global_batch_size = 4 over 2 process\(es\) gives 2 rows"
    ):
        TrainBatches(shards, 16, global_batch_size=4, micro_batch_size=4, seed=0, world_size=2)
    cfg = load_config(None, ["train.dp_replicate=3"])
    with pytest.raises(ConfigError, match=r"train\.dp_replicate = 3: expected a divisor"):
        cfg.train.dp_sizes(2)


@pytest.fixture(scope="module")
def existing_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run folder after 4 steps (revisions, resume checkpoints, tokenizer)."""
    out = tmp_path_factory.mktemp("bad_config")
    values = {"run.name": "run", "train.max_steps": 4, "checkpoint.every": 2}
    Trainer(load_config("configs/debug.toml", tiny_overrides(tiny_dataset, out, **values))).fit()
    return out / "run"


@pytest.fixture
def run_copy(existing_run, tmp_path) -> Path:
    return Path(shutil.copytree(existing_run, tmp_path / "run"))


def config(dataset, run_dir: Path, **extra):
    values = {"run.name": run_dir.name, "train.max_steps": 6, "checkpoint.every": 2, **extra}
    return load_config("configs/debug.toml", tiny_overrides(dataset, run_dir.parent, **values))


def test_cli_bad_value_leaves_the_run_unchanged(tiny_dataset, run_copy):
    from tests.train.test_cli import strata

    before = snapshot(run_copy)
    values = {"run.name": "run", "train.seq_len": 4096}
    result = strata(
        "train", "configs/debug.toml", *tiny_overrides(tiny_dataset, run_copy.parent, **values)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "strata: error: train.seq_len = 4096: expected at most model.max_seq_len (256)"
    ]
    assert snapshot(run_copy) == before


def test_vocab_size_below_the_data_is_refused(tiny_dataset, run_copy):
    before = snapshot(run_copy)
    with pytest.raises(ConfigError, match=r"model\.vocab_size = 100: expected at least the data"):
        Trainer(config(tiny_dataset, run_copy, **{"model.vocab_size": 100}))
    assert snapshot(run_copy) == before


@pytest.fixture(scope="module")
def other_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """The same corpus prepared with another tokenizer (a smaller vocabulary)."""
    root = tmp_path_factory.mktemp("other")
    corpus = tiny_dataset.parent / "train.jsonl"
    train_tokenizer([corpus], root / "tok", vocab_size=270)
    prepare([corpus], root / "shards", root / "tok", val_fraction=0.1, progress=False)
    return root / "shards"


def test_data_from_another_tokenizer_is_refused(other_dataset, run_copy):
    before = snapshot(run_copy)
    with pytest.raises(ValueError, match=r"run/tokenizer: the run's tokenizer .* is not the one"):
        Trainer(config(other_dataset, run_copy))
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(("key", "value"), [("n_layers", 3), ("rope_theta", 500.0)])
def test_resume_with_an_incompatible_model_config(tiny_dataset, run_copy, key, value):
    before = snapshot(run_copy)
    with pytest.raises(ValueError, match=rf"cannot resume with changed model\.{key} \("):
        Trainer(config(tiny_dataset, run_copy, **{f"model.{key}": value}))
    assert snapshot(run_copy) == before


def corrupt_val(dataset: Path, tmp_path: Path, value=None) -> Path:
    """A copy of the dataset whose val shard holds `value` (default: a flipped token)."""
    copy = Path(shutil.copytree(dataset, tmp_path / "data"))
    shard = copy / "val-00000.bin"
    tokens = np.fromfile(shard, dtype="<u2")
    tokens[1] = (tokens[1] + 1) % 200 if value is None else value
    tokens.tofile(shard)
    return copy


def test_verify_catches_a_changed_shard_before_training(tiny_dataset, tmp_path):
    data = corrupt_val(tiny_dataset, tmp_path)
    with pytest.raises(ValueError, match=r"val-00000\.bin: sha256 does not match index\.json"):
        Trainer(config(data, tmp_path / "fresh", **{"data.verify": "true"}))
    assert not (tmp_path / "fresh").exists()


def test_token_id_above_the_vocab_is_refused(tiny_dataset, tmp_path):
    vocab = json.loads((tiny_dataset / "index.json").read_text())["vocab_size"]
    data = corrupt_val(tiny_dataset, tmp_path, value=vocab + 5)
    with pytest.raises(ValueError, match=rf"val-00000\.bin: token id {vocab + 5} at token 1 is >="):
        Trainer(config(data, tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()


def test_reliability_doc_names_existing_tests():
    """Every `file::test` in docs/reliability.md is a test function in that file."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "reliability.md").read_text()
    named, file = [], None
    for path, name in re.findall(r"`(?:([\w/]+\.py))?::(\w+)`", text):
        file = path or file  # `::name` continues the previous file
        named.append((file, name))
    assert len(named) > 30
    for path, name in named:
        tree = ast.parse((root / "tests" / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"docs/reliability.md names tests/{path}::{name}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.eps=-1.0", "optim.eps = -1.0: expected a value > 0"),
        ("model.vocab_size=10", "model.vocab_size = 10: expected at least the dataset's"),
        ("train.seed=-1", "train.seed = -1: expected an integer in [0, 2**63 - 1]"),
        ("train.seed=18446744073709551616", "train.seed = 18446744073709551616: expected"),
        ("optim.weight_decay=inf", "optim.weight_decay = inf: expected a finite number"),
        ("model.init_std=inf", "model.init_std = inf: expected a finite number"),
        ("model.rope_theta=nan", "model.rope_theta = nan: expected a finite number"),
    ],
)
def test_bad_settings_fail_before_the_run_folder_exists(
    tiny_dataset, tmp_path, capsys, override, message
):
    """Every setting is checked before anything is written: no run folder, no lock, no
    revision of step 0 (a bad seed once failed only after publishing it)."""
    from strata.cli import main

    overrides = tiny_overrides(tiny_dataset, tmp_path, **{"run.name": "r", "train.max_steps": 2})
    assert main(["train", "configs/debug.toml", *overrides, override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"strata: error: {message}"), err
    assert not (tmp_path / "r").exists()
