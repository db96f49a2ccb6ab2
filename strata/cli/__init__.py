"""strata: pretrain language models, publish checkpoints on a schedule, study them.

The `strata` command is the one place that wires every package of Strata together:
each subcommand lives in a module here (`data`, `training`, `weights`, `ledger`,
`study`) that declares its options and calls the package that does the work.

    strata corpus stdlib --out DIR          build the embedded default corpus
    strata tokenizer train --out DIR FILES  train a BPE or SentencePiece tokenizer
    strata prepare --tokenizer DIR --out DIR FILES   tokenize corpora into shards
    strata train CONFIG.toml [section.key=value ...] pretrain
    strata config CONFIG.toml [overrides] [--get K]  print the resolved config
    strata export CKPT --to hf --out DIR    checkpoint -> Hugging Face folder
    strata import HF_DIR --out CKPT         Hugging Face folder -> Strata checkpoint
    strata generate CKPT --prompt TEXT      sample text (KV cache; temperature 0 = greedy)
    strata batch RUN --step N | --find TEXT | --doc ID   exactly which data batch N held /
                                            at which steps a text or document was seen
    strata verify RUN_OR_DIR                re-hash and cross-check every published revision
    strata study RUN_OR_DIR                 evaluate every revision: CSV, plots, report.html

Every failure the user can fix (a bad path, key or value) ends in one line on stderr,
`strata: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from strata.cli import data, training, weights
from strata.cli.ledger import add_batch_parser, add_verify_parser
from strata.cli.study import add_parser as _add_study

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        data.add_parsers,
        training.add_parsers,
        weights.add_parsers,
        add_batch_parser,
        add_verify_parser,
        _add_study,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        if os.environ.get("STRATA_DEBUG"):
            raise
        print(f"strata: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a read-only folder, a full disk outside training: one line
        if os.environ.get("STRATA_DEBUG"):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"strata: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("strata: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
