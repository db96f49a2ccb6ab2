"""Size limits of the style guide (docs/ARCHITECTURE.md): no file of the packages past
400 lines, no function past 60, and every module states its design in a docstring."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "tokenizer", "run", "checkpoints", "study", "train", "strata")
MAX_FILE, MAX_FUNCTION = 400, 60


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_walk_finds_the_packages():
    names = {str(p.relative_to(ROOT)) for p in modules()}
    assert {"train/trainer.py", "run/layout.py", "strata/cli/__init__.py"} <= names


def test_files_and_functions_stay_small():
    too_long = []
    for path in modules():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_FILE:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_every_module_has_a_docstring():
    missing = [
        str(p.relative_to(ROOT))
        for p in modules()
        if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, missing
