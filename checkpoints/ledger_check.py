"""`strata verify`'s checks of the data ledger (`RUN/data_ledger/`, run/ledger.py).

Design choices:
- Reported, never raised: an unreadable index is `bad-ledger`; a chunk whose bytes do
  not hash to what the index records (or missing, truncated, linked) is `ledger-hash`;
  a revision whose `strata.json` `ledger` position disagrees with the ledger is
  `ledger-mismatch`; rows that are not the data order recomputed from the run's config
  are `ledger-order`.
- The order check needs no data: the ledger records each source's window count, and
  the order is a pure function of those counts, the weights, the seed and the global
  batch size (`tokenizer.mixture`). It compares source, window and epoch of every row,
  chunk by chunk, and names the first step that differs. When the prepared data is
  found, each row's documents are checked too: the one holding the window's first token
  and the span to the one holding its last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from strata.checkpoints.fork_check import FORK_FILE
from strata.run.config import Config
from strata.run.dataset import resolve_dataset
from strata.run.jsonfile import read_object
from strata.run.layout import REVISION_META
from strata.run.ledger import INDEX, LEDGER_DIR, Ledger, row_documents
from strata.tokenizer.edits import INJECT, DataEdits, excluded_entries, exclusion_masks
from strata.tokenizer.mixture import Mixture, integer_weights, ordered
from strata.tokenizer.shards import load_index

Add = Callable[[str, Path | str, str], None]


def check_ledger(root: Path, cfg: Config | None, metas: dict, ckpt: Path, add: Add) -> None:
    """Every check above, for the run at `root` (nothing when it has no ledger)."""
    folder = root / LEDGER_DIR
    if not (folder / INDEX).exists():
        return
    try:
        ledger = Ledger.read(folder)
    except (OSError, ValueError) as err:
        add("bad-ledger", folder / INDEX, str(err).split(": ", 1)[-1])
        return
    for problem in ledger.verify():
        path, _, detail = problem.partition(": ")
        add("ledger-hash", path, detail)
    for name, meta in sorted(metas.items()):
        position = meta.extra.get("ledger")
        if position is not None:
            for problem in ledger.check_position(position):
                add("ledger-mismatch", ckpt / name / REVISION_META, problem)
    if cfg is not None:
        _check_order(ledger, cfg, root, folder, add)
        _check_documents(ledger, cfg, root, folder, add)


@dataclass
class Expected:
    """The order a ledger should hold: from step `start` on (a fork's earlier steps are
    its parent's: checkpoints/fork_check.py), the mixture, then the edits."""

    mixture: Mixture
    edits: DataEdits | None
    start: int
    windows_known: bool  # False: exclusions whose documents need the missing data
    n_sources: int  # data sources; an injected row is source n_sources


def _expected(ledger: Ledger, cfg: Config, root: Path) -> Expected | str:
    """The run's order from the ledger's window counts, or why it cannot be built."""
    sources, heads = cfg.data.sources, ledger.header.sources
    k = len(sources or [None])
    if len(heads) not in (k, k + 1) or (len(heads) == k + 1 and heads[k].name != INJECT):
        return f"{len(heads)} sources, but config.toml has {k}"
    if ledger.header.batch_size != cfg.train.global_batch_size:
        return f"batch size {ledger.header.batch_size}, config.toml has another"
    weights = integer_weights([s.weight for s in sources]) if sources else (1,)
    plain = Mixture(weights, tuple(s.n_windows for s in heads[:k]), cfg.train.seed)
    fork = read_object(root / FORK_FILE) if (root / FORK_FILE).is_file() else {}
    start = fork.get("step", 0) if isinstance(fork.get("step"), int) else 0
    expected = Expected(ordered(fork.get("order"), plain), None, start, True, k)
    excluded = bool(cfg.data.exclude_docs or cfg.data.exclude_docs_file)
    if excluded or cfg.data.inject:
        masks = _masks(cfg, root, [s.name for s in heads[:k]]) if excluded else None
        expected.windows_known = masks is not None or not excluded
        masks = masks or [np.zeros(n, dtype=bool) for n in plain.n_windows]
        steps = [i.steps for i in cfg.data.inject]
        expected.edits = DataEdits(start, cfg.train.seed, masks, [None] * len(steps), steps)
    return expected


def _masks(cfg: Config, root: Path, names: list[str]) -> list[np.ndarray] | None:
    """The excluded windows per source, or None without the data (or the ids file)."""
    found = _train_splits(cfg, root)
    try:
        entries = excluded_entries(cfg.data.exclude_docs, cfg.data.exclude_docs_file)
        if found is not None:
            return exclusion_masks(entries, names, *found, cfg.train.seq_len)
    except (OSError, ValueError):
        pass
    return None


def _check_order(ledger: Ledger, cfg: Config, root: Path, folder: Path, add: Add) -> None:
    expected = _expected(ledger, cfg, root)
    if isinstance(expected, str):
        add("ledger-order", folder / INDEX, f"made for {expected}")
        return
    for first, columns in ledger.iter_chunks():
        step = _first_difference(expected, first, columns)
        if step is not None:
            detail = f"step {step} is not the data order of config.toml (train.seed, weights)"
            add("ledger-order", folder, detail)
            return


def _first_difference(expected: Expected, first: int, columns: dict[str, Any]) -> int | None:
    b = columns["window"].shape[1]
    for k in range(max(0, expected.start - first), len(columns["window"])):  # step first + k
        want = expected.mixture.batch(b, first + k)
        if expected.edits is not None:
            want = expected.edits.apply(want, first + k)
        windows = np.where(want.sources == expected.n_sources, 0, want.windows)  # injected: 0
        got = [columns["source"][k], columns["epoch"][k]]
        wanted = [want.sources, want.epochs]
        if expected.windows_known:
            got, wanted = [*got, columns["window"][k]], [*wanted, windows]
        if not all(np.array_equal(a, w) for a, w in zip(got, wanted, strict=True)):
            return first + k
    return None


def _train_splits(cfg: Config, root: Path) -> tuple[list[np.ndarray], list[int]] | None:
    """Each source's document starts and token count (its train split's index.json), or
    None when a source's prepared data is not found (what needs it is then skipped)."""
    paths = [s.dataset for s in cfg.data.sources] or [cfg.data.dataset]
    starts, tokens = [], []
    for path in paths:
        try:
            split = load_index(resolve_dataset(path, root, cfg.run.out_dir))["splits"]["train"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        starts.append(np.asarray([d[0] for d in split["documents"]], dtype=np.int64))
        tokens.append(int(split["tokens"]))
    return starts, tokens


def _check_documents(ledger: Ledger, cfg: Config, root: Path, folder: Path, add: Add) -> None:
    """With the data present: every row's documents are the ones its window overlaps
    (an injected row's document is its injection)."""
    found = _train_splits(cfg, root)
    if found is None:
        return
    seq_len = cfg.train.seq_len
    for first, columns in ledger.iter_chunks():
        sources, windows = columns["source"].astype(np.int64), columns["window"].astype(np.int64)
        docs, spans = columns["document"].astype(np.int64), np.zeros_like(windows)  # (steps, B)
        for s, doc_starts in enumerate(found[0]):
            rows = sources == s
            docs[rows], spans[rows] = row_documents(doc_starts, windows[rows] * seq_len, seq_len)
        wrong = (docs != columns["document"]) | (spans != columns["span"])
        if (at := np.flatnonzero(wrong.any(axis=1))).size:
            detail = f"step {first + int(at[0])}: a row's documents are not the data's"
            add("ledger-order", folder, detail)
            return
