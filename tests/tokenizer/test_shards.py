"""TokenShards: reading across shards, windows, documents, size and hash checks."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from strata.tokenizer import TokenShards, prepare


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, bpe_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("shards") / "ds"
    prepare([corpus_file], out, bpe_dir, val_fraction=0.2, shard_tokens=200, progress=False)
    return out


@pytest.fixture()
def copy(dataset: Path, tmp_path: Path) -> Path:
    shutil.copytree(dataset, tmp_path / "ds")
    return tmp_path / "ds"


def concatenated(folder: Path, split: str) -> np.ndarray:
    files = sorted(folder.glob(f"{split}-*.bin"))
    return np.concatenate([np.fromfile(f, dtype="<u2") for f in files]).astype(np.int64)


def test_attributes(dataset: Path) -> None:
    shards = TokenShards(dataset, verify=True)
    assert shards.n_tokens == shards.index["splits"]["train"]["tokens"] == len(shards)
    assert shards.vocab_size == shards.index["vocab_size"]
    assert shards.eos_id == shards.index["eos_id"] and shards.dtype == np.dtype("<u2")
    assert TokenShards(dataset, split="val").n_tokens > 0


def test_read_across_shard_boundaries(dataset: Path) -> None:
    shards = TokenShards(dataset)
    full = concatenated(dataset, "train")
    assert len(full) == shards.n_tokens
    for start, length in [(0, shards.n_tokens), (190, 20), (199, 1), (200, 0), (150, 450), (0, 1)]:
        got = shards.read(start, length)
        assert got.dtype == np.int64 and np.array_equal(got, full[start : start + length])
    with pytest.raises(ValueError, match="cannot read"):
        shards.read(shards.n_tokens - 2, 3)
    with pytest.raises(ValueError, match="cannot read"):
        shards.read(-1, 3)


def test_windows_overlap_by_one_token(dataset: Path) -> None:
    shards = TokenShards(dataset)
    seq_len = 64
    n = shards.n_windows(seq_len)
    assert n == (shards.n_tokens - 1) // seq_len
    full = concatenated(dataset, "train")
    for i in (0, 1, n // 2, n - 1):
        w = shards.window(i, seq_len)
        assert len(w) == seq_len + 1 and np.array_equal(w, full[i * seq_len : i * seq_len + 65])
    assert shards.window(3, seq_len)[-1] == shards.window(4, seq_len)[0]
    assert np.array_equal(shards.window(np.int64(2), seq_len), shards.window(2, seq_len))
    with pytest.raises(ValueError, match="out of range"):
        shards.window(n, seq_len)


def test_dataset_too_small_for_seq_len(dataset: Path) -> None:
    shards = TokenShards(dataset)
    seq_len = shards.n_tokens
    with pytest.raises(
        ValueError,
        match=rf"ds \(train\) is too small for seq_len {seq_len}: "
        rf"{shards.n_tokens} tokens",
    ):
        shards.n_windows(seq_len)
    assert shards.n_windows(seq_len - 1) == 1


def test_document_at(dataset: Path) -> None:
    shards = TokenShards(dataset)
    docs = shards.index["splits"]["train"]["documents"]
    for doc_id, (start, source) in enumerate(docs):
        assert shards.document_at(start) == (doc_id, source)
        if doc_id:
            assert shards.document_at(start - 1) == (doc_id - 1, docs[doc_id - 1][1])
    assert shards.document_at(shards.n_tokens - 1) == (len(docs) - 1, docs[-1][1])
    with pytest.raises(ValueError, match="out of range"):
        shards.document_at(shards.n_tokens)


def test_truncated_shard_is_a_clear_error(copy: Path) -> None:
    shard = copy / "train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"train-00001\.bin: shard is truncated: 398 bytes"):
        TokenShards(copy)


def test_padded_or_missing_shard(copy: Path) -> None:
    shard = copy / "train-00002.bin"
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match=r"train-00002\.bin: shard is wrong size"):
        TokenShards(copy)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"train-00002\.bin: shard listed in index.json"):
        TokenShards(copy)


def test_verify_checks_sha256(copy: Path) -> None:
    shard = copy / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    TokenShards(copy)  # sizes are fine
    with pytest.raises(ValueError, match=r"train-00000\.bin: sha256 does not match"):
        TokenShards(copy, verify=True)


def test_index_errors(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no split 'test'; has \['train', 'val'\]"):
        TokenShards(copy, split="test")
    with pytest.raises(FileNotFoundError, match="no index.json"):
        TokenShards(tmp_path)
    (copy / "index.json").write_text('{"format_version": 99}')
    with pytest.raises(ValueError, match="format_version 99"):
        TokenShards(copy)


def test_pickles_by_path(dataset: Path) -> None:
    shards = TokenShards(dataset)
    blob = pickle.dumps(shards)
    assert len(blob) < 1000
    again = pickle.loads(blob)
    assert np.array_equal(again.read(0, again.n_tokens), shards.read(0, shards.n_tokens))
