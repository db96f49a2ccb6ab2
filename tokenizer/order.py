"""The data-order contract: which training windows form global batch N.

Design choices:
- Row j of global batch `step` is global sample g = step * global_batch_size + j.
  Its epoch is g // n_windows and its position in that epoch g % n_windows; the
  window is perm_epoch[position], where perm_epoch is
  `np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n_windows)`.
- So batch N is a pure function of (n_windows, seed, global_batch_size, N): it does
  not depend on the number of ranks, micro-batching or resumption, and any batch can
  be rebuilt offline. Every epoch visits every window exactly once; a batch may
  straddle two epochs.
- Each rank takes a contiguous slice of the global batch (`rank_slice`).
- Validation uses `validation_windows(n_windows, count)`: `min(count, n_windows)`
  evenly spaced window indices, `unique(round(linspace(0, n_windows - 1, k)))`, so
  the trainer's evaluations and the study score the same fixed windows.
- The last few permutations are cached (they cost 8 bytes per window to build).
- A batch's identity is `batch_digest(rows)`: sha256 over the concatenated sha256 of
  each row (the `seq_len + 1` window tokens as little-endian uint32), in global row
  order. The two levels let every rank hash its own slice (`row_digests`) and rank 0
  combine the gathered (n, 32) digests: `sha256(all_row_digests.tobytes())`.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np


@functools.lru_cache(maxsize=4)
def epoch_permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The (read-only) order of window indices in `epoch`."""
    perm = np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n_windows)
    perm.flags.writeable = False
    return perm


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def batch_window_indices(
    n_windows: int, seed: int, global_batch_size: int, step: int
) -> np.ndarray:
    """Window indices (int64, shape (global_batch_size,)) of the rows of global batch `step`."""
    _check_int("n_windows", n_windows, 1)
    _check_int("seed", seed, 0)
    _check_int("global_batch_size", global_batch_size, 1)
    _check_int("step", step, 0)
    n_windows, seed, batch, step = int(n_windows), int(seed), int(global_batch_size), int(step)
    g = step * batch + np.arange(batch, dtype=np.int64)  # global sample index per row
    epochs, positions = g // n_windows, g % n_windows
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(epochs):
        rows = epochs == epoch
        out[rows] = epoch_permutation(n_windows, seed, int(epoch))[positions[rows]]
    return out


def validation_windows(n_windows: int, count: int) -> np.ndarray:
    """The `min(count, n_windows)` evenly spaced window indices (int64, ascending, from 0
    to n_windows - 1) a validation split is scored on: the same at every evaluation."""
    _check_int("n_windows", n_windows, 0)
    _check_int("count", count, 0)
    picks = np.linspace(0, int(n_windows) - 1, min(int(count), int(n_windows)))
    return np.unique(picks.round().astype(np.int64))


def rank_slice(global_batch_size: int, world_size: int, rank: int) -> slice:
    """The contiguous rows of the global batch that `rank` (of `world_size`) takes."""
    _check_int("global_batch_size", global_batch_size, 1)
    _check_int("world_size", world_size, 1)
    if global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    per_rank = global_batch_size // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def row_digests(rows: np.ndarray) -> np.ndarray:
    """sha256 of each row's tokens as little-endian uint32: (n_rows, 32) uint8."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (n_rows, seq_len + 1), got shape {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= 2**32):
        raise ValueError("token ids must lie in [0, 2**32)")
    data = np.ascontiguousarray(rows, dtype="<u4")
    out = np.empty((len(data), 32), dtype=np.uint8)
    for i, row in enumerate(data):
        out[i] = np.frombuffer(hashlib.sha256(row.tobytes()).digest(), dtype=np.uint8)
    return out


def batch_digest(rows: np.ndarray) -> str:
    """Hex sha256 of the concatenated row digests (`row_digests`), rows in global order."""
    return hashlib.sha256(row_digests(rows).tobytes()).hexdigest()
