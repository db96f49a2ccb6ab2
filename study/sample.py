"""Which training sequences the memorisation test uses, and when each was first trained on.

Design choices:
- A memorisation sequence is the start of training window `w`: the `prefix + length`
  tokens of the train stream from `w * seq_len` (read from the stream even when
  `seq_len` is shorter). Windows too close to the end of the stream are skipped.
- The data-order contract (tokenizer/order.py) says global sample g lands in epoch
  g // n_windows at position g % n_windows of that epoch's permutation, and every epoch
  visits every window once; so window w is first consumed in epoch 0, by global
  sample `inverse_perm0[w]`, i.e. in global batch (= step) `inverse_perm0[w] // G`.
  Revision `stepN` has trained on batches 0..N-1, so w is *seen* at stepN iff
  `first_step[w] < N`.
- The sample must not depend on which revisions exist (or the cache would be
  invalidated by every new revision), and both groups should be non-empty over a
  log-spaced publication schedule. So windows are stratified by first-consumed step
  on a log scale, bins [0, 1), [1, 2), [2, 4), [4, 8), ... up to the end of epoch 0,
  and drawn round-robin from the bins with a seeded generator: early revisions get
  seen windows, and windows first used after the last revision stay unseen.
- Without the data order (a folder of Hugging Face revisions, or a dataset other
  than the run's), the windows are a uniform seeded sample and `first_step` is None:
  only the overall memorisation rate is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from strata.tokenizer.order import epoch_permutation
from strata.tokenizer.shards import TokenShards


@dataclass
class MemSample:
    windows: np.ndarray  # (S,) training window indices
    tokens: np.ndarray  # (S, prefix + length) int64
    first_step: np.ndarray | None  # (S,) step whose global batch first held the window


def first_steps(n_windows: int, seed: int, global_batch_size: int) -> np.ndarray:
    """(n_windows,) int64: the step at which each window is first trained on."""
    perm = epoch_permutation(n_windows, seed, 0)
    position = np.empty(n_windows, dtype=np.int64)
    position[perm] = np.arange(n_windows, dtype=np.int64)  # inverse permutation
    return position // global_batch_size


def log_bins(steps: np.ndarray) -> np.ndarray:
    """Bin 0 for step 0, bin k for steps in [2**(k-1), 2**k)."""
    _, exponent = np.frexp(steps.astype(np.float64))
    return np.where(steps == 0, 0, exponent).astype(np.int64)


def stratified(bins: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator):
    """Up to k of `candidates`, drawn round-robin from their bins in ascending order."""
    pools = [rng.permutation(candidates[bins[candidates] == b]) for b in np.unique(bins)]
    picked: list[int] = []
    depth = 0
    while len(picked) < k and any(depth < len(p) for p in pools):
        picked += [int(p[depth]) for p in pools if depth < len(p)][: k - len(picked)]
        depth += 1
    return np.sort(np.asarray(picked, dtype=np.int64))


def mem_sample(
    train: TokenShards,
    seq_len: int,
    span: int,
    k: int,
    seed: int,
    order: tuple[int, int] | None,
) -> MemSample:
    """k windows of `span` tokens; `order` = (data seed, global batch size) or None."""
    n_windows = train.n_windows(seq_len)
    windows = np.arange(n_windows, dtype=np.int64)
    candidates = windows[windows * seq_len + span <= train.n_tokens]
    rng = np.random.Generator(np.random.PCG64([seed, 0x5EED]))
    first = None
    if order is None:
        picks = np.sort(rng.choice(candidates, size=min(k, len(candidates)), replace=False))
    else:
        steps = first_steps(n_windows, *order)
        picks = stratified(log_bins(steps), candidates, k, rng)
        first = steps[picks]
    reads = [train.read(int(w) * seq_len, span) for w in picks]
    tokens = np.stack(reads) if reads else np.zeros((0, span), dtype=np.int64)
    return MemSample(picks, tokens, first)
