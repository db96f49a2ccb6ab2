"""The data ledger: what a run trained on, step by step, under `RUN/data_ledger/`.

Per global step N (batch N, trained by update N -> N+1) and row j of its B rows: source
(index into the run's sources), document (id within its source of the document holding
the window's first token), span (how many later documents its seq_len + 1 tokens reach:
the row overlaps documents document .. document + span), window, epoch (the source's
own), seen_before (epoch > 0).

On disk (format_version 2; 1 had no span):
- `index.json`: format_version, batch_size, steps_per_chunk, columns [{name, dtype}],
  sources [{name, n_documents, n_windows}], max_epoch, steps, chunks [{file, first_step,
  steps, sha256}]; chunk i starts at step i * steps_per_chunk, all but the last are full.
- `chunk-{i:06d}-{steps}.bin`: each column in turn, a little-endian array of steps x B
  values, step-major; no header, no padding: canonical bytes. A chunk's sha256 is its
  file's, so the digest of its first k steps (prefix digest) is the file's at k steps.
- dtypes: the smallest of uint8/16/32/64 holding each column's largest possible value
  (sources - 1, n_documents - 1, max_span, n_windows - 1, max_epoch), bool for
  seen_before; max_span is at most seq_len (every document holds a token).
- `position(N)`, for a revision's strata.json: {"steps": N, "steps_per_chunk": S,
  "chunks": [sha256 of each chunk before the one holding step N - 1, then that chunk's
  prefix digest up to step N]}. Later steps never change a prefix: it stays checkable.

Size at the Pythia batch (B = 1,024, seq_len 2,048; under 256 sources and epochs, 2^16
to 2^32 windows and documents): source uint8 (1) + document uint32 (4) + span uint16 (2)
+ window uint32 (4) + epoch uint8 (1) + seen_before bool (1) = 13 bytes a row, 13,312 a
step, 13,312,000 bytes (12.7 MiB) per 1,000 steps, 1.9 GB for Pythia's 143,000 steps:
0.03% of its 154 revisions of 12b weights (a revision alone is 24 GB in fp16).

Design choices: a chunk goes to a temporary file, fsync, rename to a name stating its
step count; then the index is replaced; then files it no longer names are removed, so a
crash leaves an index naming complete files. Resuming at `start_step` drops later steps
(the order is deterministic: they are recorded again byte for byte). Readers go chunk by
chunk and read a chunk only as a regular file of the folder (`read_own`), of the exact
size. `seen_histogram` counts a document once per epoch of its source with a row
overlapping it (a source's epochs never decrease along the steps). The writer is
`run/ledger_write.py`.
"""

from __future__ import annotations

import hashlib
import re
from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from strata.run.fields import take
from strata.run.jsonfile import read_object
from strata.tokenizer.fsutil import read_own

FORMAT_VERSION = 2
LEDGER_DIR = "data_ledger"
INDEX = "index.json"
COLUMNS = ("source", "document", "span", "window", "epoch", "seen_before")
UINTS = ("uint8", "uint16", "uint32", "uint64")
CHUNK_NAME = "chunk-{:06d}-{}.bin"  # .format(chunk number, steps it holds)
CHUNK_FILE = re.compile(r"chunk-[0-9]{6,}-[0-9]+\.bin")
LEFTOVER = re.compile(r"\.(chunk-[0-9]{6,}-[0-9]+\.bin|index\.json)\.tmp-[0-9]+")
SHA256 = re.compile(r"[0-9a-f]{64}")

Source = namedtuple("Source", "name n_documents n_windows")
Chunk = namedtuple("Chunk", "file first_step steps sha256")
Columns = dict[str, np.ndarray]
"""Column name -> (steps, B) array (a chunk) or (B,) array (a step)."""


def smallest_uint(max_value: int) -> str:
    """The name of the smallest unsigned dtype holding 0 .. `max_value`."""
    return next(n for n in UINTS if max_value <= np.iinfo(n).max)


def checked_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"ledger {name}: expected an integer >= {low}, got {value!r:.80}")
    return int(value)


def _get(raw: Any, key: str, kind: type, path: Path, at: str = "", low: int = 0) -> Any:
    """`raw[key]`, a `kind` (>= `low`); one-line ValueError naming the file and the key."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: '{at[:-1]}' = {raw!r:.80}: expected an object")
    value = take({at + key: raw.get(key)}, at + key, kind, path, optional=False)
    if kind is int and value < low:
        raise ValueError(f"{path}: '{at}{key}' = {value}: expected an integer >= {low}")
    return value


@dataclass(frozen=True)
class Header:
    """What a ledger was made for: index.json but its steps and chunks."""

    batch_size: int
    steps_per_chunk: int
    sources: tuple[Source, ...]
    max_epoch: int
    max_span: int
    dtypes: tuple[np.dtype, ...] = ()  # little-endian, one per name of COLUMNS

    @classmethod
    def create(cls, batch_size: int, names: Sequence[str], n_documents: Sequence[int],
               n_windows: Sequence[int], max_epoch: int, spc: int,
               max_span: int) -> Header:  # fmt: skip
        """A new ledger's header: the dtypes follow from the counts."""
        if not names or not len(names) == len(n_documents) == len(n_windows):
            raise ValueError("a ledger needs one n_documents and n_windows per source name")
        sources = tuple(
            Source(str(n), checked_count("n_documents", d, 1), checked_count("n_windows", w, 1))
            for n, d, w in zip(names, n_documents, n_windows, strict=True)
        )
        count = checked_count
        sizes = (count("batch_size", batch_size, 1), count("steps_per_chunk", spc, 1))
        docs, wins = (max(s[k] for s in sources) - 1 for k in (1, 2))  # the largest ids
        epochs, span = count("max_epoch", max_epoch, 0), min(count("max_span", max_span, 0), docs)
        kinds = (*map(smallest_uint, (len(sources) - 1, docs, span, wins, epochs)), "bool")
        dtypes = tuple(np.dtype(k).newbyteorder("<") for k in kinds)
        return cls(*sizes, sources, epochs, span, dtypes)

    def to_dict(self) -> dict[str, Any]:
        sizes = {"batch_size": self.batch_size, "steps_per_chunk": self.steps_per_chunk}
        columns = [{"name": n, "dtype": d.name} for n, d in zip(COLUMNS, self.dtypes, strict=True)]
        sources = [s._asdict() for s in self.sources]
        return {"format_version": FORMAT_VERSION, **sizes, "columns": columns,
                "sources": sources, "max_epoch": self.max_epoch,
                "max_span": self.max_span}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> Header:
        if (version := _get(raw, "format_version", int, path)) != FORMAT_VERSION:
            raise ValueError(f"{path}: 'format_version' = {version}: expected {FORMAT_VERSION}")
        keys = (("name", str, 0), ("n_documents", int, 1), ("n_windows", int, 1))
        sources = tuple(
            Source(*(_get(s, k, t, path, f"sources[{i}].", low) for k, t, low in keys))
            for i, s in enumerate(_get(raw, "sources", list, path) or [None])
        )
        columns = _get(raw, "columns", list, path)
        names = [_get(c, "name", str, path, f"columns[{i}].") for i, c in enumerate(columns)]
        if names != list(COLUMNS):
            raise ValueError(f"{path}: 'columns' names {names}: expected {list(COLUMNS)}")
        kinds = [_get(c, "dtype", str, path, f"columns[{i}].") for i, c in enumerate(columns)]
        if [k in UINTS for k in kinds] != [True] * 5 + [False] or kinds[5] != "bool":
            raise ValueError(f"{path}: 'columns' dtypes {kinds}: expected 5 of {UINTS}, bool")
        ints = [_get(raw, k, int, path, low=1) for k in ("batch_size", "steps_per_chunk")]
        dtypes = tuple(np.dtype(k).newbyteorder("<") for k in kinds)
        bounds = (_get(raw, k, int, path) for k in ("max_epoch", "max_span"))
        return cls(*ints, sources, *bounds, dtypes)


def _chunks_from(raw: dict[str, Any], header: Header, path: Path) -> list[Chunk]:
    """The chunk entries of index.json, checked: contiguous from step 0, plain names."""
    items, spc, chunks = _get(raw, "chunks", list, path), header.steps_per_chunk, []
    for i, item in enumerate(items):
        at = f"chunks[{i}]."
        file, sha = _get(item, "file", str, path, at), _get(item, "sha256", str, path, at)
        first, steps = _get(item, "first_step", int, path, at), _get(item, "steps", int, path, at)
        if file != (name := CHUNK_NAME.format(i, steps)):
            raise ValueError(f"{path}: '{at}file' = {file!r:.80}: expected {name!r}")
        if first != i * spc or not 0 < steps <= spc or (steps < spc and i < len(items) - 1):
            raise ValueError(f"{path}: '{at}steps' = {steps} from step {first}: not chunk {i}")
        if not SHA256.fullmatch(sha):
            raise ValueError(f"{path}: '{at}sha256' = {sha!r:.80}: expected 64 hex digits")
        chunks.append(Chunk(file, first, steps, sha))
    if (total := _get(raw, "steps", int, path)) != sum(c.steps for c in chunks):
        raise ValueError(f"{path}: 'steps' = {total}: the chunks hold another number")
    return chunks


def _read_columns(folder: Path, chunk: Chunk, header: Header) -> Columns:
    """The columns of `chunk`, each (steps, B); FileNotFoundError or ValueError naming it."""
    path, n = folder / chunk.file, chunk.steps * header.batch_size
    size = n * sum(d.itemsize for d in header.dtypes)
    if path.is_file() and not path.is_symlink() and (found := path.stat().st_size) != size:
        raise ValueError(f"{path}: {found:,} bytes, expected {size:,} for {chunk.steps} steps")
    data, out, offset = read_own(path, size, "ledger"), {}, 0  # a link or a FIFO is refused
    for name, dtype in zip(COLUMNS, header.dtypes, strict=True):
        out[name] = np.frombuffer(data, dtype, n, offset).reshape(chunk.steps, -1)  # (steps, B)
        offset += n * dtype.itemsize
    return out


def prefix_digest(columns: Columns, steps: int) -> str:
    """sha256 over the first `steps` steps of each column, in COLUMNS order."""
    digest = hashlib.sha256()
    for name in COLUMNS:
        digest.update(np.ascontiguousarray(columns[name][:steps]).tobytes())
    return digest.hexdigest()


def _overlapped(cols: Columns, rows: np.ndarray) -> np.ndarray:
    """(n,) the distinct documents the `rows` (a (steps, B) mask) overlap."""
    first, span = cols["document"][rows].astype(np.int64), cols["span"][rows].astype(np.int64)
    if not span.any():
        return np.unique(first)
    return np.unique(np.repeat(first, span + 1) + _ramps(span + 1))


def _ramps(lengths: np.ndarray) -> np.ndarray:
    """0, 1, .., l - 1 for each l of `lengths`, concatenated."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)


def row_documents(starts: np.ndarray, positions: np.ndarray, seq_len: int) -> tuple:
    """(document, span) of windows starting at token `positions` of a source whose
    documents start at `starts` (sorted, starts[0] == 0): the documents holding the
    window's first and its last (seq_len + 1-th) token, as (first, last - first)."""
    first = np.maximum(np.searchsorted(starts, positions, side="right") - 1, 0)
    last = np.maximum(np.searchsorted(starts, positions + seq_len, side="right") - 1, 0)
    return first, last - first


class Ledger:
    """A recorded ledger (`Ledger.read(folder)`), scanned chunk by chunk."""

    def __init__(self, folder: Path, header: Header, chunks: list[Chunk]):
        self.folder, self.header, self.chunks = folder, header, chunks
        self._cached: tuple[int, Columns] = (-1, {})  # the last chunk read

    @classmethod
    def read(cls, folder: str | Path) -> Ledger:
        """The ledger in `folder`; ValueError naming index.json and the key when malformed."""
        raw = read_object(path := Path(folder) / INDEX)
        return cls(Path(folder), h := Header.from_dict(raw, path), _chunks_from(raw, h, path))

    @property
    def steps(self) -> int:
        return sum(c.steps for c in self.chunks)

    def chunk_columns(self, i: int) -> Columns:
        if self._cached[0] != i:
            self._cached = (i, _read_columns(self.folder, self.chunks[i], self.header))
        return self._cached[1]

    def rows(self, step: int) -> Columns:
        """The columns of global batch `step`, each (B,)."""
        if not 0 <= step < self.steps:
            raise ValueError(f"{self.folder}: step {step} not recorded (0 .. {self.steps - 1})")
        i, s = divmod(step, self.header.steps_per_chunk)
        return {name: col[s] for name, col in self.chunk_columns(i).items()}

    def iter_chunks(self, until_step: int | None = None) -> Iterator[tuple[int, Columns]]:
        """(first_step, columns (steps, B)) of each chunk, cut at `until_step` (None: all)."""
        until = self.steps if until_step is None else until_step
        if not 0 <= until <= self.steps:
            raise ValueError(f"{self.folder}: until_step {until} outside 0 .. {self.steps}")
        for i, chunk in enumerate(c for c in self.chunks if c.first_step < until):
            k = min(chunk.steps, until - chunk.first_step)
            yield chunk.first_step, {n: c[:k] for n, c in self.chunk_columns(i).items()}

    def source_index(self, source: int | str) -> int:
        """The index of a source given by index or by name."""
        names = [s.name for s in self.header.sources]
        if source in names or (not isinstance(source, str) and 0 <= source < len(names)):
            return names.index(source) if isinstance(source, str) else int(source)
        raise ValueError(f"{self.folder}: no source {source!r}; the run's are {names}")

    def rows_with(self, source: int | str, document: int | None = None,
                  windows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """(n, 4) int64 (step, row, window, epoch), step-major: every row of `source` whose
        tokens overlap `document`, or whose window is one of `windows`."""
        s, found = self.source_index(source), [np.zeros((0, 4), np.int64)]
        for first, cols in self.iter_chunks():
            hit = cols["source"] == s  # (steps, B)
            if document is not None:
                lo = cols["document"].astype(np.int64)
                hit &= (lo <= document) & (lo + cols["span"] >= document)
            if windows is not None:
                hit &= np.isin(cols["window"], windows)
            step, row = np.nonzero(hit)
            more = (cols["window"][step, row], cols["epoch"][step, row])
            found.append(np.stack([first + step, row, *more], axis=1).astype(np.int64))
        return np.concatenate(found)

    def counts_per_source(self, until_step: int | None = None) -> np.ndarray:
        """(steps, K) int64: the rows of each source in each step below `until_step`."""
        out = [np.zeros((0, k := len(self.header.sources)), np.int64)]
        for _, cols in self.iter_chunks(until_step):
            n = len(cols["source"])
            flat = (np.arange(n)[:, None] * k + cols["source"]).ravel()  # (steps * B,)
            out.append(np.bincount(flat, minlength=n * k).reshape(n, k).astype(np.int64))
        return np.concatenate(out)

    def seen_histogram(self, source: int | str, until_step: int | None = None) -> dict[int, int]:
        """{times: documents of `source` seen in that many epochs below `until_step`}."""
        s, kind = self.source_index(source), smallest_uint(self.header.max_epoch + 1)
        times = np.zeros(self.header.sources[s].n_documents, kind)  # (n_docs,) epochs seen in
        upto = np.zeros_like(times)  # (n_docs,) the latest such epoch + 1 (0: none)
        for _, cols in self.iter_chunks(until_step):
            mine = cols["source"] == s  # (steps, B)
            for epoch in np.unique(cols["epoch"][mine]).astype(np.int64):  # few: they only grow
                docs = _overlapped(cols, mine & (cols["epoch"] == epoch))  # (n,)
                times[docs[upto[docs] <= epoch]] += 1  # first seen in this epoch
                upto[docs] = np.maximum(upto[docs], epoch + 1)
        return {t: int(c) for t, c in enumerate(np.bincount(times)) if t and c}

    def position(self, steps: int) -> dict[str, Any]:
        """The position a revision at step `steps` records (module docstring)."""
        if not 0 <= checked_count("position steps", steps, 0) <= self.steps:
            raise ValueError(f"{self.folder}: position {steps}: {self.steps} steps recorded")
        spc = self.header.steps_per_chunk
        n = -(-steps // spc)  # chunks holding steps 0 .. steps - 1
        digests = [c.sha256 for c in self.chunks[: max(n - 1, 0)]]
        if n:
            k, last = steps - (n - 1) * spc, self.chunks[n - 1]
            partial = last.steps != k
            digests.append(prefix_digest(self.chunk_columns(n - 1), k) if partial else last.sha256)
        return {"steps": steps, "steps_per_chunk": spc, "chunks": digests}

    def verify(self) -> list[str]:
        """Problems: a chunk missing, of the wrong size or digest, seen_before != epoch > 0."""
        problems = []
        for chunk in self.chunks:
            path = self.folder / chunk.file
            try:
                cols = _read_columns(self.folder, chunk, self.header)
            except (FileNotFoundError, ValueError) as err:  # "PATH: missing", "PATH: ..."
                problems.append(str(err))
                continue
            if (digest := prefix_digest(cols, chunk.steps)) != chunk.sha256:
                problems.append(f"{path}: sha256 {digest}, {INDEX} records {chunk.sha256}")
            elif (cols["seen_before"].view(np.uint8) != (cols["epoch"] > 0)).any():
                problems.append(f"{path}: seen_before disagrees with epoch > 0")
        return problems

    def check_position(self, position: Any) -> list[str]:
        """Problems when a revision's recorded position disagrees with this ledger."""
        try:
            expected = self.position(position["steps"])
        except (KeyError, TypeError, ValueError, OSError) as err:
            return [f"position {position!r:.80}: not one of this ledger ({err})"]
        given, steps, want = position.get("chunks"), expected["steps"], expected["chunks"]
        if position.get("steps_per_chunk", spc := expected["steps_per_chunk"]) != spc:
            return [f"position {steps}: steps_per_chunk is not the ledger's"]
        if not isinstance(given, list) or len(given) != len(want):
            return [f"position {steps}: chunks {given!r:.80}; the ledger has {len(want)}"]
        return [f"position {steps}: chunk {i} sha256 {a!r:.70}; the ledger's "
                f"{self.chunks[i].file} gives {b}"
                for i, (a, b) in enumerate(zip(given, want, strict=True)) if a != b]  # fmt: skip
