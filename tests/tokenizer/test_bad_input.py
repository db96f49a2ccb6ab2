"""Bad input to `prepare` and to the shard reader: one-line errors naming the file, the
line or the value, and nothing already written is changed.

The non-UTF-8 policy (docs/reliability.md): a user's corpus is decoded as strict UTF-8;
bytes that are not UTF-8, and JSON escapes that decode to lone surrogates, are an error
naming the file and line, the same in tokenizer training and in `prepare` whatever the
number of workers. Only the embedded stdlib corpus skips (and counts) the few
deliberately mis-encoded files the standard library ships.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from strata.tokenizer import TokenShards, prepare, train_tokenizer


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, corpus_file: Path, bpe_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("bad") / "ds"
    prepare([corpus_file], out, bpe_dir, val_fraction=0.2, shard_tokens=200, progress=False)
    return out


@pytest.fixture
def existing(dataset: Path, tmp_path: Path) -> Path:
    """A complete dataset that a failed `prepare(..., overwrite=True)` must leave alone."""
    return Path(shutil.copytree(dataset, tmp_path / "existing"))


def refused(inputs, out: Path, tokenizer: Path, match: str, **kwargs) -> None:
    before = snapshot(out)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        prepare(inputs, out, tokenizer, overwrite=True, progress=False, **kwargs)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before
    assert not list(out.parent.glob(f"{out.name}.tmp-*"))


def test_missing_or_empty_corpus(tmp_path: Path, existing: Path, bpe_dir: Path) -> None:
    refused([tmp_path / "nope.jsonl"], existing, bpe_dir, r"nope\.jsonl: input file or directory")
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty"], existing, bpe_dir, r"no documents found in inputs .*empty")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    refused([tmp_path / "blank.jsonl"], existing, bpe_dir, r"no documents found .*blank\.jsonl")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n{"text": ""}\n')
    inputs = [tmp_path / "empty.txt", tmp_path / "e.jsonl"]
    refused(inputs, existing, bpe_dir, r"no text in inputs .*empty\.txt.*all 3 documents are empty")
    with pytest.raises(ValueError, match="no text in inputs"):
        train_tokenizer(inputs, tmp_path / "tok", vocab_size=300)
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_non_utf8_is_refused_naming_file_and_line(tmp_path, existing, bpe_dir, workers) -> None:
    good = json.dumps({"text": "fine"}) + "\n"
    (tmp_path / "latin.jsonl").write_bytes(good.encode() + b'{"text": "caf\xe9"}\n')
    match = r"latin\.jsonl line 2: not valid UTF-8"
    refused([tmp_path / "latin.jsonl"], existing, bpe_dir, match, workers=workers)
    (tmp_path / "lone.jsonl").write_text(good + '{"text": "a\\ud800b"}\n')
    match = r"lone\.jsonl line 2: text holds a lone surrogate '\\ud800' at character 1"
    refused([tmp_path / "lone.jsonl"], existing, bpe_dir, match, workers=workers)
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    refused([tmp_path / "latin.txt"], existing, bpe_dir, r"latin\.txt: not valid UTF-8")


def test_tokenizer_training_applies_the_same_policy(tmp_path: Path) -> None:
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin\.jsonl line 1: not valid UTF-8"):
        train_tokenizer([tmp_path / "latin.jsonl"], tmp_path / "tok", vocab_size=300)
    assert not (tmp_path / "tok").exists()


def test_corrupt_or_truncated_gzip(tmp_path: Path, existing: Path, bpe_dir: Path) -> None:
    data = gzip.compress(b'{"text": "hello"}\n' * 200)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    refused([tmp_path / "cut.jsonl.gz"], existing, bpe_dir, r"cut\.jsonl\.gz: corrupt or truncated")
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip at all")
    refused([tmp_path / "junk.jsonl.gz"], existing, bpe_dir, r"junk\.jsonl\.gz: corrupt or trunc")


def test_shard_not_a_multiple_of_its_dtype(existing: Path) -> None:
    shard = existing / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"train-00000\.bin: shard is truncated \(not a multiple"):
        TokenShards(existing)


def test_shard_sha256_differs_from_the_index(existing: Path) -> None:
    shard = existing / "val-00000.bin"
    tokens = np.fromfile(shard, dtype="<u2")
    tokens[3] = (tokens[3] + 1) % 300
    tokens.tofile(shard)
    with pytest.raises(ValueError, match=r"val-00000\.bin: sha256 does not match index\.json"):
        TokenShards(existing, "val", verify=True)


def test_token_id_at_or_above_vocab_size(existing: Path) -> None:
    shard = existing / "train-00001.bin"
    vocab = json.loads((existing / "index.json").read_text())["vocab_size"]
    tokens = np.fromfile(shard, dtype="<u2")
    tokens[7] = vocab
    tokens.tofile(shard)
    shards = TokenShards(existing)  # sizes are fine; the bad id is found when read
    start = int(shards._starts[1])
    with pytest.raises(ValueError, match=rf"train-00001\.bin: token id {vocab} at token 7 is >="):
        shards.read(start, 10)
    window = (start + 7) // 16
    with pytest.raises(ValueError, match=rf"is >= vocab_size {vocab} of .*index\.json"):
        shards.window(window, 16)
    shards.read(start + 8, 10)  # the rest of the shard reads fine


def test_dataset_tokenizer_differs_from_the_index(existing: Path, sp_dir: Path) -> None:
    shutil.copy(sp_dir / "tokenizer.model", existing / "tokenizer" / "tokenizer.json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: sha256 \w+ is not the tokenizer_sha"):
        TokenShards(existing)


def test_cli_prepare_error_is_one_line(tmp_path: Path, existing: Path, bpe_dir: Path) -> None:
    from tests.train.test_cli import strata

    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    before = snapshot(existing)
    result = strata(
        "prepare", str(tmp_path / "latin.jsonl"), "--tokenizer", str(bpe_dir),
        "--out", str(existing), "--overwrite", "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "latin.jsonl line 1: not valid UTF-8" in lines[0], lines
    assert snapshot(existing) == before


def test_input_inside_the_output_folder_is_refused(
    tmp_path: Path, existing: Path, corpus_file: Path, bpe_dir: Path
) -> None:
    inside = Path(shutil.copy(corpus_file, existing / "corpus.jsonl"))
    match = rf"corpus\.jsonl: input lies inside the output folder {existing}"
    refused([inside], existing, bpe_dir, match)
    refused([corpus_file], existing, bpe_dir, match, val_inputs=[inside])
    refused([existing / "tokenizer" / ".." / "corpus.jsonl"], existing, bpe_dir, match)
    (tmp_path / "link.jsonl").symlink_to(inside)
    refused([tmp_path / "link.jsonl"], existing, bpe_dir, r"link\.jsonl: input lies inside")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").symlink_to(inside)  # a folder input's file
    refused([tmp_path / "in"], existing, bpe_dir, r"in/a\.jsonl: input lies inside")
    refused([existing], existing, bpe_dir, rf"{existing}: input lies inside the output folder")


def test_cli_input_inside_the_output_folder_is_one_line(
    existing: Path, corpus_file: Path, bpe_dir: Path
) -> None:
    from tests.train.test_cli import strata

    inside = shutil.copy(corpus_file, existing / "corpus.jsonl")
    before = snapshot(existing)
    result = strata(
        "prepare", str(inside), "--tokenizer", str(bpe_dir),
        "--out", str(existing), "--overwrite", "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "corpus.jsonl: input lies inside the output folder" in lines[0]
    assert snapshot(existing) == before
