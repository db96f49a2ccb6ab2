"""`strata train` and `strata config`: pretrain from a TOML recipe, print its resolution.

The recipe is read by `strata.run.config` (the schema) and trained by `strata.train`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_STOPPED = 1  # training stopped on a fault (see strata.train.faults.RunStopped)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model from a TOML recipe")
    p.add_argument("config", help="TOML recipe, e.g. configs/quickstart.toml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--from", dest="fork_from", metavar="RUN/checkpoints/stepN",
        help="fork: start this new run from that revision's training state "
        "(publish.training_state); docs/forks.md",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print a recipe's fully resolved config")
    p.add_argument("config", help="TOML recipe")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--get", metavar="SECTION.KEY", help="print only this value (run.dir: the run folder)"
    )
    p.set_defaults(func=cmd_config)


def given_file(path: str) -> Path:
    """A file the user named: a link they made is theirs to follow (files named inside a
    run or dataset never are: `tokenizer/fsutil.own_file`)."""
    return Path(path).resolve() if Path(path).is_symlink() else Path(path)


def cmd_train(args: argparse.Namespace) -> None:
    from strata.run.config import load_config
    from strata.run.lock import RunLock
    from strata.train.build import preflight
    from strata.train.dist import rank, shutdown_distributed
    from strata.train.trainer import RunStopped, Trainer

    cfg = load_config(given_file(args.config), args.overrides)
    preflight(cfg)  # every setting checked before the run folder is made
    first = int(os.environ.get("RANK", "0")) == 0  # rank 0 holds the run for its life
    try:
        with RunLock(cfg.run_dir, held=first):  # one trainer per run folder
            trainer = Trainer(cfg, fork_from=args.fork_from)
            trainer.fit()
    except RunStopped as err:  # diverged or disk full: the message says what was kept
        print(f"strata: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_STOPPED) from None
    finally:
        shutdown_distributed()
    if rank() == 0:
        print(summary(trainer))


def summary(trainer) -> str:
    """A closing line: where the run is and what it published."""
    from strata.run import Manifest

    run = trainer.run
    revisions = Manifest.read(run.checkpoints).revisions
    state = "stopped early" if trainer.preempted else "done"
    text = f"{state}: step {trainer.step}, run folder {run.root}"
    losses = [r.val_loss for r in revisions if r.val_loss is not None]
    if revisions:
        text += f"; {len(revisions)} published revisions in {run.checkpoints}"
    if len(losses) > 1:
        text += f"; val loss {losses[0]:.3f} (step 0) -> {losses[-1]:.3f}"
    return text


def cmd_config(args: argparse.Namespace) -> None:
    from strata.run.config import ConfigError, dump_toml, load_config

    cfg = load_config(given_file(args.config), args.overrides)
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_config(sub)
