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
from pathlib import Path
from typing import Any

import numpy as np
from strata.run.config import Config
from strata.run.dataset import resolve_dataset
from strata.run.layout import REVISION_META
from strata.run.ledger import INDEX, LEDGER_DIR, Ledger, row_documents
from strata.tokenizer.mixture import Mixture, integer_weights
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
        _check_order(ledger, cfg, folder, add)
        _check_documents(ledger, cfg, root, folder, add)


def _mixture(ledger: Ledger, cfg: Config) -> Mixture | str:
    """The run's order from the ledger's window counts, or why it cannot be built."""
    sources = cfg.data.sources
    counts = tuple(s.n_windows for s in ledger.header.sources)
    if len(sources or [None]) != len(counts):
        return f"{len(counts)} sources, but config.toml has {len(sources or [None])}"
    weights = integer_weights([s.weight for s in sources]) if sources else (1,)
    if ledger.header.batch_size != cfg.train.global_batch_size:
        return f"batch size {ledger.header.batch_size}, config.toml has another"
    return Mixture(weights, counts, cfg.train.seed)


def _check_order(ledger: Ledger, cfg: Config, folder: Path, add: Add) -> None:
    order = _mixture(ledger, cfg)
    if isinstance(order, str):
        add("ledger-order", folder / INDEX, f"made for {order}")
        return
    for first, columns in ledger.iter_chunks():
        step = _first_difference(order, first, columns)
        if step is not None:
            detail = f"step {step} is not the data order of config.toml (train.seed, weights)"
            add("ledger-order", folder, detail)
            return


def _first_difference(order: Mixture, first: int, columns: dict[str, Any]) -> int | None:
    batch = order.batch
    for k in range(len(columns["window"])):  # rows of step first + k: (B,) each
        expected = batch(columns["window"].shape[1], first + k)
        got = (columns["source"][k], columns["window"][k], columns["epoch"][k])
        want = (expected.sources, expected.windows, expected.epochs)
        if not all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)):
            return first + k
    return None


def _document_starts(cfg: Config, root: Path) -> list[np.ndarray] | None:
    """Each source's document starts (its train split's index.json), or None when a
    source's prepared data is not found (the check is then skipped)."""
    paths = [s.dataset for s in cfg.data.sources] or [cfg.data.dataset]
    starts = []
    for path in paths:
        try:
            index = load_index(resolve_dataset(path, root, cfg.run.out_dir))
        except (OSError, ValueError):
            return None
        docs = index["splits"]["train"]["documents"]
        starts.append(np.asarray([d[0] for d in docs], dtype=np.int64))
    return starts


def _check_documents(ledger: Ledger, cfg: Config, root: Path, folder: Path, add: Add) -> None:
    """With the data present: every row's documents are the ones its window overlaps."""
    starts = _document_starts(cfg, root)
    if starts is None or len(starts) != len(ledger.header.sources):
        return
    seq_len = cfg.train.seq_len
    for first, columns in ledger.iter_chunks():
        sources, windows = columns["source"].astype(np.int64), columns["window"].astype(np.int64)
        docs, spans = np.zeros_like(windows), np.zeros_like(windows)  # (steps, B) each
        for s, doc_starts in enumerate(starts):
            rows = sources == s
            docs[rows], spans[rows] = row_documents(doc_starts, windows[rows] * seq_len, seq_len)
        wrong = (docs != columns["document"]) | (spans != columns["span"])
        if (at := np.flatnonzero(wrong.any(axis=1))).size:
            detail = f"step {first + int(at[0])}: a row's documents are not the data's"
            add("ledger-order", folder, detail)
            return
