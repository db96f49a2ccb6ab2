"""Shared fixtures: a tiny synthetic code-like corpus, tokenizers trained on it once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from strata.tokenizer import Tokenizer, train_tokenizer

SNIPPETS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i, 'even')\n",
    "# comment with  two  spaces and a tab\there\n\n\n",
    "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12345, 2024]\n",
    'text = """Once upon a time, there was a small model."""\n',
    "naïve café — ünïcødé ✓ 😀\r\n",
]


def make_docs(n: int = 60) -> list[dict[str, str]]:
    """Deterministic code-like documents, each made of a few snippets."""
    docs = []
    for i in range(n):
        parts = [SNIPPETS[(i * 3 + k) % len(SNIPPETS)] for k in range(i % 4 + 1)]
        docs.append({"text": f"# doc {i}\n" + "".join(parts), "source": f"doc{i}.py"})
    return docs


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(name="make_docs", scope="session")
def make_docs_fixture():
    return make_docs


@pytest.fixture(name="write_jsonl", scope="session")
def write_jsonl_fixture():
    return write_jsonl


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", make_docs())


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    out = tmp_path_factory.mktemp("tok") / "bpe"
    train_tokenizer([corpus_file], out, kind="bpe", vocab_size=400)
    return out


@pytest.fixture(scope="session")
def sp_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    out = tmp_path_factory.mktemp("tok") / "sp"
    train_tokenizer([corpus_file], out, kind="sentencepiece", vocab_size=400)
    return out


@pytest.fixture(scope="session")
def bpe(bpe_dir: Path) -> Tokenizer:
    return Tokenizer.load(bpe_dir)


@pytest.fixture(scope="session")
def sp(sp_dir: Path) -> Tokenizer:
    return Tokenizer.load(sp_dir)
