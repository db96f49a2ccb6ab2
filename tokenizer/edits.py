"""Data edits on top of the data order: documents never shown, texts shown at given steps.

`data.exclude_docs` / `data.exclude_docs_file` and `data.inject` (docs/ARCHITECTURE.md,
"Data order", rules 5 and 6), applied to the rows of every global batch from step
`start` on (a fork's step, else 0):

- Exclusion: a row of source s whose window overlaps an excluded document of s (any
  of its seq_len + 1 tokens) shows instead the window at the next position of the same
  permutation, perm[(p + d) mod n_s] for the smallest d >= 1 whose window overlaps no
  excluded document. Its epoch and draw number stay; no other row moves, so a fork that
  excludes documents differs from its parent only in the rows that would show them.
- Injection: the injections listed for step N take rows B - 1, B - 2, ... of the batch,
  in config order. The row is its own source, index K after the K data sources
  (`INJECT`), document i (the injection), window 0, epoch = the times it was shown
  before; its tokens are the text's, then EOS, repeated to seq_len + 1 tokens.

Everything is a pure function of (the batch, the step): O(global batch) per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .mixture import MixtureBatch, source_permutation

INJECT = "inject"
"""The name of the injected rows' source (index K, after the K data sources)."""


def overlapping_windows(starts: np.ndarray, n_tokens: int, doc: int, seq_len: int) -> range:
    """The windows whose seq_len + 1 tokens overlap document `doc` of a stream of
    `n_tokens` whose documents start at `starts`."""
    start = int(starts[doc])
    end = int(starts[doc + 1]) if doc + 1 < len(starts) else n_tokens  # exclusive
    n = (n_tokens - 1) // seq_len  # windows of seq_len + 1 tokens
    first, last = max(0, -(-(start - seq_len) // seq_len)), min(n - 1, (end - 1) // seq_len)
    return range(first, last + 1)


def excluded_entries(listed: list, file: str) -> list:
    """`listed` and the lines of `file` ('' for none; `#` starts a comment); OSError
    when the file cannot be read."""
    lines = Path(file).read_text(encoding="utf-8").splitlines() if file else []
    return [*listed, *(x.split("#")[0].strip() for x in lines if x.split("#")[0].strip())]


def exclusion_masks(entries: list, names: list[str], starts: list[np.ndarray],
                    n_tokens: list[int], seq_len: int) -> list[np.ndarray]:  # fmt: skip
    """Per source, (n_windows,) bool: the windows overlapping a document of `entries`
    (ids of the first source, or "NAME:ID"); ValueError naming a bad entry."""
    masks = [np.zeros((n - 1) // seq_len, dtype=bool) for n in n_tokens]
    for entry in entries:
        name, _, number = str(entry).rpartition(":")
        if isinstance(entry, bool) or not number.isdigit() or (name and name not in names):
            raise ValueError(f"{entry!r}: expected an id or NAME:ID with NAME one of {names}")
        s, doc = names.index(name) if name else 0, int(number)
        if not doc < len(starts[s]):
            raise ValueError(f"{entry!r}: source {names[s]!r} has documents 0 .. "
                             f"{len(starts[s]) - 1}")  # fmt: skip
        masks[s][list(overlapping_windows(starts[s], n_tokens[s], doc, seq_len))] = True
    return masks


def injection_row(ids: list[int], eos_id: int, seq_len: int) -> np.ndarray:
    """(seq_len + 1,) int64: `ids`, EOS, repeated; ValueError when longer than a row."""
    unit = [*ids, eos_id]
    if len(unit) > seq_len + 1:
        raise ValueError(f"{len(ids)} tokens with its EOS pass seq_len + 1 = {seq_len + 1}")
    reps = -(-(seq_len + 1) // len(unit))
    return np.asarray((unit * reps)[: seq_len + 1], dtype=np.int64)


@dataclass
class DataEdits:
    """The edits of a run: per source a (n_s,) bool mask of excluded windows, and the
    injections (their rows and steps)."""

    start: int
    seed: int
    excluded: list[np.ndarray]
    rows: list[np.ndarray] = field(default_factory=list)  # (seq_len + 1,) per injection
    steps: list[tuple[int, ...]] = field(default_factory=list)  # the steps of each

    def __post_init__(self) -> None:
        self.steps = [tuple(sorted(set(group))) for group in self.steps]
        for s, mask in enumerate(self.excluded):
            if mask.size and mask.all():
                raise ValueError(f"source {s}: every window overlaps an excluded document")

    @property
    def active(self) -> bool:
        return any(m.any() for m in self.excluded) or bool(self.rows)

    def apply(self, batch: MixtureBatch, step: int) -> MixtureBatch:
        """The rows of global batch `step` after the edits (unchanged before `start`)."""
        if step < self.start or not self.active:
            return batch
        sources, windows = batch.sources.copy(), batch.windows.copy()
        epochs, draws = batch.epochs.copy(), batch.draws.copy()
        for j in np.flatnonzero(self._hits(sources, windows)):
            s, mask = int(sources[j]), self.excluded[int(sources[j])]
            perm = source_permutation(len(mask), self.seed, int(epochs[j]), s)
            p = int(draws[j] % len(mask)) + 1
            while mask[perm[p % len(mask)]]:
                p += 1
            windows[j] = perm[p % len(mask)]
        shown = [(i, steps.index(step)) for i, steps in enumerate(self.steps) if step in steps]
        for k, (i, times) in enumerate(shown):
            j = len(sources) - 1 - k
            sources[j], windows[j], epochs[j], draws[j] = len(self.excluded), i, times, times
        return MixtureBatch(sources, windows, epochs, draws)

    def _hits(self, sources: np.ndarray, windows: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(sources), dtype=bool)
        for s, mask in enumerate(self.excluded):
            if mask.any():
                rows = sources == s
                hit[rows] = mask[windows[rows]]
        return hit
