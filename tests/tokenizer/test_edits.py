"""Data edits (tokenizer/edits.py) against naive rules: an excluded document's windows
are never shown and only their rows change; injected rows take the last rows of
their steps; the windows overlapping a document, token by token."""

import numpy as np
import pytest
from strata.tokenizer.edits import DataEdits, injection_row, overlapping_windows
from strata.tokenizer.mixture import Mixture, source_permutation

N_WINDOWS, SEED, B = (13, 6), 4, 5


def test_overlapping_windows_are_those_sharing_a_token():
    starts, n_tokens, seq_len = np.array([0, 3, 4, 11, 20, 21]), 30, 4
    n = (n_tokens - 1) // seq_len
    for doc in range(len(starts)):
        end = starts[doc + 1] if doc + 1 < len(starts) else n_tokens
        naive = [w for w in range(n) if set(range(w * seq_len, w * seq_len + seq_len + 1))
                 & set(range(starts[doc], end))]  # fmt: skip
        assert list(overlapping_windows(starts, n_tokens, doc, seq_len)) == naive, doc


def test_excluded_windows_are_replaced_by_the_next_allowed_one_in_their_permutation():
    mixture, rng = Mixture((2, 1), N_WINDOWS, SEED), np.random.default_rng(0)
    masks = [rng.random(n) < 0.4 for n in N_WINDOWS]
    edits = DataEdits(start=3, seed=SEED, excluded=masks)
    for step in range(12):
        plain, edited = mixture.batch(B, step), edits.apply(mixture.batch(B, step), step)
        for j in range(B):
            s, w = int(plain.sources[j]), int(plain.windows[j])
            if step < 3 or not masks[s][w]:  # before the start, or allowed: unchanged
                assert edited.windows[j] == w
                continue
            perm = source_permutation(N_WINDOWS[s], SEED, int(plain.epochs[j]), s).tolist()
            p = perm.index(w) + 1  # naive: walk on until an allowed window
            while masks[s][perm[p % len(perm)]]:
                p += 1
            assert edited.windows[j] == perm[p % len(perm)]
            assert edited.epochs[j] == plain.epochs[j] and edited.sources[j] == s
        if step >= 3:
            assert not any(masks[s][w] for s, w in zip(edited.sources, edited.windows, strict=True))


def test_injections_take_the_last_rows_of_their_steps():
    mixture = Mixture((1,), (20,), SEED)
    rows = [injection_row([7, 8], 0, 4), injection_row([9], 0, 4)]
    edits = DataEdits(0, SEED, [np.zeros(20, bool)], rows, [(2, 5), (5,)])
    assert rows[0].tolist() == [7, 8, 0, 7, 8] and rows[1].tolist() == [9, 0, 9, 0, 9]
    for step in range(7):
        plain, edited = mixture.batch(B, step), edits.apply(mixture.batch(B, step), step)
        shown = {2: [0], 5: [0, 1]}.get(step, [])
        for k, i in enumerate(shown):
            j = B - 1 - k
            assert (edited.sources[j], edited.windows[j]) == (1, i)
            assert edited.epochs[j] == (1 if (i, step) == (0, 5) else 0)  # shown before
        keep = B - len(shown)
        assert edited.windows[:keep].tolist() == plain.windows[:keep].tolist()
    with pytest.raises(ValueError, match="pass seq_len"):
        injection_row([1] * 5, 0, 4)


def test_a_source_with_every_window_excluded_is_refused():
    with pytest.raises(ValueError, match="every window overlaps an excluded"):
        DataEdits(0, SEED, [np.ones(3, bool)])
