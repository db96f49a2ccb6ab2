"""The data-order contract: batch_window_indices, rank_slice and validation_windows."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from strata.tokenizer import batch_window_indices, rank_slice, validation_windows
from strata.tokenizer.order import epoch_permutation


def test_pure_and_repeatable() -> None:
    a = batch_window_indices(1000, seed=7, global_batch_size=16, step=5)
    batch_window_indices(333, seed=1, global_batch_size=3, step=99)  # unrelated calls
    epoch_permutation.cache_clear()
    b = batch_window_indices(1000, seed=7, global_batch_size=16, step=5)
    assert a.dtype == np.int64 and a.shape == (16,) and np.array_equal(a, b)
    assert not np.array_equal(a, batch_window_indices(1000, seed=8, global_batch_size=16, step=5))


def test_matches_the_documented_formula() -> None:
    n, seed, batch = 37, 3, 8
    perms = [np.random.Generator(np.random.PCG64([seed, e])).permutation(n) for e in range(3)]
    for step in range(10):
        g = step * batch + np.arange(batch)
        expected = [perms[x // n][x % n] for x in g]
        assert batch_window_indices(n, seed, batch, step).tolist() == expected


def test_each_epoch_covers_every_window_once() -> None:
    n, batch = 100, 10
    epoch0 = np.concatenate([batch_window_indices(n, 0, batch, s) for s in range(10)])
    epoch1 = np.concatenate([batch_window_indices(n, 0, batch, s) for s in range(10, 20)])
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert not np.array_equal(epoch0, epoch1)  # a new permutation per epoch
    steps = [set(batch_window_indices(n, 0, batch, s).tolist()) for s in range(10)]
    assert all(steps[i].isdisjoint(steps[j]) for i in range(10) for j in range(i + 1, 10))


def test_batches_may_straddle_epochs() -> None:
    n, batch = 37, 8  # 37 is not a multiple of 8
    samples = np.concatenate([batch_window_indices(n, 5, batch, s) for s in range(10)])
    assert sorted(samples[:n]) == list(range(n))
    assert sorted(samples[n : 2 * n]) == list(range(n))


def test_argument_errors() -> None:
    for args in [(0, 0, 4, 0), (10, -1, 4, 0), (10, 0, 0, 0), (10, 0, 4, -1), (10, 0, 4, 1.5)]:
        with pytest.raises(ValueError, match="must be an integer"):
            batch_window_indices(*args)


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_rank_slices_partition_the_batch(world_size: int) -> None:
    batch = 16
    rows = np.arange(batch)
    parts = [rows[rank_slice(batch, world_size, r)] for r in range(world_size)]
    assert np.array_equal(np.concatenate(parts), rows)
    assert {len(p) for p in parts} == {batch // world_size}


def test_rank_slice_errors() -> None:
    with pytest.raises(ValueError, match="global_batch_size 10 is not divisible by world_size 4"):
        rank_slice(10, 4, 0)
    with pytest.raises(ValueError, match="rank must be in"):
        rank_slice(8, 4, 4)


def test_validation_windows_as_before_and_evenly_spaced() -> None:
    """The rule train/data.py and study/data.py each computed before sharing it, and an
    exact reference: pick k is an integer nearest k (n - 1) / (m - 1) (a tie may go
    either way: linspace rounds in floating point)."""
    for n in [*range(0, 40), 97, 1000, 4097]:
        for count in [0, 1, 2, 3, 5, 8, 13, 39, 40, 64, 999, 5000]:
            got = validation_windows(n, count)
            m = min(n, count)
            before = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
            assert got.dtype == np.int64 and np.array_equal(got, before), (n, count)
            assert len(got) == m and (np.diff(got) > 0).all()  # distinct, ascending
            for k, pick in enumerate(got.tolist()):
                exact = Fraction(k * (n - 1), m - 1) if m > 1 else Fraction(0)
                assert abs(pick - exact) <= Fraction(1, 2), (n, count, k)
    assert validation_windows(10, 3).tolist() == [0, 4, 9]  # 4.5 rounds to even
    assert validation_windows(5, 100).tolist() == [0, 1, 2, 3, 4]  # all of them


def test_validation_windows_refuse_bad_arguments() -> None:
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="n_windows must be an integer >= 0"):
            validation_windows(bad, 4)
        with pytest.raises(ValueError, match="count must be an integer >= 0"):
            validation_windows(10, bad)
