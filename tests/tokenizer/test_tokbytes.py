"""`tokenizer.tokbytes`: the bytes each token stands for, checked against GPT-2's own
alphabet, the `tokenizers` decoder and the UTF-8 bytes of the encoded text."""

from __future__ import annotations

import pytest
from strata.tokenizer import Tokenizer, text_byte_counts, token_bytes
from strata.tokenizer.tokbytes import byte_level_chars, special_ids

TEXTS = ["naïve café — ünïcødé ✓ 😀\r\n", "def f(x):\n\treturn x  # two  spaces", "漢字 ĳ 🤖 ∑"]


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's `bytes_to_unicode` (openai/gpt-2 src/encoder.py), as written there."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def test_alphabet_is_gpt2s():
    tokenizers = pytest.importorskip("tokenizers")
    chars = byte_level_chars()
    assert {b: c for c, b in chars.items()} == gpt2_bytes_to_unicode()
    assert set(chars) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_bytes_of_encoded_text_are_its_utf8(kind, request):
    tok: Tokenizer = request.getfixturevalue(kind)
    table, counts = token_bytes(tok), text_byte_counts(tok)
    assert len(table) == len(counts) == tok.vocab_size
    for text in TEXTS:
        ids = tok.encode(text)
        assert b"".join(table[i] for i in ids) == text.encode("utf-8"), (kind, text)
        assert counts[ids].sum() == len(text.encode("utf-8"))
        with_eos = ids + [tok.eos_id]  # specials: their text in `token_bytes`, 0 counted
        assert b"".join(table[i] for i in with_eos).decode() == tok.decode(with_eos)
        assert counts[with_eos].sum() == len(text.encode("utf-8"))


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_each_token_matches_the_decoder(kind, request):
    tok: Tokenizer = request.getfixturevalue(kind)
    table, counts = token_bytes(tok), text_byte_counts(tok)
    unk = tok.token_to_id("<unk>")  # SentencePiece decodes it as " \u2047 "
    checked = 0
    for i, raw in enumerate(table):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # one byte of a multi-byte character: decodes to U+FFFD alone
        if i != unk:
            assert tok.decode([i]) == text, (kind, i, tok.id_to_token(i))
            checked += 1
    assert checked > 250  # every token but the 128 non-ASCII single bytes
    assert {i for i in range(tok.vocab_size) if counts[i] == 0} == special_ids(tok)
    assert {tok.eos_id, tok.bos_id, tok.pad_id} <= special_ids(tok)


def test_byte_fallback_pieces_are_one_byte(sp):
    fallback = [i for i in range(sp.vocab_size) if sp.id_to_token(i) == "<0xE2>"]
    assert fallback and token_bytes(sp)[fallback[0]] == b"\xe2"
    assert text_byte_counts(sp)[fallback[0]] == 1


def test_added_tokens_are_plain_text(bpe_dir, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    hf.add_tokens(["é x", "é"])  # stored as typed, not in the byte-level alphabet
    hf.add_special_tokens(["<|tool|>"])
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.load(tmp_path)
    table, counts = token_bytes(tok), text_byte_counts(tok)
    added, alone, tool = (tok.token_to_id(t) for t in ("é x", "é", "<|tool|>"))
    assert table[added] == "é x".encode() and counts[added] == 4
    assert table[alone] == "é".encode() and counts[alone] == 2
    assert table[tool] == b"<|tool|>" and counts[tool] == 0
    ids = tok.encode("a é x b é")
    assert {added, alone} <= set(ids) and b"".join(table[i] for i in ids) == "a é x b é".encode()
