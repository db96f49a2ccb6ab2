"""The package graph runs one way (docs/ARCHITECTURE.md): model and tokenizer import
nothing else of ours; run uses only those two; checkpoints never imports train or the
study; the study never imports train; only the CLI (`strata.cli`) imports everything.
Every import is through `strata.`: none of ours is a top-level module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "model": {"model"},
    "tokenizer": {"tokenizer"},
    "run": {"run", "model", "tokenizer"},
    "checkpoints": {"checkpoints", "run", "model", "tokenizer"},
    "study": {"study", "checkpoints", "run", "model", "tokenizer"},
    "train": {"train", "checkpoints", "run", "model", "tokenizer"},
}
OURS = {*ALLOWED, "cli"}


def imports_of(path: Path, package: str) -> set[str]:
    """The packages of ours that the module at `path` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: its own package
            found.add(package)
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.module == "strata":  # from strata import model
                names = [f"strata.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "strata" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in OURS:
                found.add(f"top-level {parts[0]}")
    return found


def graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = imports_of(path, package)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    wrong = {
        module: sorted(found - ALLOWED[package])
        for module, found in graph().items()
        if module.startswith(f"{package}/") and found - ALLOWED[package]
    }
    assert not wrong, f"{package}/ may import only {sorted(ALLOWED[package])}: {wrong}"


def test_the_check_sees_real_imports(tmp_path):
    """The walker is not blind: known edges of the graph are found."""
    edges = graph()
    assert "run" in edges["checkpoints/verify.py"]
    assert "checkpoints" in edges["train/trainer.py"]
    assert imports_of(ROOT / "strata/cli/training.py", "cli") >= {"run", "train"}
    bad = tmp_path / "probe.py"
    bad.write_text("import train.trainer\nfrom strata.train import dist\n")
    assert imports_of(bad, "checkpoints") == {"top-level train", "train"}
