"""The trainer's side of the data ledger (`RUN/data_ledger/`, format in run/ledger.py).

Design choices:
- Rank 0 records every global batch after its update: per row the source, the documents
  its seq_len + 1 tokens overlap (first and span, binary searches in that source's
  document starts), the window, and the source's epoch, from `TrainBatches.origin` (the data-order
  contract itself, so the ledger is the order the run trained on).
- It is flushed before every resume checkpoint (unless the run's disk is full: the
  checkpoint goes first, and a resume records lost steps again) and publication
  (a failure there stops the run, train/stops.py), and every revision's
  `strata.json` records `ledger`, the ledger's position at its step, so the ledger of a
  copied run can be checked against what its revisions saw (`strata verify`).
- A resume at step N drops what was recorded past N (recorded again, identically); a run
  that had no ledger yet (or a shorter one, or one of an older format) is filled in from
  the data order first. The
  sources keep the names the ledger recorded (a moved dataset changes its folder name,
  not the run).
- Injected rows (`data.inject`) are recorded as source `inject`, after the data
  sources: document = the injection's index, window 0, span 0.
- The epoch column is sized for 255 epochs at least, so raising `train.max_steps` on a
  resume keeps the ledger's dtypes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from strata.run.jsonfile import read_object
from strata.run.ledger import FORMAT_VERSION, INDEX, LEDGER_DIR, Ledger, row_documents
from strata.run.ledger_write import LedgerWriter
from strata.tokenizer.edits import INJECT
from strata.train.data import TrainBatches


def _current(folder: Path) -> Ledger | None:
    """The recorded ledger, or None when there is none or it has an older format (its
    index is removed: the ledger is recorded again from the data order)."""
    if not (folder / INDEX).is_file():
        return None
    if read_object(folder / INDEX).get("format_version") != FORMAT_VERSION:
        (folder / INDEX).unlink()
        return None
    return Ledger.read(folder)


class RunLedger:
    """Records the batches of one run into `run_dir`/data_ledger (rank 0)."""

    def __init__(
        self,
        run_dir: Path,
        batches: TrainBatches,
        names: list[str],
        max_steps: int,
        start: int,
        fork: dict[str, Any] | None = None,
    ) -> None:
        self.batches, folder = batches, Path(run_dir) / LEDGER_DIR
        self.starts = [np.asarray(s._doc_starts, dtype=np.int64) for s in batches.sources]
        drawn = batches.mixture.draws_before(max_steps * batches.global_batch_size)
        counts = np.asarray(batches.mixture.n_windows, dtype=np.int64)
        max_epoch = max(255, int(((np.maximum(drawn, 1) - 1) // counts).max()))
        docs, counts = [max(len(s), 1) for s in self.starts], list(counts)
        if injected := len(batches.edits.rows) if batches.edits is not None else 0:
            names, docs, counts = [*names, INJECT], [*docs, injected], [*counts, 1]
        old = _current(folder)
        recorded = old.steps if old is not None else 0
        if old is not None and len(old.header.sources) == len(names):
            names = [s.name for s in old.header.sources]  # labels: a moved dataset keeps them
        self.writer = LedgerWriter.open(
            folder, batches.global_batch_size, names, docs, counts, max_epoch, batches.seq_len,
            start_step=min(start, recorded), extra={"fork": fork} if fork else None,
        )  # fmt: skip
        for step in range(self.writer.steps, start):  # an older run, or a shorter ledger
            self.record(step)

    def record(self, step: int) -> None:
        """Append global batch `step` (the next one)."""
        origin = self.batches.origin(step)
        first = origin.windows * self.batches.seq_len  # stream position of each row's start
        documents, spans = np.empty_like(first), np.empty_like(first)
        for s, starts in enumerate(self.starts):
            rows = origin.sources == s
            documents[rows], spans[rows] = row_documents(starts, first[rows], self.batches.seq_len)
        injected = origin.sources == len(self.starts)  # document: the injection, window 0
        documents[injected], spans[injected] = origin.windows[injected], 0
        windows = np.where(injected, 0, origin.windows)
        self.writer.append(step, origin.sources, documents, spans, windows, origin.epochs)

    def flush_if_room(self) -> None:
        """Flush before a resume checkpoint, unless the run's disk is full: the checkpoint
        (on `resume/`, maybe another disk) matters more, and a resume records again any
        step the ledger lost (it is a pure function of the data order)."""
        try:
            self.writer.flush()
        except OSError:
            pass

    def position(self, steps: int) -> dict[str, Any]:
        """Flush, then the ledger's position at `steps` (for a revision's strata.json)."""
        self.writer.flush()
        return self.writer.position(steps)
