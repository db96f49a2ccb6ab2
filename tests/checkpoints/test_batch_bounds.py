"""`strata batch`: a --step past the int64 range of the data order's sample index
(step * global_batch_size + row), a --world that does not divide the global batch and a
--rank outside it are one `strata: error:` line naming the option and the allowed range;
the largest step that fits still shows its batch."""

import json
from pathlib import Path

import pytest
from strata.run.config import dump_toml, load_config

from strata.cli import main
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
G = 4  # train.global_batch_size of tiny_overrides
LAST = 2**63 // G - 1  # (LAST + 1) * G - 1 == 2**63 - 1, the largest int64


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory) -> Path:
    """A run folder holding only its resolved config.toml (all `batch --step` needs)."""
    out = tmp_path_factory.mktemp("bounds")
    cfg = load_config(ROOT / "configs/debug.toml", tiny_overrides(tiny_dataset, out))
    assert cfg.train.global_batch_size == G
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.toml").write_text(dump_toml(cfg))
    return cfg.run_dir


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


STEP_RANGE = f"expected a step in [0, {LAST}] (global_batch_size {G}; "


@pytest.mark.parametrize("step", [-1, LAST + 1, 2**62, 2**63, 10**30])
def test_step_out_of_range_is_one_line(run, capsys, step):
    code, out, err = run_cli(capsys, "batch", str(run), "--step", str(step))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"strata: error: --step {step}: {STEP_RANGE}")
    assert "max_steps 12" in err


def test_largest_step_still_shows_its_batch(run, capsys):
    code, out, err = run_cli(capsys, "batch", str(run), "--step", str(LAST), "--format", "json")
    assert code == 0, err
    got = json.loads(out)
    assert got["step"] == LAST and got["future"] and len(got["rows"]) == G
    assert all(r["epoch"] >= 0 and r["window"] >= 0 for r in got["rows"])


@pytest.mark.parametrize(
    "rank, world, message",
    [
        (0, 0, f"--world 0: expected a divisor of global_batch_size {G}"),
        (0, 3, f"--world 3: expected a divisor of global_batch_size {G}"),
        (0, 2**62, f"--world {2**62}: expected a divisor of global_batch_size {G}"),
        (-1, 2, "--rank -1: expected a rank in [0, 2) (--world 2)"),
        (2, 2, "--rank 2: expected a rank in [0, 2) (--world 2)"),
        (2**63, 4, f"--rank {2**63}: expected a rank in [0, 4) (--world 4)"),
    ],
)
def test_bad_rank_or_world_is_one_line_naming_it(run, capsys, rank, world, message):
    argv = ["batch", str(run), "--step", "1", "--rank", str(rank), "--world", str(world)]
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"strata: error: {message}"]
