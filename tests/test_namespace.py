"""One import name: a user's own model.py, train.py, tokenizer.py, checkpoints.py (and
study.py, run.py) beside them never replace Strata's packages, because the installed
distribution exposes exactly one top-level name, `strata`."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
USER_MODULES = ("model", "train", "tokenizer", "checkpoints", "study", "run")


def test_the_distribution_has_one_top_level_name():
    dist = importlib.metadata.distribution("strata")
    assert (dist.read_text("top_level.txt") or "").split() == ["strata"]
    scripts = [ep.value for ep in dist.entry_points if ep.group == "console_scripts"]
    assert scripts == ["strata.cli:main"]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A researcher's folder holding modules with the names of Strata's packages; each
    one fails loudly if anything imports it."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in USER_MODULES:
        (folder / f"{name}.py").write_text(f"raise SystemExit('the user\\'s {name}.py ran')\n")
    return folder


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the install alone
    env |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    script = Path(sys.executable).with_name("strata")
    cmd = [str(script), *args] if script.is_file() else [sys.executable, "-m", "strata.cli", *args]
    if args[0] == "-c":
        cmd = [sys.executable, *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    return result


def test_user_modules_do_not_shadow_strata(user_folder: Path, tiny_dataset: Path):
    out = user_folder / "runs"
    values = {"run.name": "shadow", "train.max_steps": 2, "publish.every": 2, "log.every": 1}
    _run(["train", str(ROOT / "configs/debug.toml"), *tiny_overrides(tiny_dataset, out, **values)],
         user_folder)  # fmt: skip
    run = out / "shadow"
    assert (run / "checkpoints" / "step2" / "strata.json").is_file()
    _run(["study", str(run), "--eval-windows", "4", "--mem-samples", "4", "--quiet"], user_folder)
    assert (run / "study" / "report.html").is_file()
    code = (
        "import strata.checkpoints as c, strata.model as m\n"
        "from strata.checkpoints import load\n"
        f"model = load({str(run / 'checkpoints' / 'step2')!r})\n"
        "print(c.__file__); print(m.__file__); print(type(model).__module__)\n"
    )
    lines = _run(["-c", code], user_folder).stdout.split()
    assert Path(lines[0]) == ROOT / "checkpoints" / "__init__.py"
    assert Path(lines[1]) == ROOT / "model" / "__init__.py"
    assert lines[2] == "strata.model.transformer"


def test_no_top_level_package_of_ours_is_importable(tmp_path: Path):
    """From an empty folder, `import model` (or train, ...) finds nothing of Strata's."""
    code = (
        "import importlib.util\n"
        f"print([n for n in {list(USER_MODULES)!r} if importlib.util.find_spec(n)])\n"
    )
    assert _run(["-c", code], tmp_path).stdout.strip() == "[]"
