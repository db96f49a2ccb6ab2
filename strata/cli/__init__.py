"""The `strata` command: the one place that wires tokenizer/, model/, train/ and
checkpoints/ together.

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
from pathlib import Path
from typing import Any

from strata.cli.ledger import add_batch_parser, add_verify_parser
from strata.cli.study import add_parser as _add_study

EXIT_USAGE = 2
EXIT_STOPPED = 1  # training stopped on a fault (see train.trainer.RunStopped)


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


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model from a TOML recipe")
    p.add_argument("config", help="TOML recipe, e.g. configs/quickstart.toml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.set_defaults(func=cmd_train)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print a recipe's fully resolved config")
    p.add_argument("config", help="TOML recipe")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--get", metavar="SECTION.KEY", help="print only this value (run.dir: the run folder)"
    )
    p.set_defaults(func=cmd_config)


def _add_export_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face folder")
    p.add_argument("checkpoint", help="published revision, resume checkpoint, or run folder")
    p.add_argument("--to", choices=["hf"], default="hf", help="target format")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="read a local Hugging Face folder as a Strata checkpoint")
    p.add_argument("hf_dir", help="folder with config.json and safetensors weights")
    p.add_argument("--out", required=True, help="output checkpoint folder (must not exist)")
    p.set_defaults(func=cmd_import)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint", help="published revision, HF folder, resume checkpoint or run")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass; 1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_corpus,
        _add_tokenizer,
        _add_prepare,
        _add_train,
        _add_config,
        _add_export_import,
        _add_generate,
        add_batch_parser,
        add_verify_parser,
        _add_study,
    ):
        add(sub)
    return parser


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


def cmd_train(args: argparse.Namespace) -> None:
    from strata.run.config import load_config
    from strata.train.dist import rank, shutdown_distributed
    from strata.train.trainer import RunStopped, Trainer

    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    except RunStopped as err:  # diverged or disk full: the message says what was kept
        print(f"strata: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_STOPPED) from None
    finally:
        shutdown_distributed()
    if rank() == 0:
        print(trainer.summary())


def cmd_config(args: argparse.Namespace) -> None:
    from strata.run.config import ConfigError, dump_toml, load_config

    cfg = load_config(args.config, args.overrides)
    if not args.get:
        print(dump_toml(cfg), end="")
        return
    if args.get == "run.dir":  # derived: where the run writes (run.out_dir / run.name)
        print(cfg.run_dir)
        return
    value: Any = cfg.to_dict()
    for name in args.get.split("."):  # section.key, or model.moe.top_k
        if not isinstance(value, dict) or name not in value:
            raise ConfigError(f"--get {args.get}: no such key")
        value = value[name]
    print(value)


def cmd_export(args: argparse.Namespace) -> None:
    from strata.checkpoints.export import export_hf

    print(f"exported {args.checkpoint} -> {export_hf(args.checkpoint, args.out)}")


def cmd_import(args: argparse.Namespace) -> None:
    from strata.checkpoints.export import import_hf

    print(f"imported {args.hf_dir} -> {import_hf(args.hf_dir, args.out)}")


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from strata.checkpoints.export import load_any
    from strata.model.generate import generate
    from strata.train.dist import pick_device

    model, tok = load_any(args.checkpoint)
    if tok is None:
        raise ValueError(f"{args.checkpoint}: no tokenizer files next to the weights")
    device = pick_device(args.device)
    model = model.to(device)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt: expected non-empty text")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.tensor([ids], device=device)
    out = generate(
        model,
        idx,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        gen,
        eos_id=tok.eos_id,
    )
    new = [t for t in out[0, len(ids) :].tolist() if t != tok.eos_id]
    print(args.prompt + tok.decode(new))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        if os.environ.get("STRATA_DEBUG"):
            raise
        print(f"strata: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("strata: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
