"""prepare(): shards, index, validation split, determinism across worker counts."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from strata.tokenizer import Tokenizer, TokenShards, iter_documents, prepare
from strata.tokenizer.prepare import val_hash


def all_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_output_is_byte_identical_for_1_and_2_workers(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path
) -> None:
    kwargs = dict(val_fraction=0.2, shard_tokens=300, progress=False)
    index1 = prepare([corpus_file], tmp_path / "w1", bpe_dir, workers=1, **kwargs)
    index2 = prepare([corpus_file], tmp_path / "w2", bpe_dir, workers=2, **kwargs)
    assert index1 == index2
    files1, files2 = all_files(tmp_path / "w1"), all_files(tmp_path / "w2")
    assert sorted(files1) == sorted(files2) and files1 == files2
    assert len([f for f in files1 if f.startswith("train-")]) > 2  # several shards
    assert sorted(os.listdir(tmp_path)) == ["w1", "w2"]  # no temporary folders left


@pytest.mark.parametrize("name", ["bpe_dir", "sp_dir"])
def test_shards_decode_to_documents_joined_by_eos(
    name: str, request: pytest.FixtureRequest, corpus_file: Path, tmp_path: Path
) -> None:
    tok_dir = request.getfixturevalue(name)
    index = prepare([corpus_file], tmp_path / "ds", tok_dir, shard_tokens=257, progress=False)
    tok = Tokenizer.load(tok_dir)
    docs = list(iter_documents(corpus_file))
    shards = TokenShards(tmp_path / "ds")
    stream = shards.read(0, shards.n_tokens)
    assert tok.decode(stream) == "".join(text + "<|endoftext|>" for text, _ in docs)
    offsets = [start for start, _ in index["splits"]["train"]["documents"]]
    ends = offsets[1:] + [shards.n_tokens]
    for (text, source), start, end, entry in zip(
        docs, offsets, ends, index["splits"]["train"]["documents"], strict=True
    ):
        assert stream[end - 1] == tok.eos_id and entry[1] == source
        assert tok.decode(stream[start : end - 1]) == text
    assert index["splits"]["val"] == {"tokens": 0, "shards": [], "documents": []}


def test_index_contents(corpus_file: Path, bpe_dir: Path, tmp_path: Path) -> None:
    index = prepare([corpus_file], tmp_path / "ds", bpe_dir, shard_tokens=500, progress=False)
    on_disk = json.loads((tmp_path / "ds" / "index.json").read_text())
    assert on_disk == index
    tok = Tokenizer.load(bpe_dir)
    assert index["format_version"] == 1 and index["dtype"] == "uint16"
    assert (index["vocab_size"], index["eos_id"]) == (tok.vocab_size, tok.eos_id)
    assert (
        index["tokenizer_sha256"]
        == tok.sha256()
        == Tokenizer.load(tmp_path / "ds/tokenizer").sha256()
    )
    assert index["text_field"] == "text"
    train = index["splits"]["train"]
    assert all(0 < s["tokens"] <= 500 for s in train["shards"])
    assert sum(s["tokens"] for s in train["shards"]) == train["tokens"]
    for shard in train["shards"]:
        data = np.fromfile(tmp_path / "ds" / shard["file"], dtype="<u2")
        assert len(data) == shard["tokens"]


def test_val_fraction_is_a_stable_hash_of_source_and_ordinal(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path
) -> None:
    index = prepare([corpus_file], tmp_path / "ds", bpe_dir, val_fraction=0.3, progress=False)
    docs = list(iter_documents(corpus_file))
    expected_val = [s for i, (_, s) in enumerate(docs) if val_hash(s, i) < 0.3]
    val_sources = [s for _, s in index["splits"]["val"]["documents"]]
    train_sources = [s for _, s in index["splits"]["train"]["documents"]]
    assert val_sources == expected_val and 0 < len(val_sources) < len(docs)
    assert sorted(val_sources + train_sources) == sorted(s for _, s in docs)
    assert val_hash("a.py", 3) == val_hash("a.py", 3) != val_hash("a.py", 4)


def test_val_inputs(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path, make_docs, write_jsonl
) -> None:
    val_file = write_jsonl(tmp_path / "val.jsonl", make_docs(5))
    index = prepare([corpus_file], tmp_path / "ds", bpe_dir, val_inputs=[val_file], progress=False)
    assert [s for _, s in index["splits"]["val"]["documents"]] == [f"doc{i}.py" for i in range(5)]
    val = TokenShards(tmp_path / "ds", split="val")
    assert val.n_tokens == index["splits"]["val"]["tokens"] > 0


def test_existing_output_needs_overwrite(corpus_file: Path, bpe_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare([corpus_file], out, bpe_dir, progress=False)
    with pytest.raises(FileExistsError, match="already holds a prepared dataset"):
        prepare([corpus_file], out, bpe_dir, progress=False)
    index = prepare([corpus_file], out, bpe_dir, progress=False, overwrite=True, shard_tokens=999)
    assert TokenShards(out).index == index and sorted(os.listdir(tmp_path)) == ["ds"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a prepared dataset"):
        prepare([corpus_file], other, bpe_dir, progress=False, overwrite=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_leaves_nothing_behind(
    bpe_dir: Path, tmp_path: Path, workers: int, make_docs, write_jsonl
) -> None:
    bad = tmp_path / "in" / "bad.jsonl"
    bad.parent.mkdir()
    write_jsonl(bad, make_docs(600) + [{"body": "no text field"}])
    with pytest.raises(ValueError, match="bad.jsonl line 601: missing text field 'text'"):
        prepare([bad], tmp_path / "ds", bpe_dir, workers=workers, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_full_disk_keeps_the_older_dataset_and_a_rerun_succeeds(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from strata.tokenizer.writer import ShardWriter

    from strata.cli import main

    out = tmp_path / "ds"
    prepare([corpus_file], out, bpe_dir, progress=False)
    before = all_files(out)
    real = ShardWriter.write

    def write_then_fill(self, tokens):
        real(self, tokens[: len(tokens) // 2])  # half of it landed, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, like numpy's

    monkeypatch.setattr(ShardWriter, "write", write_then_fill)
    args = ["prepare", str(corpus_file), "--tokenizer", str(bpe_dir), "--out", str(out)]
    assert main([*args, "--overwrite", "--shard-tokens", "999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"strata: error: {out}: No space left"), err
    assert f"{out} is as it was" in err[0]
    assert sorted(os.listdir(tmp_path)) == ["ds"] and all_files(out) == before
    monkeypatch.setattr(ShardWriter, "write", real)  # space freed
    assert main([*args, "--overwrite", "--shard-tokens", "999"]) == 0
    assert TokenShards(out).index["shard_tokens"] == 999 and sorted(os.listdir(tmp_path)) == ["ds"]


def test_argument_errors(corpus_file: Path, bpe_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        prepare([corpus_file], tmp_path / "a", bpe_dir, val_fraction=1.0)
    with pytest.raises(ValueError, match="not both"):
        prepare([corpus_file], tmp_path / "a", bpe_dir, val_inputs=[corpus_file], val_fraction=0.1)
    with pytest.raises(ValueError, match="workers"):
        prepare([corpus_file], tmp_path / "a", bpe_dir, workers=0)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        prepare([corpus_file], tmp_path / "a", tmp_path / "no-tokenizer")


def test_uint32_for_large_vocab(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "tok").mkdir()
    hf.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "c.txt").write_text("w1 w69999 w65536")
    index = prepare([tmp_path / "c.txt"], tmp_path / "ds", tmp_path / "tok", progress=False)
    assert index["dtype"] == "uint32"
    shards = TokenShards(tmp_path / "ds")
    assert shards.read(0, shards.n_tokens).tolist() == [3, 70001, 65538, 0]


def dead_pid() -> int:
    """The id of a process that has exited (what a `kill -9`-ed prepare leaves in names)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_rerun_removes_what_a_killed_prepare_left(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path
) -> None:
    left = tmp_path / f"ds.tmp-{dead_pid()}"  # killed while writing
    (left / "tokenizer").mkdir(parents=True)
    (left / "train-00000.bin").write_bytes(b"\0" * 10)
    kept = ["ds.tmp-notes", "ds.backup", f"other.tmp-{dead_pid()}", f"ds.tmp-{os.getppid()}"]
    for name in kept:  # not prepare's, another --out's, or a running process's
        (tmp_path / name).mkdir()
    (tmp_path / f"ds.tmp-{dead_pid()}.txt").write_text("a user's file")
    (tmp_path / "user").mkdir()
    (tmp_path / f"ds.tmp-{dead_pid()}0").symlink_to(tmp_path / "user")
    before = sorted(p for p in os.listdir(tmp_path) if p != left.name)
    prepare([corpus_file], tmp_path / "ds", bpe_dir, progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "ds"])
    assert TokenShards(tmp_path / "ds").n_tokens > 0
    trash = tmp_path / f"ds.old-{dead_pid()}"  # killed after the final rename
    shutil.copytree(tmp_path / "ds", trash)
    prepare([corpus_file], tmp_path / "ds", bpe_dir, progress=False, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "ds"])


def test_rerun_keeps_the_only_copy_of_a_replaced_dataset(
    corpus_file: Path, bpe_dir: Path, tmp_path: Path
) -> None:
    prepare([corpus_file], tmp_path / "ds", bpe_dir, progress=False)
    old = tmp_path / f"ds.old-{dead_pid()}"  # killed between the two renames
    os.replace(tmp_path / "ds", old)
    prepare([corpus_file], tmp_path / "ds", bpe_dir, progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted(["ds", old.name])
    assert (old / "index.json").is_file()
