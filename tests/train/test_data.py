"""The trainer's batches follow the data-order contract exactly."""

import numpy as np
import torch
from strata.tokenizer import TokenShards, batch_window_indices
from strata.train.data import TrainBatches, validation_batches


def naive_batch(shards, seq_len, global_batch, seed, step):
    """Global batch `step` rebuilt from the contract's definition, independently."""
    n_windows = (shards.n_tokens - 1) // seq_len
    rows = []
    for j in range(global_batch):
        g = step * global_batch + j
        perm = np.random.Generator(np.random.PCG64([seed, g // n_windows])).permutation(n_windows)
        start = perm[g % n_windows] * seq_len
        rows.append(shards.read(int(start), seq_len + 1))
    return np.stack(rows)


def test_batch_is_identical_across_loaders_ranks_and_micro_batches(tiny_dataset):
    shards = TokenShards(tiny_dataset, "train")
    one = TrainBatches(shards, 32, 8, 8, seed=3)
    again = TrainBatches(TokenShards(tiny_dataset, "train"), 32, 8, 2, seed=3)
    ranks = [TrainBatches(shards, 32, 8, 2, seed=3, rank=r, world_size=4) for r in range(4)]
    n_epoch_steps = one.n_windows // 8 + 2  # runs past an epoch boundary
    for step in [0, 1, 7, n_epoch_steps]:
        expected = naive_batch(shards, 32, 8, 3, step)
        assert np.array_equal(one.local_tokens(step).numpy(), expected)
        assert np.array_equal(again.local_tokens(step).numpy(), expected)
        stacked = torch.cat([r.local_tokens(step) for r in ranks])
        assert np.array_equal(stacked.numpy(), expected)
        assert np.array_equal(
            one.window_indices(step), batch_window_indices(one.n_windows, 3, 8, step)
        )


def test_micro_batches_are_shifted_inputs_and_targets(tiny_dataset):
    loader = TrainBatches(TokenShards(tiny_dataset, "train"), 32, 8, 4, seed=0)
    micro = loader.micro_batches(5, torch.device("cpu"))
    rows = loader.local_tokens(5)
    assert len(micro) == 2
    inputs = torch.cat([x for x, _ in micro])
    targets = torch.cat([y for _, y in micro])
    assert torch.equal(inputs, rows[:, :-1]) and torch.equal(targets, rows[:, 1:])
    assert inputs.shape == (8, 32) and inputs.dtype == torch.int64


def test_prefetch_serves_the_right_batch_in_any_order(tiny_dataset):
    """Batch N + 1 is read ahead while N trains; a jump (resume, eval) reads directly."""
    loader = TrainBatches(TokenShards(tiny_dataset, "train"), 32, 8, 8, seed=1)
    fresh = TrainBatches(TokenShards(tiny_dataset, "train"), 32, 8, 8, seed=1)
    for step in (0, 1, 2, 7, 8, 3):
        ((inputs, _),) = loader.micro_batches(step, torch.device("cpu"))
        assert torch.equal(inputs, fresh.local_tokens(step)[:, :-1]), step
        assert loader._pending[0] == step + 1  # the next one is on its way


def test_validation_windows_are_fixed(tiny_dataset):
    val = TokenShards(tiny_dataset, "val")
    a = validation_batches(val, 32, 4, 10)  # 10 windows: micro-batches of 4, 4 and 2
    b = validation_batches(TokenShards(tiny_dataset, "val"), 32, 4, 10)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert [x.shape for x in a] == [(4, 33), (4, 33), (2, 33)]
    for micro in (1, 3, 10):  # the same windows whatever the micro-batch size
        assert torch.equal(torch.cat(validation_batches(val, 32, micro, 10)), torch.cat(a))


def test_trainer_and_study_validate_on_the_same_windows(tiny_dataset):
    """Both score `validation_windows`: window i is the seq_len + 1 tokens from i * seq_len."""
    from strata.study.data import eval_set

    val = TokenShards(tiny_dataset, "val")
    n = (val.n_tokens - 1) // 32
    picks = np.unique(np.linspace(0, n - 1, min(n, 6)).round().astype(np.int64))
    expected = np.stack([val.read(int(w) * 32, 33) for w in picks])  # (6, 33)
    trainer = torch.cat(validation_batches(val, 32, 2, 6)).numpy()
    study = eval_set(val, 32, 6, np.zeros(val.vocab_size, np.int64), 1)
    assert np.array_equal(trainer, expected)
    assert np.array_equal(study.inputs, expected[:, :-1])
    assert np.array_equal(study.targets, expected[:, 1:])
