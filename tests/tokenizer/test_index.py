"""A malformed `index.json` is a one-line ValueError naming the file, the key and what was
expected, raised when the index is read (never a KeyError or TypeError later)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from strata.tokenizer import TokenShards, prepare
from strata.tokenizer.shards import load_index

GONE = object()  # the key is deleted
SHARD, DOC = ("splits", "train", "shards", 0), ("splits", "train", "documents", 0)
CASES = [
    (("vocab_size",), GONE, r"key 'vocab_size': expected a positive integer, got nothing"),
    (("vocab_size",), "x", r"key 'vocab_size': expected a positive integer, got 'x'"),
    (("vocab_size",), True, r"key 'vocab_size': expected a positive integer, got True"),
    (("vocab_size",), 0, r"key 'vocab_size': expected a positive integer, got 0"),
    (("eos_id",), GONE, r"key 'eos_id': expected an integer in \[0, 400\), got nothing"),
    (("eos_id",), 400, r"key 'eos_id': expected an integer in \[0, 400\), got 400"),
    (("eos_id",), 1.0, r"key 'eos_id': expected an integer in \[0, 400\), got 1\.0"),
    (("tokenizer_sha256",), GONE, r"key 'tokenizer_sha256': expected a sha256 hex string"),
    (("tokenizer_sha256",), 7, r"key 'tokenizer_sha256': expected a sha256 hex string .*, got 7"),
    (("format_version",), True, r"format_version True, expected 1"),
    (("splits",), GONE, r"key 'splits': expected an object \(split name -> split\), got nothing"),
    (("splits",), [], r"key 'splits': expected an object \(split name -> split\), got \[\]"),
    (("splits", "train"), 3, r"key 'splits\.train': expected an object, got 3"),
    (("splits", "train", "tokens"), "9", r"'splits\.train\.tokens': expected a non-negative int"),
    (("splits", "train", "shards"), {}, r"'splits\.train\.shards': expected a list, got \{\}"),
    ((*SHARD, "tokens"), GONE, r"'splits\.train\.shards\[0\]\.tokens': expected a non-negative"),
    ((*SHARD, "tokens"), -1, r"'splits\.train\.shards\[0\]\.tokens': expected a non-negative"),
    ((*SHARD, "file"), GONE, r"'splits\.train\.shards\[0\]\.file': expected a file name inside"),
    ((*SHARD, "file"), "../x.bin", r"\.file': expected a file name inside .*, got '\.\./x\.bin'"),
    ((*SHARD, "sha256"), None, r"'splits\.train\.shards\[0\]\.sha256': expected a sha256 hex"),
    (SHARD, "train-00000.bin", r"'splits\.train\.shards\[0\]': expected an object, got 'train-"),
    (("splits", "val", "documents"), GONE, r"key 'splits\.val\.documents': expected a list"),
    (DOC, ["0", "doc0.py"], r"'splits\.train\.documents\[0\]': expected \[first token, source\]"),
    (DOC, [True, "doc0.py"], r"documents\[0\]': expected \[first token, source\].*got \[True"),
    (DOC, [0], r"'splits\.train\.documents\[0\]': expected \[first token, source\]"),
]
IDS = [f"{i}-{'.'.join(map(str, key))}" for i, (key, _, _) in enumerate(CASES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, bpe_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("index") / "ds"
    prepare([corpus_file], out, bpe_dir, val_fraction=0.2, shard_tokens=200, progress=False)
    return out


def written(dataset: Path, tmp_path: Path, index: Any) -> Path:
    copy = Path(shutil.copytree(dataset, tmp_path / "ds"))
    (copy / "index.json").write_text(json.dumps(index))
    return copy


def raises(folder: Path, match: str) -> None:
    for read in (load_index, TokenShards):
        with pytest.raises(ValueError, match=match) as err:
            read(folder)
        assert str(err.value).startswith(f"{folder / 'index.json'}: ")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("key", "value", "match"), CASES, ids=IDS)
def test_malformed_index_names_the_key(dataset, tmp_path, key, value, match) -> None:
    index = json.loads((dataset / "index.json").read_text())
    assert index["vocab_size"] == 400
    parent = index
    for k in key[:-1]:
        parent = parent[k]
    if value is GONE:
        del parent[key[-1]]
    else:
        parent[key[-1]] = value
    raises(written(dataset, tmp_path, index), match)


def test_index_that_is_not_an_object(dataset: Path, tmp_path: Path) -> None:
    raises(written(dataset, tmp_path, [1, 2]), r"expected a JSON object at the top, got a list")


def test_well_formed_index_still_reads(dataset: Path) -> None:
    assert load_index(dataset)["vocab_size"] == TokenShards(dataset).vocab_size == 400
