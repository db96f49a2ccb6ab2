"""`strata batch` answered from the run's data ledger alone (`RUN/data_ledger/`).

    strata batch RUN --source NAME      sequences per step from source NAME, and totals
    strata batch RUN --summary          per revision: tokens seen per source, and how many
                                        documents of each source were seen once, twice, ...
    strata batch RUN --step N [--rank R --world W] | --doc ID [--source NAME]
                                        from the ledger when the run trained on a mixture
                                        or its prepared data is not there
    strata batch RUN --find TEXT        a mixture's: every source searched (needs the data)

Design choices:
- The answers come from the ledger and `config.toml`, so they hold for a copied run
  without its dataset; decoded text (and the batch's sha256, over its tokens) is what
  needs the data: shown when every source's prepared data is found (and is the one the
  run recorded), else the text output says so. `--find` needs the data.
- `--doc` lists the rows whose seq_len + 1 tokens overlap the document (the ledger's
  document and span), the rule `strata batch --doc` follows with the data.
- Revisions are the run's manifest entries; a revision at step N has seen batches
  0 .. N-1, so its counts are the ledger's first N steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from strata.run import Manifest, RunPaths, dataset_fingerprint, locate, resolve_dataset
from strata.run.config import Config
from strata.run.ledger import INDEX, LEDGER_DIR, Ledger
from strata.run.meta import RevisionMeta
from strata.tokenizer import Tokenizer, TokenShards, rank_slice
from strata.tokenizer.order import batch_digest

NEEDS_DATA = "decoded text needs the prepared data (--dataset DIR)"
MAX_HITS_SHOWN = 50


def open_ledger(run_dir: str | Path) -> tuple[RunPaths, Config, Ledger]:
    where = locate(run_dir)
    cfg = where.run.read_config() if where.kind == "run" else None
    if cfg is None:
        raise FileNotFoundError(f"{run_dir}: no config.toml; expected a run folder")
    folder = where.run.root / LEDGER_DIR
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"{folder}: no data ledger (runs trained before it have none)")
    return where.run, cfg, Ledger.read(folder)


def has_ledger(run_dir: str | Path) -> bool:
    try:
        return (locate(run_dir).run.root / LEDGER_DIR / INDEX).is_file()
    except (AttributeError, ValueError, OSError):
        return False


def _print(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(data) if args.format == "json" else "\n".join(lines))


def cmd_source(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    source = ledger.source_index(args.source)
    counts = ledger.counts_per_source()[:, source]  # (steps,)
    name = ledger.header.sources[source].name
    data = {"run": str(run.root), "source": name, "steps": int(ledger.steps),
            "sequences": int(counts.sum()), "tokens": int(counts.sum()) * cfg.train.seq_len,
            "per_step": counts.tolist()}  # fmt: skip
    shares = np.bincount(counts, minlength=counts.max(initial=0) + 1)
    lines = [f"source {name!r} of {run.root}: {data['sequences']} sequences "
             f"({data['tokens']} tokens) over {ledger.steps} steps"]  # fmt: skip
    lines += [f"  {n} sequence(s) a step: {k} step(s)" for n, k in enumerate(shares) if k]
    _print(args, data, lines)


def cmd_summary(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    names = [s.name for s in ledger.header.sources]
    revisions = [(e.revision, e.step) for e in Manifest.read(run.checkpoints).revisions]
    out, lines = [], [f"data seen by the revisions of {run.root} (from its data ledger):"]
    for revision, step in revisions:
        steps = min(step, ledger.steps)
        counts = ledger.counts_per_source(steps).sum(0) if steps else np.zeros(len(names))
        row = {"revision": revision, "step": step, "sources": {}}
        for i, name in enumerate(names):
            seen = ledger.seen_histogram(i, steps) if steps else {}
            tokens = int(counts[i]) * cfg.train.seq_len
            row["sources"][name] = {"tokens": tokens, "documents_seen": seen}
            times = ", ".join(f"{n} seen {t}x" for t, n in sorted(seen.items())) or "none seen"
            lines.append(f"  {revision}: {name}: {tokens} tokens; documents: {times}")
        out.append(row)
    _print(args, {"run": str(run.root), "revisions": out}, lines)


def _recorded_sources(run: RunPaths) -> dict[str, str]:
    """{source name: dataset fingerprint} of the newest revision recording a mixture."""
    for entry in sorted(Manifest.read(run.checkpoints).revisions, key=lambda e: -e.step):
        try:
            meta = RevisionMeta.read(run.checkpoints / entry.revision)
        except (OSError, ValueError):
            continue
        records = meta.extra.get("sources") if meta is not None else None
        if isinstance(records, list):
            return {r.get("name"): r.get("fingerprint") for r in records if isinstance(r, dict)}
    return {}


def source_data(run: RunPaths, cfg: Config, dataset: str | None) -> list[TokenShards] | None:
    """Each source's train split, in the ledger's order; None when one is not found.
    ValueError for a dataset that is not the one the run recorded."""
    configured = [(s.label, s.dataset) for s in cfg.data.sources]
    configured = configured or [(None, dataset or cfg.data.dataset)]
    recorded, out = _recorded_sources(run), []
    for name, path in configured:
        try:
            folder = resolve_dataset(path, run.root, cfg.run.out_dir)
        except (FileNotFoundError, ValueError):
            return None
        if recorded.get(name) not in (None, dataset_fingerprint(folder)):
            raise ValueError(f"{folder}: not the dataset source {name!r} trained on "
                             "(its index.json is not the one the revisions record)")  # fmt: skip
        out.append(TokenShards(folder, "train"))
    return out


def _tokenizer(run: RunPaths, shards: TokenShards) -> Tokenizer:
    copied = run.tokenizer  # the run's own copy, else the dataset's
    return Tokenizer.load(copied if copied.is_dir() else shards.dataset_dir / "tokenizer")


def cmd_step(args: argparse.Namespace) -> None:
    from strata.cli.ledger import check_slice

    run, cfg, ledger = open_ledger(args.run)
    if not 0 <= args.step < ledger.steps:
        raise ValueError(f"--step {args.step}: the ledger holds steps 0 .. {ledger.steps - 1}")
    rows, b = ledger.rows(args.step), ledger.header.batch_size
    if args.world is not None:
        check_slice(args.rank, args.world, b)
    part = slice(0, b) if args.world is None else rank_slice(b, args.world, args.rank)
    names = [s.name for s in ledger.header.sources]
    first, span = rows["document"].tolist(), rows["span"].tolist()
    listed = [{"row": j, "source": names[int(rows["source"][j])], "document": first[j],
               "documents": list(range(first[j], first[j] + span[j] + 1)),
               "window": int(rows["window"][j]), "epoch": int(rows["epoch"][j]),
               "seen_before": bool(rows["seen_before"][j])}
              for j in range(part.start, part.stop)]  # fmt: skip
    data = {"run": str(run.root), "step": args.step, "rank": args.rank, "world": args.world}
    shards = source_data(run, cfg, args.dataset)
    if shards and cfg.data.inject:  # injected rows: source len(shards), document = injection
        from strata.train.data_edits import injection_rows

        shards = [*shards, _Injected(injection_rows(cfg, _tokenizer(run, shards[0]),
                                                    shards[0].eos_id))]  # fmt: skip
    texts = _with_tokens(data, rows, shards, cfg.train.seq_len, part) if shards else None
    data["rows"] = listed
    if args.format == "json":
        _print(args, data, [])
        return
    where = "from its data ledger" + ("" if texts else f"; {NEEDS_DATA}")
    print(f"global batch {args.step} of {run.root} ({where})")
    if texts:
        print(f"batch_sha256 {data['batch_sha256']}")
    for k, r in enumerate(listed):
        docs = ", ".join(map(str, r["documents"]))
        print(f"{chr(10) if texts else ''}  row {r['row']}  source {r['source']}  window "
              f"{r['window']}  epoch {r['epoch']}  documents {docs}")  # fmt: skip
        if texts:
            print(_tokenizer(run, shards[0]).decode(texts[k]))


class _Injected:
    """The injected texts as a source: `window(i)` is injection i's row."""

    def __init__(self, rows: list[np.ndarray]) -> None:
        self.rows = rows

    def window(self, i: int, seq_len: int) -> np.ndarray:
        return self.rows[i]


def _with_tokens(data: dict, rows: dict, shards: list, seq_len: int, part: slice) -> list:
    """Add the batch's (and the slice's) sha256 to `data`; the rows' tokens, as lists."""
    injected = rows["source"] == len(shards) - isinstance(shards[-1], _Injected)
    windows = np.where(injected, rows["document"], rows["window"])  # an injection: its index
    pairs = zip(rows["source"].tolist(), windows.tolist(), strict=True)
    tokens = np.stack([shards[s].window(w, seq_len) for s, w in pairs])  # (B, T + 1)
    data["batch_sha256"] = batch_digest(tokens)
    data["slice_sha256"] = batch_digest(tokens[part])
    return tokens[part].tolist()


def cmd_doc(args: argparse.Namespace) -> None:
    run, cfg, ledger = open_ledger(args.run)
    source = ledger.source_index(args.source if args.source is not None else 0)
    if not 0 <= args.doc < (n := ledger.header.sources[source].n_documents):
        raise ValueError(f"--doc {args.doc}: expected a document id in [0, {n})")
    hits = ledger.rows_with(source, document=args.doc)  # (n, 4) step, row, window, epoch
    name = ledger.header.sources[source].name
    found = _found(run, cfg, ledger, hits, [name] * len(hits))
    data = {"run": str(run.root), "source": name, "doc": args.doc, **found}
    lines = [f"document {args.doc} of {name}: overlapped by {len(hits)} trained row(s) "
             f"(from the data ledger)"]  # fmt: skip
    _print(args, data, lines + _hit_lines(data))


def _found(run: RunPaths, cfg: Config, ledger: Ledger, hits: np.ndarray, names: list) -> dict:
    """hits (n, 4) -> the `hits`, `steps` and `revisions` of a --doc/--find answer."""
    keys = ("step", "row", "window", "epoch")
    listed = [dict(zip(keys, h, strict=True), source=n) for h, n in zip(hits.tolist(), names,
                                                                         strict=True)]  # fmt: skip
    steps = np.unique(hits[:, 0]) if len(hits) else np.zeros(0, np.int64)
    revisions = [
        {"revision": e.revision, "step": e.step, "batches_seen": int((steps < e.step).sum())}
        for e in Manifest.read(run.checkpoints).revisions
    ]
    return {"max_steps": cfg.train.max_steps, "hits": listed, "steps": steps.tolist(),
            "revisions_source": "manifest",
            "revisions": [r for r in revisions if r["batches_seen"]]}  # fmt: skip


def _hit_lines(found: dict) -> list[str]:
    lines = [f"trained at {len(found['steps'])} step(s) (of max_steps {found['max_steps']}):"]
    lines += [f"  step {h['step']}  row {h['row']}  source {h['source']}  window {h['window']}"
              f"  epoch {h['epoch']}" for h in found["hits"][:MAX_HITS_SHOWN]]  # fmt: skip
    if len(found["hits"]) > MAX_HITS_SHOWN:
        lines.append(f"  ... and {len(found['hits']) - MAX_HITS_SHOWN} more (--format json)")
    seen = ", ".join(f"{r['revision']} ({r['batches_seen']})" for r in found["revisions"])
    return [*lines, f"revisions that have seen it (batches): {seen or 'none'}"]


def cmd_find(args: argparse.Namespace) -> None:
    """--find on a mixture: every source's train stream searched, rows from the ledger."""
    from strata.checkpoints.provenance import text_windows

    run, cfg, ledger = open_ledger(args.run)
    shards = source_data(run, cfg, args.dataset)
    if shards is None:
        raise FileNotFoundError(f"{run.root}: --find needs the prepared data of every source")
    tok, T = _tokenizer(run, shards[0]), cfg.train.seq_len
    per_source, hits, names, positions = {}, [np.zeros((0, 4), np.int64)], [], {}
    for s, source in enumerate(ledger.header.sources):
        windows, where, facts = text_windows(shards[s], tok, args.find, T)
        per_source[source.name] = {k: v for k, v in facts.items() if k != "query"}
        hits.append(found := ledger.rows_with(s, windows=windows))
        names += [source.name] * len(found)
        positions |= {(s, w): p for w, p in where.items()}
    hits = np.concatenate(hits)
    order = np.lexsort((hits[:, 1], hits[:, 0]))  # step, then row
    result = _found(run, cfg, ledger, hits[order], [names[i] for i in order])
    index = {n.name: i for i, n in enumerate(ledger.header.sources)}
    for h in result["hits"]:
        h["positions"] = positions[(index[h["source"]], h["window"])]
    total = {k: sum(c[k] for c in per_source.values()) for k in next(iter(per_source.values()))}
    data = {"run": str(run.root), "query": facts["query"], **total, "sources": per_source,
            **result}  # fmt: skip
    lines = [f"{args.find!r}: {total['occurrences']} occurrence(s) in the train streams, "
             f"{total['in_one_window']} inside a window's seq_len + 1 tokens; per source: "
             + ", ".join(f"{n} {c['occurrences']}" for n, c in per_source.items())]  # fmt: skip
    _print(args, data, lines + _hit_lines(data))
