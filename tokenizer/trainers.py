"""Tokenizer trainers: documents in, the serialized tokenizer file (bytes) out.

Design choices:
- Both trainers return the exact bytes of the tokenizer file (`tokenizer.json` or
  `tokenizer.model`), so `Tokenizer` is built from, hashes and saves those bytes.
- "bpe": byte-level BPE with Hugging Face `tokenizers`. No normalizer; the
  pre-tokenizer splits every digit on its own, then applies the GPT-2 byte-level
  regex; the initial alphabet is all 256 bytes, so every string encodes and
  `decode(encode(s)) == s` for any valid Python string.
- "sentencepiece": SentencePiece BPE with identity normalization, no extra-space
  removal, no dummy prefix, split digits, byte fallback and whitespace-only pieces.
  SentencePiece trains on "sentences" of bounded length, so documents are cut at
  line boundaries into chunks of at most `SP_SENTENCE_BYTES` (the newlines stay
  inside the chunks, so pieces like ":\\n" and indentation runs are learned).
- Special tokens, identical in both: `<|endoftext|>` (EOS), `<|bos|>` (BOS) and
  `<|pad|>` (PAD); SentencePiece also has `<unk>` (id 0, never produced thanks to
  byte fallback). The ids are 0, 1, 2 for bpe and 2, 1, 3 for sentencepiece.
- `max_bytes` keeps the first documents in input order up to that many UTF-8 bytes
  (the last one truncated at a character boundary): deterministic.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator

from .documents import iter_documents

EOS, BOS, PAD = "<|endoftext|>", "<|bos|>", "<|pad|>"
SPECIAL_TOKENS = (EOS, BOS, PAD)
MIN_VOCAB = 260  # 256 bytes + special tokens
SP_SENTENCE_BYTES = 1 << 14


class TextBudget:
    """Iterate document texts, stopping after `max_bytes` UTF-8 bytes; counts what it saw."""

    def __init__(self, inputs: Iterable, text_field: str, max_bytes: int | None) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        self.inputs, self.text_field, self.max_bytes = list(inputs), text_field, max_bytes
        self.documents = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[str]:
        for text, _source in iter_documents(self.inputs, self.text_field):
            data = text.encode("utf-8")
            if self.max_bytes is not None and self.bytes + len(data) > self.max_bytes:
                data = data[: self.max_bytes - self.bytes]
                text = data.decode("utf-8", errors="ignore")
                data = text.encode("utf-8")
            self.documents += 1
            self.bytes += len(data)
            yield text
            if self.max_bytes is not None and self.bytes >= self.max_bytes:
                return


def train_bpe_bytes(texts: Iterable[str], vocab_size: int) -> bytes:
    """Train byte-level BPE on `texts`; return the `tokenizer.json` bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok.to_str(pretty=True).encode("utf-8")


def sentence_chunks(texts: Iterable[str], max_bytes: int = SP_SENTENCE_BYTES) -> Iterator[str]:
    """Cut each text at line boundaries into chunks of at most `max_bytes` UTF-8 bytes."""
    for text in texts:
        chunk: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if chunk and size + n > max_bytes:
                yield "".join(chunk)
                chunk, size = [], 0
            if n > max_bytes:  # one very long line: cut it by characters
                step = max_bytes // 4  # a character is at most 4 UTF-8 bytes
                yield from (line[i : i + step] for i in range(0, len(line), step))
                continue
            chunk.append(line)
            size += n
        if chunk:
            yield "".join(chunk)


def train_sentencepiece_bytes(texts: Iterable[str], vocab_size: int) -> bytes:
    """Train SentencePiece BPE on `texts`; return the `tokenizer.model` bytes."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentence_chunks(texts),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            byte_fallback=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=SP_SENTENCE_BYTES,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            unk_piece="<unk>",
            bos_piece=BOS,
            eos_piece=EOS,
            pad_piece=PAD,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"sentencepiece training failed (vocab_size={vocab_size}): {e}") from e
    return model.getvalue()
