"""Strata tokenizer package: tokenizers, the default corpus, token shards, data order.

The owner of tokens on disk: training and loading tokenizers (`tok`), building the
embedded stdlib corpus and reading raw corpora (`corpus`), tokenizing corpora into
flat token shards (`prepare`), reading them back (`shards`), the bytes each token
stands for (`tokbytes`) and the data-order contract that says which windows form
global batch N and which are validated on (`order`). Uses no other Strata package
and never imports torch.
"""

from .corpus import build_stdlib_corpus, iter_documents, stdlib_files
from .order import (
    batch_digest,
    batch_window_indices,
    rank_slice,
    row_digests,
    validation_windows,
)
from .prepare import prepare
from .shards import TokenShards
from .tok import Tokenizer, train_tokenizer
from .tokbytes import text_byte_counts, token_bytes

__all__ = [
    "TokenShards",
    "Tokenizer",
    "batch_digest",
    "batch_window_indices",
    "build_stdlib_corpus",
    "iter_documents",
    "prepare",
    "rank_slice",
    "row_digests",
    "stdlib_files",
    "text_byte_counts",
    "token_bytes",
    "train_tokenizer",
    "validation_windows",
]
