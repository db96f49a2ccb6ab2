"""The bytes each token stands for: one table for byte-level text search (provenance)
and for the denominator of bits per byte (study).

Design choices:
- Each token of the tokenizers Strata trains and imports stands for a fixed byte
  string, so the bytes of any span of tokens are its tokens' bytes laid end to end.
  This is exact: for every document, the bytes of `encode(text)` are
  `text.encode("utf-8")`, which decoding windows as text is not (a window may cut a
  multi-byte character in two).
- Byte-level BPE (a `tokenizer.json` whose decoder is ByteLevel: GPT-2, Pythia,
  Llama 3 and Strata's own): every character of a token's string stands for one byte
  (GPT-2's bytes_to_unicode alphabet, `byte_level_chars`). Added tokens are stored as
  plain text, not in that alphabet.
- Other tokenizers (SentencePiece, Metaspace BPE, added tokens): "▁" is one space
  byte, a byte fallback piece `<0xAB>` is that one byte, any other piece its UTF-8
  text. A SentencePiece model that adds a dummy prefix counts that one space per
  document.
- `token_bytes` keeps special tokens (EOS, BOS, PAD, `<unk>`, tokens marked special)
  as their text, the way `Tokenizer.decode` renders them, so a table can be checked
  against the decoder. `text_byte_counts` counts them as 0 bytes: they are not text.
- Built from the `Tokenizer` alone (its file's bytes); no other Strata package, no torch.
"""

from __future__ import annotations

import functools
import json
import re

import numpy as np

from .tok import Tokenizer

BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def byte_level_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet: each of its 256 characters -> the byte it stands for."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    moved = [b for b in range(256) if b not in keep]
    return {chr(b): b for b in keep} | {chr(256 + k): b for k, b in enumerate(moved)}


def _spec(tok: Tokenizer) -> dict:
    """The parsed `tokenizer.json` of a "bpe" tokenizer, else {} (same package: the
    file's bytes are the Tokenizer's own `_data`)."""
    return json.loads(tok._data.decode("utf-8")) if tok.kind == "bpe" else {}


def _is_byte_level(spec: dict) -> bool:
    decoder = spec.get("decoder") or {}
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    return any(part.get("type") == "ByteLevel" for part in parts)


def _piece_bytes(piece: str) -> bytes:
    if m := BYTE_FALLBACK.fullmatch(piece):
        return bytes([int(m[1], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def token_bytes(tok: Tokenizer) -> list[bytes]:
    """The bytes of text each token id stands for; special tokens as their own text."""
    spec = _spec(tok)
    chars = byte_level_chars() if _is_byte_level(spec) else {}
    added = {int(t["id"]) for t in spec.get("added_tokens", [])}  # stored as plain text
    out = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_token(i) or ""
        if chars and i not in added and all(c in chars for c in piece):
            out.append(bytes(chars[c] for c in piece))
        else:
            out.append(_piece_bytes(piece))
    return out


def special_ids(tok: Tokenizer) -> set[int]:
    """EOS, BOS, PAD, `<unk>` and every added token marked special: not text."""
    ids = {tok.eos_id, tok.bos_id, tok.pad_id}
    ids |= {int(t["id"]) for t in _spec(tok).get("added_tokens", []) if t.get("special")}
    unk = tok.token_to_id("<unk>")
    return ids | ({unk} if unk is not None else set())


def text_byte_counts(tok: Tokenizer) -> np.ndarray:
    """(vocab_size,) int64: UTF-8 bytes of text each token id stands for; specials 0."""
    out = np.array([len(b) for b in token_bytes(tok)], dtype=np.int64)
    out[sorted(special_ids(tok))] = 0
    return out
