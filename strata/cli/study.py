"""`strata study RUN_OR_DIR`: the command-line face of `strata.study.study`.

    strata study runs/quickstart                     -> runs/quickstart/study/report.html
    strata study hf_revisions/ --data runs/_data/stdlib/shards --seq-len 256

Every option maps one-to-one onto a keyword of `study()`; docs/study.md describes
them. Errors surface as ValueError / FileNotFoundError, which `strata.cli.main` turns into
one `strata: error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="evaluate every published revision; write CSV, plots and an HTML report"
    )
    p.add_argument(
        "run", metavar="RUN_OR_DIR", help="run folder, its checkpoints/, or a folder of stepN"
    )
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: RUN/study)")
    p.add_argument(
        "--data", metavar="DIR", default=None, help="prepared dataset (default: the run's)"
    )
    p.add_argument(
        "--seq-len", metavar="N", type=int, default=None, help="validation window length"
    )
    p.add_argument("--eval-windows", metavar="N", type=int, default=64, help="validation windows")
    p.add_argument(
        "--mem-samples", metavar="N", type=int, default=64, help="memorisation sequences"
    )
    p.add_argument(
        "--mem-prefix", metavar="N", type=int, default=32, help="prompt tokens per sequence"
    )
    p.add_argument("--mem-length", metavar="N", type=int, default=32, help="tokens that must match")
    p.add_argument(
        "--mem-seed", metavar="N", type=int, default=0, help="seed of the memorisation sample"
    )
    p.add_argument(
        "--batch-size", metavar="N", type=int, default=16, help="sequences per forward pass"
    )
    p.add_argument(
        "--source-depth", metavar="N", type=int, default=1, help="path components per source"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--force", action="store_true", help="ignore the cache; evaluate all")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> None:
    from strata.study import study

    study(  # prints its summary line unless --quiet
        args.run,
        out=args.out,
        data=args.data,
        seq_len=args.seq_len,
        eval_windows=args.eval_windows,
        mem_samples=args.mem_samples,
        mem_prefix=args.mem_prefix,
        mem_length=args.mem_length,
        mem_seed=args.mem_seed,
        batch_size=args.batch_size,
        source_depth=args.source_depth,
        device=args.device,
        force=args.force,
        quiet=args.quiet,
    )
