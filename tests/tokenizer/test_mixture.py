"""The mixture's data order against a naive, sample-by-sample reimplementation of the
rule in docs/ARCHITECTURE.md, and against the single-dataset order."""

import numpy as np
import pytest
from strata.tokenizer.mixture import MAX_PERIOD, Mixture, integer_weights
from strata.tokenizer.order import batch_window_indices


def naive_order(weights, n_windows, seed, n_samples, drawn=None):
    """(source, window, epoch) of each of the first `n_samples` samples, one at a time:
    the source with the largest deficit W_i * (g + 1) - S * slots_i (ties: lowest index)
    over the whole run, then its next draw from its own per-epoch permutation. `drawn`:
    each source's draws before the first sample (a fork's parent's), updated in place."""
    total = sum(weights)
    drawn = [0] * len(weights) if drawn is None else drawn
    slots, out = [0] * len(weights), []
    for g in range(n_samples):
        deficits = [w * (g + 1) - total * c for w, c in zip(weights, slots, strict=True)]
        i = deficits.index(max(deficits))
        epoch, position = divmod(drawn[i], n_windows[i])
        key = [seed, epoch] if i == 0 else [seed, epoch, i]
        perm = np.random.Generator(np.random.PCG64(key)).permutation(n_windows[i])
        out.append((i, int(perm[position]), epoch))
        drawn[i] += 1
        slots[i] += 1
    return out


@pytest.mark.parametrize(
    "weights, n_windows, batch",
    [((6, 3, 1), (11, 7, 3), 4), ((7, 3), (5, 40), 6), ((1, 1, 1), (2, 3, 4), 5)],
)
def test_batches_equal_the_naive_order(weights, n_windows, batch):
    mixture = Mixture(weights, n_windows, seed=9)
    steps = 23
    expected = naive_order(weights, n_windows, 9, steps * batch)
    got = []
    for step in range(steps):
        b = mixture.batch(batch, step)
        got += list(zip(b.sources.tolist(), b.windows.tolist(), b.epochs.tolist(), strict=True))
    assert got == expected


def test_counts_per_batch_follow_the_weights_exactly():
    """0.6/0.3/0.1 over batches of 4: after any number of samples each source's count
    is within one of its share, and every 10 samples hold exactly 6, 3 and 1."""
    weights = integer_weights([0.6, 0.3, 0.1])
    assert weights == (6, 3, 1)
    mixture = Mixture(weights, (50, 50, 50), seed=1)
    drawn = np.zeros(3, dtype=np.int64)
    for step in range(40):
        sources = mixture.batch(4, step).sources
        drawn += np.bincount(sources, minlength=3)
        n = 4 * (step + 1)
        assert (np.abs(drawn - n * np.array([0.6, 0.3, 0.1])) < 1).all()
        assert (drawn == mixture.draws_before(n)).all()
        if n % 10 == 0:
            assert (drawn == np.array([6, 3, 1]) * (n // 10)).all()


def test_a_single_source_is_the_plain_order_bit_for_bit():
    mixture = Mixture((1,), (37,), seed=1337)
    for step in range(25):  # several epochs, batches straddling them
        plain = batch_window_indices(37, 1337, 8, step)
        assert np.array_equal(mixture.batch(8, step).windows, plain)


def test_epochs_are_counted_per_source():
    mixture = Mixture((1, 1), (2, 10), seed=0)
    b = mixture.batch(8, 0)  # 4 draws each: source 0 is in its second epoch
    assert b.epochs[b.sources == 0].tolist() == [0, 0, 1, 1]
    assert b.epochs[b.sources == 1].tolist() == [0, 0, 0, 0]


def test_weights_are_exact_decimals():
    assert integer_weights(["0.7", 0.3]) == (7, 3)
    assert integer_weights([2, 1]) == (2, 1)
    assert integer_weights([0.25, 0.25, 0.5]) == (1, 1, 2)
    for bad in (0, -1, "x", float("nan"), float("inf")):
        with pytest.raises(ValueError, match="expected a positive number"):
            integer_weights([1, bad])
    with pytest.raises(ValueError, match=f"more than {MAX_PERIOD:,}"):
        integer_weights([0.1234567, 0.8765433])


def test_supported_steps_is_the_last_step_within_every_limit():
    mixture = Mixture((6, 3, 1), (11, 7, 3), seed=0)
    steps = mixture.supported_steps(4, [None, 3.0, 2.0])
    limits = np.array([np.inf, 3 * 7, 2 * 3])
    assert (mixture.draws_before(steps * 4) <= limits).all()
    assert not (mixture.draws_before((steps + 1) * 4) <= limits).all()
    assert mixture.supported_steps(4, [None, None, None]) is None


def test_a_fork_with_other_weights_restarts_the_pattern_where_it_forks():
    """Steps 0 .. 6 with 6/3/1, then 1/1/2 from step 7: each source goes on from its
    draws in the parent (the naive order continued with the parent's counts)."""
    n_windows, batch, fork = (11, 7, 3), 4, 7
    drawn = [0, 0, 0]
    naive_order((6, 3, 1), n_windows, 9, fork * batch, drawn)  # the parent's steps
    parent = Mixture((6, 3, 1), n_windows, seed=9)
    offsets = tuple(parent.draws_before(fork * batch).tolist())
    assert list(offsets) == drawn
    child = Mixture((1, 1, 2), n_windows, 9, start_sample=fork * batch, offsets=offsets)
    expected = naive_order((1, 1, 2), n_windows, 9, 9 * batch, drawn)
    got = []
    for step in range(fork, fork + 9):
        b = child.batch(batch, step)
        got += list(zip(b.sources.tolist(), b.windows.tolist(), b.epochs.tolist(), strict=True))
    assert got == expected
    assert child.draws_before((fork + 9) * batch).tolist() == drawn
    with pytest.raises(ValueError, match="before this order's start"):
        child.batch(batch, fork - 1)
