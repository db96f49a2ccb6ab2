"""Exact UTF-8 byte length of every token: the denominator of bits per byte.

Design choices:
- Each token of the tokenizers Strata trains and imports stands for a fixed byte
  string, so bytes are counted per token, from a table, and the bytes of any span of
  tokens are the sum of its tokens' bytes. This is exact: for every document,
  sum(table[t] for t in encode(text)) == len(text.encode("utf-8")), which decoding
  windows as text is not (a window may cut a multi-byte character in two).
- Byte-level BPE (a `tokenizer.json` whose decoder is ByteLevel: GPT-2, Pythia,
  Llama 3 and Strata's own): every character of a token's string stands for one byte
  (GPT-2's bytes_to_unicode alphabet), so a token is `len(string)` bytes.
- Other tokenizers (SentencePiece, Metaspace BPE): "▁" is one space byte, a byte
  fallback piece `<0xAB>` is one byte, any other piece its UTF-8 length. A
  SentencePiece model that adds a dummy prefix counts that one space per document.
- Special tokens (EOS, BOS, PAD, `<unk>`, tokens marked special) are 0 bytes: they are
  not text. Their loss still counts in the numerator (see evaluate.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from strata.tokenizer import Tokenizer

BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_level_alphabet() -> set[str]:
    """The 256 characters GPT-2's byte-level BPE uses for the 256 byte values."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [256 + n for n in range(256 - len(printable))]
    return {chr(c) for c in printable + extra}


def _tokenizer_json(folder: Path) -> dict:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _is_byte_level(spec: dict) -> bool:
    decoder = spec.get("decoder") or {}
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    return any(part.get("type") == "ByteLevel" for part in parts)


def _special_ids(tok: Tokenizer, spec: dict) -> set[int]:
    ids = {tok.eos_id, tok.bos_id, tok.pad_id}
    ids |= {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
    unk = tok.token_to_id("<unk>")
    return ids | ({unk} if unk is not None else set())


def _piece_bytes(piece: str) -> int:
    if BYTE_FALLBACK.fullmatch(piece):
        return 1
    return len(piece.replace("\u2581", " ").encode("utf-8"))


def token_bytes(tokenizer_dir: str | Path) -> np.ndarray:
    """int64 array: UTF-8 bytes of each token id of the tokenizer in `tokenizer_dir`."""
    folder = Path(tokenizer_dir)
    tok = Tokenizer.load(folder)
    spec = _tokenizer_json(folder) if tok.kind == "bpe" else {}
    byte_level = _is_byte_level(spec)
    alphabet = byte_level_alphabet()
    special = _special_ids(tok, spec)
    added = {int(t["id"]) for t in spec.get("added_tokens", [])}  # stored as plain text
    out = np.zeros(tok.vocab_size, dtype=np.int64)
    for i in range(tok.vocab_size):
        piece = tok.id_to_token(i)
        if i in special or piece is None:
            continue
        if byte_level and i not in added and all(ch in alphabet for ch in piece):
            out[i] = len(piece)
        else:
            out[i] = _piece_bytes(piece)
    return out
