"""The data-order contract for a mixture of prepared datasets (`[[data.sources]]`).

Design choices (docs/ARCHITECTURE.md states the rule for reimplementation):
- Weights are exact rationals: each is read from its decimal spelling (`0.7` is 7/10,
  never the float nearest to it), scaled to the smallest integers W_i with the same
  ratios (0.6/0.3/0.1 -> 6/3/1). The period is S = sum(W_i), at most `MAX_PERIOD`.
- The global sample g (row j of global batch N is g = N * global_batch_size + j) comes
  from source `pattern[g % S]`. The pattern is built once by a smooth weighted round
  robin: for t = 0 .. S-1, the source with the largest deficit W_i * (t + 1) - S * c_i
  (c_i: its slots so far; ties to the lowest index) takes slot t. Every period holds
  exactly W_i samples of source i, and after any prefix of g samples each source's
  count is within one of g * W_i / S: per batch the counts follow the weights, with
  no coin flips.
- Source i's k-th sample (k counted over the whole run) is its own epoch k // n_i and
  position k % n_i, the window `perm(i, epoch)[position]` of its n_i windows. Source 0
  is permuted by `PCG64([seed, epoch])`, the single-dataset rule, so a one-source
  mixture reproduces the plain order bit for bit; source i > 0 by
  `PCG64([seed, epoch, i])`. Epochs are counted per source.
- So global batch N is a pure function of (the sources' window counts, weights,
  seed, global batch size, N), whatever the number of processes, micro-batch size or
  resumes. Everything here is O(global batch) per step: no state carried between
  steps.
- A fork that changes the weights restarts the pattern where it forks:
  `Mixture(weights, n_windows, seed, start_sample=N * B, offsets=c)` counts samples
  from g0 = N * B and adds c_i, the parent's draws of source i before g0, to each
  draw number, so every source goes on from where the parent left it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

import numpy as np
from strata.tokenizer.order import _check_int

MAX_PERIOD = 1_000_000
"""The largest sum of the integer weights (the pattern's length)."""


def integer_weights(weights: list[float | int | str]) -> tuple[int, ...]:
    """The smallest integers with the ratios of `weights` (read from their decimal
    spelling); ValueError for a weight that is not positive and finite, or a period
    above `MAX_PERIOD`."""
    exact = []
    for w in weights:
        try:
            value = Fraction(Decimal(str(w)))
        except (InvalidOperation, ValueError, OverflowError):
            raise ValueError(f"weight {w!r}: expected a positive number") from None
        if value <= 0:
            raise ValueError(f"weight {w!r}: expected a positive number")
        exact.append(value)
    if not exact:
        raise ValueError("a mixture needs at least one source")
    scale = math.lcm(*(f.denominator for f in exact))
    ints = [int(f * scale) for f in exact]
    divisor = math.gcd(*ints)
    ints = [w // divisor for w in ints]
    if sum(ints) > MAX_PERIOD:
        raise ValueError(
            f"weights {list(weights)} need a period of {sum(ints):,} samples, more than "
            f"{MAX_PERIOD:,}; round them to fewer decimals"
        )
    return tuple(ints)


@functools.lru_cache(maxsize=8)
def pattern(weights: tuple[int, ...]) -> np.ndarray:
    """(S,) int64: the source of each slot of one period (smooth weighted round robin)."""
    w = np.asarray(weights, dtype=np.int64)
    total = int(w.sum())
    counts = np.zeros(len(w), dtype=np.int64)
    out = np.empty(total, dtype=np.int64)
    for t in range(total):
        source = int(np.argmax(w * (t + 1) - total * counts))  # first of the largest
        out[t] = source
        counts[source] += 1
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _before(weights: tuple[int, ...]) -> np.ndarray:
    """(S + 1, K) int64: slots of each source among the first t slots of a period."""
    p = pattern(weights)
    onehot = np.zeros((len(p), len(weights)), dtype=np.int64)
    onehot[np.arange(len(p)), p] = 1
    return np.vstack([np.zeros((1, len(weights)), dtype=np.int64), onehot.cumsum(0)])


@functools.lru_cache(maxsize=16)
def source_permutation(n_windows: int, seed: int, epoch: int, source: int) -> np.ndarray:
    """The (read-only) order of source `source`'s windows in its epoch `epoch`."""
    key = [seed, epoch] if source == 0 else [seed, epoch, source]
    perm = np.random.Generator(np.random.PCG64(key)).permutation(n_windows)
    perm.flags.writeable = False
    return perm


@dataclass(frozen=True)
class MixtureBatch:
    """The rows of one global batch: where each comes from (all (global_batch,) int64)."""

    sources: np.ndarray
    windows: np.ndarray
    epochs: np.ndarray
    """The row's epoch of its own source (0 on the first pass)."""
    draws: np.ndarray
    """k: how many samples of its source came before it in the run."""


@dataclass(frozen=True)
class Mixture:
    """The order of a mixture: integer weights and each source's window count."""

    weights: tuple[int, ...]
    n_windows: tuple[int, ...]
    seed: int
    start_sample: int = 0
    """The global sample the pattern starts at (a fork that changed the weights)."""
    offsets: tuple[int, ...] = ()
    """Each source's draws before `start_sample` (the parent's); () for none."""

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.n_windows) or not self.weights:
            raise ValueError("a mixture needs one window count per weight")
        for n in self.n_windows:
            _check_int("n_windows", n, 1)
        _check_int("seed", self.seed, 0)
        _check_int("start_sample", self.start_sample, 0)
        if self.offsets and len(self.offsets) != len(self.weights):
            raise ValueError("a mixture needs one offset per weight (or none)")

    def _offsets(self) -> np.ndarray:
        return np.asarray(self.offsets or (0,) * len(self.weights), dtype=np.int64)

    def _since_start(self, g: int, what: str) -> int:
        if g < self.start_sample:
            start = self.start_sample
            raise ValueError(f"{what} {g} is before this order's start, sample {start} "
                             "(a fork's earlier steps are its parent's)")  # fmt: skip
        return g - self.start_sample

    @property
    def period(self) -> int:
        return sum(self.weights)

    def draws_before(self, n_samples: int) -> np.ndarray:
        """(K,) int64: samples each source gave among the first `n_samples` of the run."""
        _check_int("n_samples", n_samples, 0)
        full, rest = divmod(self._since_start(int(n_samples), "sample"), self.period)
        counts = full * np.asarray(self.weights, dtype=np.int64) + _before(self.weights)[rest]
        return self._offsets() + counts

    def batch(self, global_batch_size: int, step: int) -> MixtureBatch:
        """Where the rows of global batch `step` come from."""
        _check_int("global_batch_size", global_batch_size, 1)
        _check_int("step", step, 0)
        batch, period = int(global_batch_size), self.period
        g = self._since_start(int(step) * batch, "the sample of step") + np.arange(batch)
        slot = g % period
        sources = pattern(self.weights)[slot]
        # k = this source's samples before g: whole periods, then its slots before `slot`
        before = _before(self.weights)
        weights = np.asarray(self.weights, dtype=np.int64)
        draws = self._offsets()[sources] + (g // period) * weights[sources] + before[slot, sources]
        n = np.asarray(self.n_windows, dtype=np.int64)[sources]
        epochs, positions = draws // n, draws % n
        windows = np.empty(batch, dtype=np.int64)
        for source, epoch in sorted(set(zip(sources.tolist(), epochs.tolist(), strict=True))):
            rows = (sources == source) & (epochs == epoch)
            perm = source_permutation(self.n_windows[source], self.seed, epoch, source)
            windows[rows] = perm[positions[rows]]
        return MixtureBatch(sources, windows, epochs, draws)

    def supported_steps(self, global_batch_size: int, limits: list[float | None]) -> int | None:
        """The most steps for which no source passes its epoch limit (`limits[i]` epochs,
        None: no limit); None when nothing limits the run."""
        steps = []
        for i, limit in enumerate(limits):
            if limit is None:
                continue
            allowed = math.floor(limit * self.n_windows[i] + 1e-9)  # draws of source i
            steps.append(self._last_step_within(global_batch_size, i, allowed))
        return min(steps) if steps else None

    def _last_step_within(self, global_batch_size: int, source: int, allowed: int) -> int:
        """The largest N with draws_before(N * batch)[source] <= allowed (bisection)."""
        low, high = 0, 1
        while self.draws_before(high * global_batch_size)[source] <= allowed:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            if self.draws_before(mid * global_batch_size)[source] <= allowed:
                low = mid
            else:
                high = mid
        return low


def ordered(order: dict | None, mixture: Mixture) -> Mixture:
    """`mixture`, or the mixture a fork's `order` record ({weights, start_sample, offsets},
    `RUN/fork.json`) names over the same sources."""
    if not order:
        return mixture
    return Mixture(tuple(order["weights"]), mixture.n_windows, mixture.seed,
                   order["start_sample"], tuple(order["offsets"]))  # fmt: skip
