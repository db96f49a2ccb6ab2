"""Batch provenance: exactly which sequences formed global batch N, and at which steps
(and so in which published revisions) a text or a document was trained on.

Design choices:
- Everything is rebuilt offline from the prepared dataset and the run's resolved
  `RUN/config.toml` (read through the run layer, `strata.run`, with the real schema:
  `checkpoints/` never imports `train/`), through the data-order contract in
  `tokenizer/order.py`. No model, no GPU.
- The dataset is found by the run layer's one rule (`strata.run.dataset`: the working
  directory, then the folder the run was launched from); `dataset=` overrides. A
  dataset whose fingerprint or tokenizer differs from the run's is refused.
- One rule for `--find` and `--doc`: the positions window i trained on are all its
  `seq_len + 1` tokens, `[i * seq_len, (i + 1) * seq_len]`, its inputs and its targets
  (the last one is only predicted, but the model was trained to predict it). A window
  "overlaps" a document when one of those tokens lies in the document's span (its
  tokens plus the EOS that follows it).
- Text is searched at byte level: every token's bytes (`tokenizer.tokbytes`: byte-level
  BPE alphabet, or pieces with byte fallback) are laid end to end, so an occurrence is
  found whatever tokens the text was split into in context. The table is checked
  against `Tokenizer.decode` first; if it disagrees, the token ids of
  `encode(TEXT)` are searched instead (method "tokens"). The stream is scanned in
  chunks that overlap by the needle's length, so matches across chunks are found once.
- An occurrence "was trained on" in window i when all its tokens lie within those
  positions. Neighbouring windows share one token, so an occurrence lies in at most
  two windows (two only when it is that one shared token).
- Special tokens (the EOS ending every document) stand for no text: a query is matched
  as text, so a literal `<|endoftext|>` in it matches those characters in a document
  (as prepare encoded them), never the EOS token; and a match may not span an EOS (it
  would join two documents).
- Windows map to steps by inverting each epoch's permutation once (numpy), never by
  looping over steps. Revision `stepM` has seen batches 0 .. M-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from strata.checkpoints.schedule import publish_steps
from strata.run import Manifest, RevisionMeta, RunPaths, dataset_fingerprint, locate
from strata.run.config import Config, PublishConfig
from strata.run.dataset import resolve_dataset
from strata.tokenizer.order import batch_digest, batch_window_indices, epoch_permutation, rank_slice
from strata.tokenizer.shards import TokenShards, load_index
from strata.tokenizer.tok import Tokenizer
from strata.tokenizer.tokbytes import token_bytes


@dataclass(frozen=True)
class RunSpec:
    """What the data order of a run depends on, from its `config.toml`."""

    run_dir: Path
    dataset: Path
    seed: int
    seq_len: int
    global_batch_size: int
    max_steps: int
    publish: PublishConfig = field(default_factory=PublishConfig)

    @classmethod
    def of(cls, run: RunPaths, cfg: Config, dataset: Path) -> RunSpec:
        t = cfg.train
        return cls(run.root, dataset, t.seed, t.seq_len, t.global_batch_size, t.max_steps,
                   cfg.publish)  # fmt: skip


def read_run(run_dir: str | Path, dataset: str | Path | None = None) -> RunSpec:
    """The data-order facts of the run at `run_dir`, with its dataset found by the one
    rule of `strata.run.dataset` (or `dataset` when given) and checked to be the one the
    run recorded."""
    where = locate(run_dir)
    cfg = where.run.read_config() if where.kind == "run" else None
    if cfg is None:
        raise FileNotFoundError(f"{run_dir}: no config.toml; expected a run folder")
    run = where.run
    if len(cfg.data.sources) > 1:
        raise ValueError(
            f"{run_dir}: trained on a mixture of {len(cfg.data.sources)} sources; "
            "its batches are answered from its data ledger (RUN/data_ledger/), not found"
        )
    data = Path(dataset) if dataset else resolve_dataset(cfg.data.dataset, run.root,
                                                        cfg.run.out_dir)  # fmt: skip
    spec = RunSpec.of(run, cfg, data)
    _check_same_data(spec)
    return spec


def _recorded_fingerprint(run: RunPaths) -> tuple[str | None, Path | None]:
    """`data.dataset_fingerprint` of the run's latest readable revision, if any."""
    try:
        entries = Manifest.read(run.checkpoints).revisions
    except ValueError:
        return None, None  # `strata verify` reports a broken manifest
    for entry in sorted(entries, key=lambda e: e.step, reverse=True):
        try:
            meta = RevisionMeta.read(run.checkpoints / entry.revision)
        except (OSError, ValueError):
            continue
        if meta is not None and meta.data is not None:
            return meta.data.dataset_fingerprint, run.checkpoints / entry.revision
    return None, None


def _check_same_data(spec: RunSpec) -> None:
    """Refuse a dataset or tokenizer other than the ones the run recorded."""
    run = RunPaths(spec.run_dir)
    recorded, where = _recorded_fingerprint(run)
    if recorded and recorded != dataset_fingerprint(spec.dataset):
        raise ValueError(f"{spec.dataset}: not the dataset this run trained on (its "
                         f"index.json differs from the one {where} records)")  # fmt: skip
    tok = run.tokenizer
    if (
        tok.is_dir()
        and Tokenizer.load(tok).sha256() != load_index(spec.dataset)["tokenizer_sha256"]
    ):
        raise ValueError(f"{spec.dataset}: prepared with another tokenizer than {tok}")


def revisions(spec: RunSpec) -> tuple[list[tuple[str, int]], str]:
    """(revision name, step) in step order, from the manifest, else from the schedule."""
    entries = Manifest.read(RunPaths(spec.run_dir).checkpoints).revisions
    if entries:
        return [(e.revision, e.step) for e in entries], "manifest"
    p = spec.publish
    steps = publish_steps(spec.max_steps, p.every, p.extra_steps, p.log_spaced)
    return [(f"step{s}", s) for s in steps], "schedule"


def documents(shards: TokenShards, start: int, stop: int) -> list[tuple[int, str]]:
    """(id, source) of every document with a token in stream positions [start, stop)."""
    first, last = shards.document_at(start)[0], shards.document_at(stop - 1)[0]
    docs = shards.index["splits"][shards.split]["documents"]
    return [(d, str(docs[d][1])) for d in range(first, last + 1)]


@dataclass
class Batch:
    """Global batch `step` (or one rank's slice of it), rows in global order."""

    step: int
    rows: range
    windows: np.ndarray  # (rows,) int64
    epochs: np.ndarray  # (rows,) int64
    tokens: np.ndarray  # (rows, seq_len + 1) int64
    documents: list[list[tuple[int, str]]]
    batch_sha256: str  # batch_digest of the whole global batch
    slice_sha256: str  # batch_digest of the rows shown


def read_batch(
    spec: RunSpec, shards: TokenShards, step: int, rank: int | None = None, world: int | None = None
) -> Batch:
    """Global batch `step`; with `rank` and `world`, that rank's rows only."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"--step {step}: expected a step >= 0 (batch N trains update N -> N+1)")
    T, G = spec.seq_len, spec.global_batch_size
    n_windows = shards.n_windows(T)
    windows = batch_window_indices(n_windows, spec.seed, G, step)
    tokens = np.stack([shards.window(int(w), T) for w in windows])
    if (rank is None) != (world is None):
        raise ValueError("rank and world go together")
    part = slice(0, G) if world is None else rank_slice(G, world, rank)
    rows = range(part.start, part.stop)
    epochs = (step * G + np.arange(G, dtype=np.int64)) // n_windows
    docs = [documents(shards, int(w) * T, int(w) * T + T + 1) for w in windows[part]]
    return Batch(step, rows, windows[part], epochs[part], tokens[part], docs,
                 batch_digest(tokens), batch_digest(tokens[part]))  # fmt: skip


def window_steps(spec: RunSpec, n_windows: int, windows: np.ndarray) -> list[dict[str, int]]:
    """Every training of one of `windows` within max_steps: {step, row, window, epoch}."""
    G, total = spec.global_batch_size, spec.max_steps * spec.global_batch_size
    windows = np.unique(np.asarray(windows, dtype=np.int64))
    hits: list[dict[str, int]] = []
    for epoch in range(-(-total // n_windows)):
        inverse = np.empty(n_windows, dtype=np.int64)
        inverse[epoch_permutation(n_windows, spec.seed, epoch)] = np.arange(n_windows)
        g = epoch * n_windows + inverse[windows]
        for w, s in zip(windows[g < total].tolist(), g[g < total].tolist(), strict=True):
            hits.append({"step": s // G, "row": s % G, "window": w, "epoch": epoch})
    return sorted(hits, key=lambda h: (h["step"], h["row"]))


def doc_windows(spec: RunSpec, shards: TokenShards, doc: int) -> tuple[np.ndarray, dict]:
    """Windows overlapping document `doc` (any of their seq_len + 1 tokens), and its span."""
    docs = shards.index["splits"][shards.split]["documents"]
    if isinstance(doc, bool) or not isinstance(doc, int) or not 0 <= doc < len(docs):
        raise ValueError(f"--doc {doc}: expected a document id in [0, {len(docs)})")
    start = int(docs[doc][0])
    end = int(docs[doc + 1][0]) if doc + 1 < len(docs) else shards.n_tokens  # exclusive
    T, n = spec.seq_len, shards.n_windows(spec.seq_len)
    first, last = max(0, -(-(start - T) // T)), min(n - 1, (end - 1) // T)
    info = {"doc": doc, "source": str(docs[doc][1]), "start": start, "end": end}
    return np.arange(first, last + 1, dtype=np.int64), info


def _find_all(hay: np.ndarray, needle: np.ndarray) -> np.ndarray:
    """Start offsets of every (possibly overlapping) occurrence of `needle` in `hay`."""
    if len(hay) < len(needle):
        return np.empty(0, dtype=np.int64)
    found = np.flatnonzero(hay[: len(hay) - len(needle) + 1] == needle[0])
    for k in range(1, len(needle)):
        found = found[hay[found + k] == needle[k]]
    return found


def _table_agrees(tok: Tokenizer, table: list[bytes], ids: list[int]) -> bool:
    text = b"".join(table[i] for i in ids).decode("utf-8", errors="replace")
    return text == tok.decode(ids)


def _scan(shards: TokenShards, overlap: int, find: Callable, chunk: int = 1 << 20) -> tuple:
    """(first, last) token positions of every match, chunk by chunk; `find(ids)` returns
    the matches' (first, last) token offsets within `ids`."""
    firsts, lasts = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for a in range(0, shards.n_tokens, chunk):
        ids = shards.read(a, min(shards.n_tokens, a + chunk + overlap) - a)
        t0, t1 = find(ids)
        own = t0 < chunk  # a match starting in the overlap belongs to the next chunk
        firsts.append(a + t0[own])
        lasts.append(a + t1[own])
    return np.concatenate(firsts), np.concatenate(lasts)


def _byte_finder(table: list[bytes], needle: bytes, eos_id: int | None) -> Callable:
    """find(ids) -> (first, last) token offsets of `needle` in the bytes of `ids` (never
    across an EOS token: that would join two documents)."""
    lengths = np.array([len(b) for b in table], dtype=np.int64)
    flat, offsets = np.frombuffer(b"".join(table), np.uint8), np.cumsum(lengths) - lengths
    q = np.frombuffer(needle, dtype=np.uint8)

    def find(ids: np.ndarray) -> tuple:
        ends = np.cumsum(lengths[ids])  # byte end of each token
        shift = np.repeat(ends - lengths[ids] - offsets[ids], lengths[ids])
        at = _find_all(flat[np.arange(ends[-1]) - shift], q)  # byte offsets of matches
        first = np.searchsorted(ends, at, "right")
        last = np.searchsorted(ends, at + len(q) - 1, "right")
        eos = np.cumsum(ids == eos_id)  # EOS tokens up to each position
        whole = eos[last] == eos[first]  # no EOS in (first, last]
        return first[whole], last[whole]

    return find


def locate_text(shards: TokenShards, tok: Tokenizer, text: str) -> tuple:
    """(first, last) token positions of every occurrence of `text`, and the method used."""
    needle, query = text.encode("utf-8"), tok.encode(text)
    if not needle:
        raise ValueError("--find: expected non-empty text")
    table = token_bytes(tok)
    sample = shards.read(0, min(shards.n_tokens, 1 << 16))
    eos = np.flatnonzero(sample == shards.eos_id)  # whole documents: no split characters
    sample = sample[: eos[-1] + 1] if len(eos) else sample[:0]
    if min(map(len, table)) and all(_table_agrees(tok, table, x) for x in (query, sample.tolist())):
        finder = _byte_finder(table, needle, shards.eos_id)
        return (*_scan(shards, len(needle), finder), "bytes")
    q = np.asarray(query, dtype=np.int64)

    def find_ids(ids: np.ndarray) -> tuple:
        at = _find_all(ids, q)
        return at, at + len(q) - 1

    return (*_scan(shards, len(q) - 1, find_ids), "tokens")


def trained_on(spec: RunSpec, n_windows: int, windows: np.ndarray) -> dict[str, Any]:
    """When `windows` were trained on (steps < max_steps) and which revisions saw them."""
    hits = window_steps(spec, n_windows, windows)
    steps = sorted({h["step"] for h in hits})
    names, source = revisions(spec)
    seen = [
        {"revision": name, "step": m, "batches_seen": int(np.searchsorted(steps, m))}
        for name, m in names
    ]
    return {
        "max_steps": spec.max_steps,
        "hits": hits,
        "steps": steps,
        "revisions_source": source,
        "revisions": [r for r in seen if r["batches_seen"]],
    }


def text_windows(shards: TokenShards, tok: Tokenizer, text: str, seq_len: int) -> tuple:
    """(windows, positions, facts) for `text` in the train stream: the sorted windows
    whose seq_len + 1 tokens hold a match, {window: match start positions}, and the
    query and occurrence counts `strata batch --find` reports."""
    first, last, method = locate_text(shards, tok, text)
    T, n = seq_len, shards.n_windows(seq_len)
    a = first // T  # the window starting at or before the match
    in_a = (last <= a * T + T) & (a < n)
    in_b = (last == first) & (first % T == 0) & (a >= 1) & (a - 1 < n)  # the shared token
    window = np.concatenate([a[in_a], a[in_b] - 1])
    positions: dict[int, list[int]] = {}
    for w, p in zip(window.tolist(), np.concatenate([first[in_a], first[in_b]]).tolist(),
                    strict=True):  # fmt: skip
        positions.setdefault(w, []).append(p)
    inside = in_a | in_b
    facts = {
        "query": {"text": text, "tokens": tok.encode(text), "method": method},
        "occurrences": len(first),
        "in_one_window": int(inside.sum()),
        "across_windows": int((~inside & (a < n)).sum()),
        "after_last_window": int((~inside & (a >= n)).sum()),
    }
    return np.unique(window), {w: sorted(p) for w, p in positions.items()}, facts


def find_text(spec: RunSpec, shards: TokenShards, tok: Tokenizer, text: str) -> dict[str, Any]:
    """Where `text` occurs in the train stream and when those sequences were trained on."""
    windows, positions, facts = text_windows(shards, tok, text, spec.seq_len)
    result = trained_on(spec, shards.n_windows(spec.seq_len), windows)
    for hit in result["hits"]:
        hit["positions"] = positions[hit["window"]]
    return {**facts, **result}


def find_doc(spec: RunSpec, shards: TokenShards, doc: int) -> dict[str, Any]:
    """When the windows overlapping document `doc` were trained on."""
    windows, info = doc_windows(spec, shards, doc)
    return {
        "query": info,
        "windows": windows.tolist(),
        **trained_on(spec, shards.n_windows(spec.seq_len), windows),
    }
