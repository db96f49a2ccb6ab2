"""The data ledger: what a run trained on, step by step, under `RUN/data_ledger/`.

Per global step N (batch N, trained by update N -> N+1) and row j of its B rows: source
(index into the run's sources), document (id within its source of the document holding
the window's first token), window, epoch (the source's own), seen_before (epoch > 0).

On disk (format_version 1):
- `index.json`: format_version, batch_size, steps_per_chunk, columns [{name, dtype}],
  sources [{name, n_documents, n_windows}], max_epoch, steps, chunks [{file, first_step,
  steps, sha256}]; chunk i starts at step i * steps_per_chunk, all but the last are full.
- `chunk-{i:06d}-{steps}.bin`: each column in turn, a little-endian array of steps x B
  values, step-major; no header, no padding: canonical bytes. A chunk's sha256 is its
  file's, so the digest of its first k steps (prefix digest) is the file's at k steps.
- dtypes: the smallest of uint8/16/32/64 holding each column's largest possible value
  (sources - 1, n_documents - 1, n_windows - 1, max_epoch), bool for seen_before.
- `position(N)`, for a revision's strata.json: {"steps": N, "steps_per_chunk": S,
  "chunks": [sha256 of each chunk before the one holding step N - 1, then that chunk's
  prefix digest up to step N]}. Later steps never change a prefix: it stays checkable.

Size at the Pythia batch (B = 1,024; under 256 sources and epochs, 2^16 to 2^32 windows
and documents): source uint8 (1) + document, window uint32 (4 + 4) + epoch uint8 (1) +
seen_before bool (1) = 11 bytes a row, 11,264 a step, 11,264,000 bytes (10.7 MiB) per
1,000 steps, 1.6 GB for Pythia's 143,000 steps (12,288,000 per 1,000 with uint16 epochs).

Design choices: a chunk goes to a temporary file, fsync, rename to a name stating its
step count; then the index is replaced; then files it no longer names are removed, so a
crash leaves an index naming complete files. Resuming at `start_step` drops later steps
(the order is deterministic: they are recorded again byte for byte). Readers go chunk by
chunk and read a chunk only as a regular file of the folder (`read_own`), of the exact
size. `seen_histogram` counts a document once per epoch of its source with a row
starting inside it (a source's epochs never decrease along the steps).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from strata.run.fields import take
from strata.run.jsonfile import read_object, write_atomic
from strata.tokenizer.fsutil import read_own

FORMAT_VERSION = 1
LEDGER_DIR = "data_ledger"
INDEX = "index.json"
COLUMNS = ("source", "document", "window", "epoch", "seen_before")
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


def _count(name: str, value: Any, low: int) -> int:
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
    dtypes: tuple[np.dtype, ...] = ()  # little-endian, one per name of COLUMNS

    @classmethod
    def create(cls, batch_size: int, names: Sequence[str], n_documents: Sequence[int],
               n_windows: Sequence[int], max_epoch: int, spc: int) -> Header:  # fmt: skip
        """A new ledger's header: the dtypes follow from the counts."""
        if not names or not len(names) == len(n_documents) == len(n_windows):
            raise ValueError("a ledger needs one n_documents and n_windows per source name")
        sources = tuple(
            Source(str(n), _count("n_documents", d, 1), _count("n_windows", w, 1))
            for n, d, w in zip(names, n_documents, n_windows, strict=True)
        )
        sizes = (_count("batch_size", batch_size, 1), _count("steps_per_chunk", spc, 1))
        docs, wins = (max(s[k] for s in sources) - 1 for k in (1, 2))  # the largest ids
        epochs = _count("max_epoch", max_epoch, 0)
        kinds = (*map(smallest_uint, (len(sources) - 1, docs, wins, epochs)), "bool")
        return cls(*sizes, sources, epochs, tuple(np.dtype(k).newbyteorder("<") for k in kinds))

    def to_dict(self) -> dict[str, Any]:
        sizes = {"batch_size": self.batch_size, "steps_per_chunk": self.steps_per_chunk}
        columns = [{"name": n, "dtype": d.name} for n, d in zip(COLUMNS, self.dtypes, strict=True)]
        sources = [s._asdict() for s in self.sources]
        return {"format_version": FORMAT_VERSION, **sizes, "columns": columns,
                "sources": sources, "max_epoch": self.max_epoch}  # fmt: skip

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
        if [k in UINTS for k in kinds] != [True] * 4 + [False] or kinds[4] != "bool":
            raise ValueError(f"{path}: 'columns' dtypes {kinds}: expected 4 of {UINTS}, bool")
        ints = [_get(raw, k, int, path, low=1) for k in ("batch_size", "steps_per_chunk")]
        dtypes = tuple(np.dtype(k).newbyteorder("<") for k in kinds)
        return cls(*ints, sources, _get(raw, "max_epoch", int, path), dtypes)


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


def _digest(columns: Columns, steps: int) -> str:
    """sha256 over the first `steps` steps of each column, in COLUMNS order."""
    digest = hashlib.sha256()
    for name in COLUMNS:
        digest.update(np.ascontiguousarray(columns[name][:steps]).tobytes())
    return digest.hexdigest()


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

    def _columns(self, i: int) -> Columns:
        if self._cached[0] != i:
            self._cached = (i, _read_columns(self.folder, self.chunks[i], self.header))
        return self._cached[1]

    def rows(self, step: int) -> Columns:
        """The columns of global batch `step`, each (B,)."""
        if not 0 <= step < self.steps:
            raise ValueError(f"{self.folder}: step {step} not recorded (0 .. {self.steps - 1})")
        i, s = divmod(step, self.header.steps_per_chunk)
        return {name: col[s] for name, col in self._columns(i).items()}

    def iter_chunks(self, until_step: int | None = None) -> Iterator[tuple[int, Columns]]:
        """(first_step, columns (steps, B)) of each chunk, cut at `until_step` (None: all)."""
        until = self.steps if until_step is None else until_step
        if not 0 <= until <= self.steps:
            raise ValueError(f"{self.folder}: until_step {until} outside 0 .. {self.steps}")
        for i, chunk in enumerate(c for c in self.chunks if c.first_step < until):
            k = min(chunk.steps, until - chunk.first_step)
            yield chunk.first_step, {n: c[:k] for n, c in self._columns(i).items()}

    def source_index(self, source: int | str) -> int:
        """The index of a source given by index or by name."""
        names = [s.name for s in self.header.sources]
        if source in names or (not isinstance(source, str) and 0 <= source < len(names)):
            return names.index(source) if isinstance(source, str) else int(source)
        raise ValueError(f"{self.folder}: no source {source!r}; the run's are {names}")

    def steps_with_document(self, source: int | str, document: int) -> np.ndarray:
        """(n,) int64: every step with a row starting inside `document` of `source`."""
        s, found = self.source_index(source), [np.zeros(0, np.int64)]
        for first, cols in self.iter_chunks():
            hit = ((cols["source"] == s) & (cols["document"] == document)).any(axis=1)  # (steps,)
            found.append(first + np.flatnonzero(hit).astype(np.int64))
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
                docs = np.unique(cols["document"][mine & (cols["epoch"] == epoch)])  # (n,)
                times[docs[upto[docs] <= epoch]] += 1  # first seen in this epoch
                upto[docs] = np.maximum(upto[docs], epoch + 1)
        return {t: int(c) for t, c in enumerate(np.bincount(times)) if t and c}

    def position(self, steps: int) -> dict[str, Any]:
        """The position a revision at step `steps` records (module docstring)."""
        if not 0 <= _count("position steps", steps, 0) <= self.steps:
            raise ValueError(f"{self.folder}: position {steps}: {self.steps} steps recorded")
        spc = self.header.steps_per_chunk
        n = -(-steps // spc)  # chunks holding steps 0 .. steps - 1
        digests = [c.sha256 for c in self.chunks[: max(n - 1, 0)]]
        if n:
            k, last = steps - (n - 1) * spc, self.chunks[n - 1]
            digests.append(last.sha256 if last.steps == k else _digest(self._columns(n - 1), k))
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
            if (digest := _digest(cols, chunk.steps)) != chunk.sha256:
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


class LedgerWriter:
    """Appends the rows of consecutive steps (rank 0 only); `flush` makes them durable."""

    def __init__(self, folder: Path, header: Header, chunks: list[Chunk], start_step: int):
        self.folder, self.header, self.chunks = folder, header, chunks  # the full chunks
        self.steps = self._durable = start_step
        self._first = len(chunks) * header.steps_per_chunk  # the open chunk's first step
        self._named = list(chunks)  # what index.json names
        shape = (header.steps_per_chunk, header.batch_size)
        self._buffer = {n: np.zeros(shape, d) for n, d in zip(COLUMNS, header.dtypes, strict=True)}

    @classmethod
    def open(cls, folder: str | Path, batch_size: int, source_names: Sequence[str],
             n_documents: Sequence[int], n_windows: Sequence[int], max_epoch: int,
             steps_per_chunk: int = 1000, start_step: int = 0) -> LedgerWriter:  # fmt: skip
        """The writer of the ledger in `folder` from `start_step` on, dropping what was
        recorded past it; ValueError for a ledger of another shape or one stopping before
        `start_step`. n_documents, n_windows: per source; epochs go up to max_epoch."""
        folder, start = Path(folder), _count("start_step", start_step, 0)
        new = Header.create(batch_size, source_names, n_documents, n_windows, max_epoch,
                            steps_per_chunk)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        old = Ledger.read(folder) if (folder / INDEX).exists() else Ledger(folder, new, [])
        was, now = old.header.to_dict(), new.to_dict()
        if diff := [k for k in now if k != "max_epoch" and was[k] != now[k]]:
            raise ValueError(f"{folder / INDEX}: made for {diff[0]} {was[diff[0]]!r:.80}")
        if start > old.steps:
            raise ValueError(f"{folder}: the ledger holds {old.steps} steps, not {start}")
        number, k = divmod(start, new.steps_per_chunk)
        writer = cls(folder, new, old.chunks[:number], start)
        if k:
            cols, chunk = old._columns(number), old.chunks[number]
            if _digest(cols, chunk.steps) != chunk.sha256:
                raise ValueError(f"{folder / chunk.file}: sha256 differs from {INDEX}")
            for name in COLUMNS:
                writer._buffer[name][:k] = cols[name][:k]
        writer._commit()
        return writer

    def append(self, step: int, sources: Any, documents: Any, windows: Any, epochs: Any) -> None:
        """Record global batch `step`, the next one: four (B,) integer arrays."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step != self.steps:
            kind = "a repeat" if isinstance(step, int) and step < self.steps else "a gap"
            raise ValueError(f"ledger append of step {step!r}: expected step {self.steps} "
                             f"({kind}; steps are recorded one after another)")  # fmt: skip
        values = self._checked(step, [sources, documents, windows, epochs])
        for name, value in zip(COLUMNS, values, strict=True):
            self._buffer[name][self.steps - self._first] = value
        self.steps += 1
        if self.steps - self._first == self.header.steps_per_chunk:
            self._commit()  # a full chunk is written at once

    def _checked(self, step: int, arrays: list[Any]) -> list[np.ndarray]:
        """The five (B,) columns of a step; ValueError naming a value out of range."""
        h, b, out = self.header, self.header.batch_size, [np.asarray(a) for a in arrays]  # (B,)
        for name, a in zip(COLUMNS, out, strict=False):
            if a.shape != (b,) or a.dtype.kind not in "iu" or (a.size and a.min() < 0):
                raise ValueError(f"ledger step {step}: {name}: expected ({b},) integers >= 0, "
                                 f"got {a.dtype} {a.shape}")  # fmt: skip
        per_source = [(len(h.sources), *s[1:], h.max_epoch + 1) for s in h.sources]
        limits = np.asarray(per_source, np.uint64)[np.minimum(out[0], len(h.sources) - 1)]
        values = np.stack([a.astype(np.uint64) for a in out], axis=1)  # (B, 4)
        if (bad := values >= limits).any():
            j, c = np.argwhere(bad)[0]
            raise ValueError(f"ledger step {step} row {j}: {COLUMNS[c]} {values[j, c]} is not "
                             f"below {limits[j, c]}")  # fmt: skip
        return [*out, out[3] > 0]

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
        index = {"steps": self.steps, "chunks": [c._asdict() for c in named]}
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
