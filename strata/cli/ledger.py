"""`strata batch` and `strata verify`: the data and checkpoint ledger, from the command line.

    strata batch RUN --step N [--rank R --world W] [--format text|json]
    strata batch RUN --find TEXT | --doc ID [--source NAME] [--format text|json]
    (a mixture's, a fork's or a run with data edits: answered from its data ledger,
    RUN/data_ledger/, with each source's data for decoded text and --find;
    strata/cli/ledger_batch.py)
    strata batch RUN --source NAME | --summary [--format text|json]
    strata verify RUN_OR_DIR [--format text|json] [--recompute [--tolerance REL]]
                  [--replay stepN [--atol X]]

The work is done by `checkpoints/provenance.py`, `checkpoints/verify.py`,
`checkpoints/recompute.py` and `train/replay.py`; this module
only parses arguments and prints. Usage errors raise ValueError (`strata: error: ...`,
exit 2, from `strata/cli/__init__.py`); `strata verify` exits 1 when it finds a problem.

`--step` may pass the run's max_steps (the batch a longer run would use, with a note),
but not the int64 range of the data order's sample index, `step * global_batch_size +
row`: `--step 4611686018427387904` is one line naming the allowed range, as are a
`--world` that does not divide the global batch and a `--rank` outside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strata.checkpoints.provenance import Batch, RunSpec
    from strata.tokenizer import Tokenizer

MAX_HITS_SHOWN = 50
INT64_MAX = 2**63 - 1  # the data order's sample indices are int64 (tokenizer/order.py)


def add_batch_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="show global batch N, or when a text/document was trained")
    p.add_argument("run", help="run folder (with config.toml)")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--step", type=int, metavar="N", help="show global batch N (trained by update N -> N+1)"
    )
    what.add_argument("--find", metavar="TEXT", help="steps whose sequences contain TEXT")
    what.add_argument(
        "--doc", type=int, metavar="ID", help="steps whose sequences overlap document ID"
    )
    what.add_argument(
        "--summary", action="store_true",
        help="per revision: tokens seen per source, documents seen once, twice, ... (ledger)",
    )  # fmt: skip
    p.add_argument(
        "--source", metavar="NAME",
        help="sequences per step from source NAME (ledger); with --doc: the document's source",
    )  # fmt: skip
    p.add_argument("--rank", type=int, metavar="R", help="with --step: show only this rank's slice")
    p.add_argument("--world", type=int, metavar="W", help="with --rank: number of processes")
    p.add_argument(
        "--dataset", metavar="DIR", help="prepared dataset (default: data.dataset of config.toml)"
    )
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: one line")
    p.set_defaults(func=cmd_batch)


def add_verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check published checkpoints against their ledger")
    p.add_argument("path", help="run folder or its checkpoints/ folder")
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: one line")
    p.add_argument(
        "--recompute", action="store_true",
        help="evaluate every revision's val_loss again on its recorded windows",
    )  # fmt: skip
    p.add_argument(
        "--tolerance", type=float, metavar="REL", default=None,
        help="with --recompute: relative tolerance (default 1e-4 fp32, 2e-2 bf16)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="with --recompute: cpu, cuda or cuda:N")
    p.add_argument(
        "--replay", metavar="stepN", default=None,
        help="train again from the nearest earlier resume checkpoint (or step 0) to stepN "
        "and compare the weights: bitwise when the run is deterministic",
    )  # fmt: skip
    p.add_argument(
        "--atol", type=float, default=None, metavar="X",
        help="with --replay, for a run that is not deterministic: max |difference| (1e-5)",
    )  # fmt: skip
    p.set_defaults(func=cmd_verify)


def _json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))  # one object on one line (pipe into jq)


def cmd_batch(args: argparse.Namespace) -> None:
    from strata.checkpoints.provenance import find_doc, find_text, read_batch, read_run
    from strata.run import RunPaths
    from strata.tokenizer import Tokenizer, TokenShards

    if (args.rank is None) != (args.world is None) or (args.rank is not None and args.step is None):
        raise ValueError("--rank and --world go together, with --step")
    if _from_ledger(args):
        return
    spec = read_run(args.run, args.dataset)
    if args.step is not None:
        _check_step(args.step, spec.global_batch_size, spec.max_steps)
    if args.world is not None:
        check_slice(args.rank, args.world, spec.global_batch_size)
    shards = TokenShards(spec.dataset, "train")
    tok_dir = RunPaths(spec.run_dir).tokenizer
    tok = Tokenizer.load(tok_dir if tok_dir.is_dir() else spec.dataset / "tokenizer")
    if args.step is not None:
        batch = read_batch(spec, shards, args.step, args.rank, args.world)
        show = _batch_json if args.format == "json" else _batch_text
        show(spec, batch, tok, args)
        return
    if args.find is not None:
        found = find_text(spec, shards, tok, args.find)
    else:
        found = find_doc(spec, shards, args.doc)
    if args.format == "json":
        _json({"run": str(spec.run_dir), **found})
    else:
        _found_text(found)


def _from_ledger(args: argparse.Namespace) -> bool:
    """Answer from the data ledger (`strata/cli/ledger_batch.py`) where the question
    needs it (a mixture, --source, --summary) or the prepared data is not there; False:
    answer from the data of a one-dataset run."""
    from strata.cli import ledger_batch as lb

    asked = [args.step is not None, args.find is not None, args.doc is not None, args.summary]
    if not any(asked) and args.source is None:
        raise ValueError("one of --step, --find, --doc, --summary or --source is needed")
    if args.summary or (args.source is not None and not any(asked)):
        (lb.cmd_summary if args.summary else lb.cmd_source)(args)
        return True
    if not lb.has_ledger(args.run):
        return False
    ledger_only = _order_beyond_plain(args.run)
    if not ledger_only and (args.find is not None or args.world is not None):
        return False  # the data answers (and says so when it is missing)
    plain_data = args.source is None and args.dataset is None and _data_present(args.run)
    if not ledger_only and plain_data:
        return False  # the data gives the decoded text and its documents' sources too
    if args.find is not None:
        lb.cmd_find(args)
    else:
        (lb.cmd_step if args.step is not None else lb.cmd_doc)(args)
    return True


def _order_beyond_plain(run_dir: str) -> bool:
    """Whether the run's order is more than the one-dataset rule the data path knows: a
    mixture, data edits (excluded documents, injected texts) or a fork (its own order):
    then the ledger holds the rows."""
    from strata.run import locate

    run = locate(run_dir).run
    cfg = run.read_config() if run is not None else None
    if cfg is None:
        return False
    d = cfg.data
    edits = bool(d.exclude_docs or d.exclude_docs_file or d.inject)
    return len(d.sources) > 1 or edits or (run.root / "fork.json").is_file()


def _data_present(run_dir: str) -> bool:
    """Whether the prepared data of the run's one dataset is found."""
    from strata.run import locate, resolve_dataset

    run = locate(run_dir).run
    cfg = run.read_config() if run is not None else None
    if cfg is None:
        return False
    try:
        resolve_dataset(cfg.data.dataset, run.root, cfg.run.out_dir)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _check_step(step: int, batch: int, max_steps: int) -> None:
    """Refuse a step whose rows' sample indices (step * batch + row) pass int64."""
    last = (INT64_MAX + 1) // batch - 1  # (last + 1) * batch - 1 == the largest index
    if not 0 <= step <= last:
        raise ValueError(
            f"--step {step}: expected a step in [0, {last}] (global_batch_size {batch}; "
            f"steps from max_steps {max_steps} on show the batch a longer run would use)"
        )


def check_slice(rank: int, world: int, batch: int) -> None:
    """Refuse a --world that does not divide the global batch, a --rank outside it."""
    if world < 1 or batch % world:
        raise ValueError(f"--world {world}: expected a divisor of global_batch_size {batch}")
    if not 0 <= rank < world:
        raise ValueError(f"--rank {rank}: expected a rank in [0, {world}) (--world {world})")


def _batch_json(spec: RunSpec, batch: Batch, tok: Tokenizer, args: argparse.Namespace) -> None:
    rows = []
    for k, row in enumerate(batch.rows):
        docs = [{"id": d, "source": s} for d, s in batch.documents[k]]
        w = int(batch.windows[k])
        rows.append({"row": row, "window": w, "epoch": int(batch.epochs[k]),
                     "start": w * spec.seq_len, "documents": docs,
                     "tokens": batch.tokens[k].tolist()})  # fmt: skip
    _json({
        "run": str(spec.run_dir), "dataset": str(spec.dataset), "step": batch.step,
        "future": batch.step >= spec.max_steps, "max_steps": spec.max_steps,
        "seed": spec.seed, "seq_len": spec.seq_len,
        "global_batch_size": spec.global_batch_size, "rank": args.rank, "world": args.world,
        "batch_sha256": batch.batch_sha256, "slice_sha256": batch.slice_sha256, "rows": rows,
    })  # fmt: skip


def _batch_text(spec: RunSpec, batch: Batch, tok: Tokenizer, args: argparse.Namespace) -> None:
    print(f"global batch {batch.step} of {spec.run_dir} (trained by the update "
          f"{batch.step} -> {batch.step + 1})")  # fmt: skip
    if batch.step >= spec.max_steps:
        print(f"note: step {batch.step} >= max_steps {spec.max_steps}: this batch was not "
              "trained on; it is the one a longer run would use")  # fmt: skip
    print(f"dataset {spec.dataset}  seed {spec.seed}  seq_len {spec.seq_len}  "
          f"global_batch_size {spec.global_batch_size}")  # fmt: skip
    print(f"batch_sha256 {batch.batch_sha256}")
    if args.world is not None:
        print(f"rank {args.rank} of {args.world}: rows {batch.rows.start}..{batch.rows.stop - 1}"
              f"  slice_sha256 {batch.slice_sha256}")  # fmt: skip
    for k, row in enumerate(batch.rows):
        w = int(batch.windows[k])
        docs = ", ".join(f"{d} ({s})" for d, s in batch.documents[k])
        start = w * spec.seq_len
        print(f"\n--- row {row}  window {w}  epoch {int(batch.epochs[k])}  tokens "
              f"[{start}, {start + spec.seq_len + 1})  documents {docs}")  # fmt: skip
        print(tok.decode(batch.tokens[k].tolist()))


def _found_text(found: dict[str, Any]) -> None:
    q = found["query"]
    if "text" in q:
        print(f"{q['text']!r} ({len(q['tokens'])} tokens; {q['method']} search): "
              f"{found['occurrences']} occurrence(s) in the train stream, "
              f"{found['in_one_window']} inside a window's seq_len + 1 tokens, "
              f"{found['across_windows']} across a window boundary, "
              f"{found['after_last_window']} after the last window")  # fmt: skip
    else:
        print(f"document {q['doc']} ({q['source']}), tokens [{q['start']}, {q['end']}): "
              f"overlapped by {len(found['windows'])} window(s)")  # fmt: skip
    hits = found["hits"]
    print(f"trained at {len(found['steps'])} step(s) (of max_steps {found['max_steps']}):")
    for h in hits[:MAX_HITS_SHOWN]:
        print(f"  step {h['step']}  row {h['row']}  window {h['window']}  epoch {h['epoch']}")
    if len(hits) > MAX_HITS_SHOWN:
        print(f"  ... and {len(hits) - MAX_HITS_SHOWN} more (--format json lists all)")
    revs = found["revisions"]
    where = f"published revisions ({found['revisions_source']})"
    if not revs:
        print(f"no {where} have seen it")
        return
    print(f"{where} that have seen it (batches seen): "
          + ", ".join(f"{r['revision']} ({r['batches_seen']})" for r in revs))  # fmt: skip


def _replay(report, path: Path, revision: str, atol: float | None) -> None:
    from strata.run import locate
    from strata.train.replay import DEFAULT_ATOL, replay

    where = locate(path)
    if where.run is None:
        raise ValueError(f"--replay: {path} is not inside a run folder (its resume/ is needed)")
    done = replay(where.run.root, revision, DEFAULT_ATOL if atol is None else atol)
    if done.ok:
        report.notes.append(f"{revision}: {done.summary()}")
    else:
        report.add("replay-mismatch", where.run.revision(done.step), done.summary())


def cmd_verify(args: argparse.Namespace) -> None:
    from strata.checkpoints.verify import check

    report = check(Path(args.path), recompute=args.recompute, tolerance=args.tolerance,
                   device=args.device)  # fmt: skip
    if args.replay is not None:
        _replay(report, Path(args.path), args.replay, args.atol)
    if args.format == "json":
        _json({"ok": not report.problems, "revisions": report.revisions, "files": report.files,
               "bytes": report.bytes, "problems": [vars(p) for p in report.problems],
               "notes": report.notes})  # fmt: skip
    else:
        for problem in report.problems:
            print(problem)
        for note in report.notes:
            print(f"note: {note}")
        status = f"{len(report.problems)} problem(s)" if report.problems else "ok"
        print(f"{status}: {report.revisions} revision(s), {report.files} file(s), "
              f"{report.bytes / 1e6:.1f} MB hashed")  # fmt: skip
    if report.problems:
        sys.exit(1)
