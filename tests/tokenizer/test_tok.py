"""Tokenizer training, loading, saving, round trips and Hugging Face compatibility."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strata.tokenizer import Tokenizer, train_tokenizer
from strata.tokenizer.trainers import EOS, TextBudget, sentence_chunks

FRAGMENTS = [
    " ",
    "  ",
    "    ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "def ",
    "return",
    "x",
    "_y",
    "(",
    ")",
    ":",
    "=",
    "0",
    "7",
    "42",
    "12345",
    "é",
    "😀",
    "#",
    "'",
    '"',
]
code_like = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
whitespace_digits = st.text(alphabet=" \t\n\r\x0b\x0c0123456789", max_size=60)
no_sp_marker = st.text(st.characters(codec="utf-8", exclude_characters="\u2581"), max_size=80)

SETTINGS = settings(max_examples=300, deadline=None)


# -- round trips ---------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=80))
def test_bpe_round_trip_any_text(bpe: Tokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


@SETTINGS
@given(st.one_of(code_like, whitespace_digits))
def test_bpe_round_trip_code_and_whitespace(bpe: Tokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


@SETTINGS
@given(no_sp_marker)
def test_sentencepiece_round_trip_any_text_without_marker(sp: Tokenizer, s: str) -> None:
    assert sp.decode(sp.encode(s)) == s


@SETTINGS
@given(st.one_of(code_like, whitespace_digits))
def test_sentencepiece_round_trip_code_and_whitespace(sp: Tokenizer, s: str) -> None:
    assert sp.decode(sp.encode(s)) == s


def test_sentencepiece_space_marker_limitation(sp: Tokenizer) -> None:
    # documented: U+2581 is SentencePiece's space marker and decodes to a space
    assert sp.decode(sp.encode("a\u2581b")) == "a b"


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_indentation_survives_exactly(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    s = "class A:\n    def f(self):\n\t\treturn  1\n\n\n        \n  \t \n"
    assert tok.decode(tok.encode(s)) == s


# -- vocabulary and special tokens -----------------------------------------------------


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_digits_are_split(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    ids = tok.encode("12345")
    assert len(ids) == 5
    assert [tok.decode([i]) for i in ids] == list("12345")


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_special_tokens(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    assert len({tok.eos_id, tok.bos_id, tok.pad_id}) == 3
    assert tok.token_to_id("<|endoftext|>") == tok.eos_id
    assert tok.token_to_id("<|bos|>") == tok.bos_id
    assert tok.token_to_id("<|pad|>") == tok.pad_id
    assert all(0 <= i < tok.vocab_size for i in (tok.eos_id, tok.bos_id, tok.pad_id))
    assert tok.decode([tok.bos_id, tok.eos_id, tok.pad_id]) == "<|bos|><|endoftext|><|pad|>"


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_encode_adds_nothing_and_treats_special_strings_as_text(
    name: str, request: pytest.FixtureRequest
) -> None:
    tok = request.getfixturevalue(name)
    assert tok.encode("") == []
    s = f"a{EOS}b<|bos|>"
    ids = tok.encode(s)
    assert tok.eos_id not in ids and tok.bos_id not in ids
    assert tok.decode(ids) == s
    texts = ["x = 1\n", "", "  \t12"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_invalid_text_errors(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("ok\ud800")
    with pytest.raises(ValueError, match="text 1: not valid Unicode"):
        tok.encode_batch(["ok", "\udfff"])
    with pytest.raises(TypeError, match="expected str"):
        tok.encode_batch(["ok", 3])


def test_decode_rejects_out_of_range_ids(bpe: Tokenizer) -> None:
    with pytest.raises(ValueError, match="token id 100000"):
        bpe.decode([1, 100000])


def test_kinds_and_vocab(bpe: Tokenizer, sp: Tokenizer) -> None:
    assert (bpe.kind, sp.kind) == ("bpe", "sentencepiece")
    assert 260 <= bpe.vocab_size <= 400 and 260 <= sp.vocab_size <= 400


# -- loading and saving ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "file"), [("bpe_dir", "tokenizer.json"), ("sp_dir", "tokenizer.model")]
)
def test_load_dir_or_file(name: str, file: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(name)
    a, b = Tokenizer.load(folder), Tokenizer.load(folder / file)
    assert a.sha256() == b.sha256() and a.vocab_size == b.vocab_size
    assert a.encode("def f(x):\n\treturn 42") == b.encode("def f(x):\n\treturn 42")


def test_sha256_survives_save_and_reload(bpe: Tokenizer, sp: Tokenizer, tmp_path: Path) -> None:
    for tok in (bpe, sp):
        written = tok.save(tmp_path / tok.kind)
        assert "tokenizer_config.json" in written and "special_tokens_map.json" in written
        assert Tokenizer.load(tmp_path / tok.kind).sha256() == tok.sha256()
        assert len(tok.sha256()) == 64


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        Tokenizer.load(tmp_path)
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="vocab.txt"):
        Tokenizer.load(tmp_path / "vocab.txt")


def test_corrupt_files_and_pickle(bpe: Tokenizer, sp: Tokenizer, tmp_path: Path) -> None:
    import pickle

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer.json file"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="tokenizer.model: not a valid tokenizer.model file"):
        Tokenizer.load(tmp_path / "tokenizer.model")
    for tok in (bpe, sp):
        again = pickle.loads(pickle.dumps(tok))
        assert again.sha256() == tok.sha256() and again.encode("a = 1") == tok.encode("a = 1")


def test_load_foreign_tokenizer_json(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    hf = HFTokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "hello": 2}, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.load(tmp_path)
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (1, 1, 1)  # BOS/PAD fall back to EOS
    hf = HFTokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    hf.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="no EOS token"):
        Tokenizer.load(tmp_path)


def test_config_names_special_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    hf = HFTokenizer(models.WordLevel({"<unk>": 0, "[END]": 1, "[START]": 2}, unk_token="<unk>"))
    hf.save(str(tmp_path / "tokenizer.json"))
    config = {"eos_token": "[END]", "bos_token": {"content": "[START]"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.load(tmp_path)
    assert (tok.eos_id, tok.bos_id) == (1, 2)


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_autotokenizer_loads_saved_folder(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    tok: Tokenizer = request.getfixturevalue(name)
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.eos_token_id, hf.bos_token_id, hf.pad_token_id) == (
        tok.eos_id,
        tok.bos_id,
        tok.pad_id,
    )
    texts = ["def f(x):\n    return x + 12345\n", "  \t\tindent\n\n", "naïve café 😀", "a  b   c"]
    for text in texts:
        assert hf.encode(text) == tok.encode(text), text
        assert hf.decode(tok.encode(text)) == text


# -- training -------------------------------------------------------------------------


def test_training_is_deterministic(corpus_file: Path, bpe: Tokenizer, tmp_path: Path) -> None:
    again = train_tokenizer([corpus_file], tmp_path / "again", kind="bpe", vocab_size=400)
    assert again.sha256() == bpe.sha256()


def test_train_writes_atomically_and_refuses_existing(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    train_tokenizer([corpus_file], out, vocab_size=300)
    assert sorted(os.listdir(tmp_path)) == ["tok"]  # no temporary folder left behind
    with pytest.raises(FileExistsError, match="overwrite=True"):
        train_tokenizer([corpus_file], out, vocab_size=300)
    tok = train_tokenizer([corpus_file], out, vocab_size=280, overwrite=True)
    assert tok.vocab_size == 280 and sorted(os.listdir(tmp_path)) == ["tok"]


def test_train_argument_errors(corpus_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer([corpus_file], tmp_path / "a", kind="wordpiece")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer([corpus_file], tmp_path / "b", vocab_size=100)
    with pytest.raises(ValueError, match="max_bytes"):
        train_tokenizer([corpus_file], tmp_path / "c", vocab_size=300, max_bytes=0)


def test_max_bytes_takes_first_documents(corpus_file: Path) -> None:
    budget = TextBudget([corpus_file], "text", max_bytes=500)
    texts = list(budget)
    assert budget.bytes == 500 == sum(len(t.encode()) for t in texts)
    full = [t for t in TextBudget([corpus_file], "text", None)]
    assert texts[:-1] == full[: len(texts) - 1] and full[len(texts) - 1].startswith(texts[-1])
    assert list(TextBudget([corpus_file], "text", max_bytes=500)) == texts


def test_sentence_chunks_cover_text() -> None:
    text = "short line\n" * 50 + "x" * 300 + "\nend"
    chunks = list(sentence_chunks([text], max_bytes=64))
    assert "".join(chunks) == text
    assert all(len(c.encode()) <= 64 for c in chunks)


def test_package_imports_no_torch_or_other_strata_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tokenizer; "
        "bad = [m for m in ('torch', 'model', 'train', 'checkpoints') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
