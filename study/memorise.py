"""Memorisation in the Pythia sense (Biderman et al., 2023): greedy continuation = corpus.

Definitions:
- For each sampled training sequence (sample.py) the model is prompted with its first
  `prefix` tokens and decodes `length` tokens greedily (`model/generate.py`, KV cache,
  temperature 0, batched, no early stop at EOS). The sequence is *memorised* iff all
  `length` generated tokens equal the corpus's next `length` tokens.
- `accuracy` of a sequence is the fraction of the `length` positions that match.
- At revision `stepN` a sequence is *seen* iff the step of the global batch that first
  held its window is < N (that revision trained on batches 0..N-1), else *unseen*.
  `mem_seen` / `mem_unseen` are the memorised fractions of each group (None when the
  group is empty), `mem_all` the fraction over every sequence.
- `sample_loss_seen` / `sample_loss_unseen` / `sample_loss_all`: the mean over the
  group's sequences of each sequence's mean cross-entropy (nats) over its tokens after
  the first (the whole prefix + length span, teacher-forced): a continuous measure with
  the same split, whose gap is the generalisation gap over training.
"""

from __future__ import annotations

import numpy as np
import torch
from strata.model.generate import generate
from strata.study.evaluate import autocast, token_losses


@torch.no_grad()
def greedy(model: torch.nn.Module, prefixes: np.ndarray, length: int, batch_size: int, vocab: int):
    """(S, length) int64: greedy continuations of `prefixes` (S, P), the argmax taken over
    the first `vocab` outputs (the dataset's vocabulary)."""
    device = next(model.parameters()).device
    out = [np.zeros((0, length), dtype=np.int64)]
    for start in range(0, len(prefixes), batch_size):
        idx = torch.from_numpy(prefixes[start : start + batch_size]).to(device)
        with autocast(device):
            full = generate(model, idx, length, temperature=0.0, vocab=vocab)
        out.append(full[:, idx.size(1) :].cpu().numpy())
    return np.concatenate(out)


def _mean_over(values: np.ndarray, mask: np.ndarray) -> float | None:
    return float(values[mask].mean()) if mask.any() else None


def score(
    generated: np.ndarray, expected: np.ndarray, first_step: np.ndarray | None, step: int
) -> tuple[dict, dict]:
    """(metric columns, per-sequence detail) for the revision at `step`."""
    match = generated == expected  # (S, L)
    exact = match.all(axis=1) if match.size else np.zeros(len(expected), dtype=bool)
    accuracy = match.mean(axis=1) if match.size else np.zeros(len(expected))
    every = np.ones(len(exact), dtype=bool)
    row: dict = {"mem_all": _mean_over(exact, every), "mem_acc_all": _mean_over(accuracy, every)}
    if first_step is not None:
        seen = first_step < step
        row |= {
            "mem_seen": _mean_over(exact, seen),
            "mem_unseen": _mean_over(exact, ~seen),
            "n_seen": int(seen.sum()),
            "n_unseen": int((~seen).sum()),
            "mem_acc_seen": _mean_over(accuracy, seen),
            "mem_acc_unseen": _mean_over(accuracy, ~seen),
        }
    detail = {"memorised": exact.tolist(), "accuracy": accuracy.round(6).tolist()}
    return row, detail


def memorisation(
    model, sample, prefix: int, batch_size: int, step: int, vocab: int
) -> tuple[dict, dict]:
    """Run the test on `sample` (sample.MemSample) at revision `step`."""
    length = sample.tokens.shape[1] - prefix
    generated = greedy(model, sample.tokens[:, :prefix], length, batch_size, vocab)
    return score(generated, sample.tokens[:, prefix:], sample.first_step, step)


def sample_losses(model, sample, batch_size: int, step: int, vocab: int) -> tuple[dict, list]:
    """(the sample_loss columns, each sequence's mean loss) at revision `step`."""
    tokens = sample.tokens  # (S, span)
    if not len(tokens):
        return {"sample_loss_all": None}, []
    per_sequence = token_losses(model, tokens[:, :-1], tokens[:, 1:], batch_size, vocab).mean(1)
    row = {"sample_loss_all": float(per_sequence.mean())}
    if sample.first_step is not None:
        seen = sample.first_step < step
        row |= {"sample_loss_seen": _mean_over(per_sequence, seen),
                "sample_loss_unseen": _mean_over(per_sequence, ~seen)}  # fmt: skip
    return row, per_sequence.round(6).tolist()
