"""Writing the data ledger (format in run/ledger.py): rank 0 appends every step.

Design choices: a chunk goes to a temporary file, fsync, rename to a name stating its
step count; then the index is replaced; then files it no longer names are removed, so a
crash leaves an index naming complete files. Opening at `start_step` drops later steps
(the order is deterministic: they are recorded again byte for byte).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from strata.run.jsonfile import write_atomic
from strata.run.ledger import (
    CHUNK_FILE,
    CHUNK_NAME,
    COLUMNS,
    INDEX,
    LEFTOVER,
    Chunk,
    Header,
    Ledger,
    checked_count,
    prefix_digest,
)


class LedgerWriter:
    """Appends the rows of consecutive steps (rank 0 only); `flush` makes them durable."""

    def __init__(self, folder: Path, header: Header, chunks: list[Chunk], start_step: int):
        self.folder, self.header, self.chunks = folder, header, chunks  # the full chunks
        self.steps = self._durable = start_step
        self._first = len(chunks) * header.steps_per_chunk  # the open chunk's first step
        self._named = list(chunks)  # what index.json names
        self.extra: dict[str, Any] = {}  # more keys of index.json
        shape = (header.steps_per_chunk, header.batch_size)
        self._buffer = {n: np.zeros(shape, d) for n, d in zip(COLUMNS, header.dtypes, strict=True)}

    @classmethod
    def open(cls, folder: str | Path, batch_size: int, source_names: Sequence[str],
             n_documents: Sequence[int], n_windows: Sequence[int], max_epoch: int,
             max_span: int, steps_per_chunk: int = 1000, start_step: int = 0,
             extra: dict[str, Any] | None = None) -> LedgerWriter:  # fmt: skip
        """The writer of the ledger in `folder` from `start_step` on, dropping what was
        recorded past it; ValueError for a ledger of another shape or one stopping before
        `start_step`. n_documents, n_windows: per source; epochs go up to max_epoch, spans to
        max_span (seq_len: a window's seq_len + 1 tokens reach at most seq_len more
        documents). `extra`: more keys for index.json (a fork's `fork` record)."""
        folder, start = Path(folder), checked_count("start_step", start_step, 0)
        new = Header.create(batch_size, source_names, n_documents, n_windows, max_epoch,
                            steps_per_chunk, max_span)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        old = Ledger.read(folder) if (folder / INDEX).exists() else Ledger(folder, new, [])
        was, now = old.header.to_dict(), new.to_dict()
        if was["sources"] == now["sources"][: len(was["sources"])]:
            was["sources"] = now["sources"]  # sources added (a fork's injections): the same rows
        if diff := [k for k in now if k not in ("max_epoch", "max_span") and was[k] != now[k]]:
            raise ValueError(f"{folder / INDEX}: made for {diff[0]} {was[diff[0]]!r:.80}")
        if start > old.steps:
            raise ValueError(f"{folder}: the ledger holds {old.steps} steps, not {start}")
        number, k = divmod(start, new.steps_per_chunk)
        writer = cls(folder, new, old.chunks[:number], start)
        writer.extra = dict(extra or {})
        if k:
            cols, chunk = old.chunk_columns(number), old.chunks[number]
            if prefix_digest(cols, chunk.steps) != chunk.sha256:
                raise ValueError(f"{folder / chunk.file}: sha256 differs from {INDEX}")
            for name in COLUMNS:
                writer._buffer[name][:k] = cols[name][:k]
        writer._commit()
        return writer

    def append(self, step: int, sources: Any, documents: Any, spans: Any, windows: Any,
               epochs: Any) -> None:  # fmt: skip
        """Record global batch `step`, the next one: five (B,) integer arrays."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step != self.steps:
            kind = "a repeat" if isinstance(step, int) and step < self.steps else "a gap"
            raise ValueError(f"ledger append of step {step!r}: expected step {self.steps} "
                             f"({kind}; steps are recorded one after another)")  # fmt: skip
        values = self._checked(step, [sources, documents, spans, windows, epochs])
        for name, value in zip(COLUMNS, values, strict=True):
            self._buffer[name][self.steps - self._first] = value
        self.steps += 1
        if self.steps - self._first == self.header.steps_per_chunk:
            self._commit()  # a full chunk is written at once

    def _checked(self, step: int, arrays: list[Any]) -> list[np.ndarray]:
        """The six (B,) columns of a step; ValueError naming a value out of range."""
        h, b, out = self.header, self.header.batch_size, [np.asarray(a) for a in arrays]  # (B,)
        for name, a in zip(COLUMNS, out, strict=False):
            if a.shape != (b,) or a.dtype.kind not in "iu" or (a.size and a.min() < 0):
                raise ValueError(f"ledger step {step}: {name}: expected ({b},) integers >= 0, "
                                 f"got {a.dtype} {a.shape}")  # fmt: skip
        per_source = [(len(h.sources), s.n_documents, h.max_span + 1, s.n_windows,
                       h.max_epoch + 1) for s in h.sources]  # fmt: skip
        limits = np.asarray(per_source, np.uint64)[np.minimum(out[0], len(h.sources) - 1)]
        values = np.stack([a.astype(np.uint64) for a in out], axis=1)  # (B, 5)
        last = values[:, 1:2] + values[:, 2:3]  # (B, 1): the last document overlapped
        values, limits = np.hstack([values, last]), np.hstack([limits, limits[:, 1:2]])
        if (bad := values >= limits).any():
            j, c = np.argwhere(bad)[0]
            what = (*COLUMNS[:5], "document + span")[c]
            raise ValueError(f"ledger step {step} row {j}: {what} {values[j, c]} is not "
                             f"below {limits[j, c]}")  # fmt: skip
        return [*out, out[4] > 0]

    def flush(self) -> None:
        """Make every appended step durable: the open chunk's file, then the index."""
        if self.steps > self._durable:
            self._commit()

    def _commit(self) -> None:
        """Write the open chunk (temporary file, fsync, rename), the index, remove the rest."""
        k, named = self.steps - self._first, list(self.chunks)
        if k:
            data = b"".join(np.ascontiguousarray(self._buffer[n][:k]).tobytes() for n in COLUMNS)
            sha = hashlib.sha256(data).hexdigest()
            named.append(Chunk(CHUNK_NAME.format(len(named), k), self._first, k, sha))
            tmp = self.folder / f".{named[-1].file}.tmp-{os.getpid()}"  # a leftover: LEFTOVER
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / named[-1].file)
        index = {**self.extra, "steps": self.steps, "chunks": [c._asdict() for c in named]}
        write_atomic(self.folder / INDEX, self.header.to_dict() | index)
        for path in self.folder.iterdir():  # versions the index no longer names, leftovers
            stale = CHUNK_FILE.fullmatch(path.name) and path.name not in {c.file for c in named}
            if (stale or LEFTOVER.fullmatch(path.name)) and (path.is_symlink() or path.is_file()):
                path.unlink(missing_ok=True)
        self._durable, self._named = self.steps, named
        if k == self.header.steps_per_chunk:
            self.chunks, self._first = named, self._first + k

    def position(self, steps: int) -> dict[str, Any]:
        """The position of a revision at step `steps`; only durable steps (flush first)."""
        return Ledger(self.folder, self.header, self._named).position(steps)
