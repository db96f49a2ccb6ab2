"""`strata corpus`, `strata tokenizer train`, `strata prepare`: text in, token shards out.

The work is done by `strata.tokenizer`; this module only declares the options and calls it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build a built-in corpus")
    p.add_argument("name", choices=["stdlib"], help="stdlib: the Python standard library")
    p.add_argument("--out", required=True, help="output folder (train.jsonl, val.jsonl)")
    p.add_argument("--val-every", type=int, default=50, help="every k-th file is validation")
    p.set_defaults(func=cmd_corpus)


def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on text files")
    t.add_argument("inputs", nargs="+", help=".txt/.jsonl(.gz/.zst)/.parquet files or folders")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--kind", choices=["bpe", "sentencepiece"], default="bpe")
    t.add_argument("--vocab-size", type=int, default=4096)
    t.add_argument("--text-field", default="text", help="field holding the text in jsonl/parquet")
    t.add_argument("--max-bytes", type=int, default=None, help="train on at most this much text")
    t.set_defaults(func=cmd_tokenizer_train)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="tokenize corpora into token shards")
    p.add_argument("inputs", nargs="+", help="training corpus files or folders")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder or file")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--val", nargs="*", default=None, help="validation corpus files")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="without --val: hold out this fraction of documents",
    )
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--text-field", default="text")
    p.add_argument("--shard-tokens", type=int, default=2**24, help="tokens per shard file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=cmd_prepare)


def cmd_corpus(args: argparse.Namespace) -> None:
    from strata.tokenizer import build_stdlib_corpus

    build_stdlib_corpus(Path(args.out), val_every=args.val_every)  # prints its summary


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from strata.tokenizer import train_tokenizer

    train_tokenizer(  # prints its summary
        args.inputs,
        Path(args.out),
        kind=args.kind,
        vocab_size=args.vocab_size,
        text_field=args.text_field,
        max_bytes=args.max_bytes,
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from strata.tokenizer import prepare

    prepare(  # prints its summary
        args.inputs,
        Path(args.out),
        Path(args.tokenizer),
        val_inputs=args.val,
        val_fraction=args.val_fraction,
        workers=args.workers,
        text_field=args.text_field,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for add in (_add_corpus, _add_tokenizer, _add_prepare):
        add(sub)
