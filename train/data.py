"""Batches for the trainer, drawn from token shards by the data-order contract.

Global batch N is `tokenizer.order.batch_window_indices(n_windows, seed, global_batch,
N)`, or for a mixture of datasets `tokenizer.mixture.Mixture.batch` (which is the same
for one source): a pure function of the data, seed, sequence length, global batch size
and N. A
process takes only its own rows (`rank_slice`), then splits them into micro-batches, so
neither the number of processes nor the micro-batch size changes what is trained on.
Validation uses fixed, evenly spaced windows of the validation split
(`tokenizer.order.validation_windows`, the study's too), the same for every evaluation
and every revision, so validation losses compare across a run.

Prefetch: while step N trains, a background thread reads the rows of batch N + 1 (into
pinned memory when the device is CUDA, so the copy to the device is asynchronous).
Batches are a pure function of the step, so prefetching changes nothing but the wait.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from strata.tokenizer import TokenShards, rank_slice, validation_windows
from strata.tokenizer.edits import INJECT, DataEdits
from strata.tokenizer.mixture import Mixture, MixtureBatch


class TrainBatches:
    """This process's share of every global batch, as (inputs, targets) micro-batches,
    from one dataset or a mixture (`shards` a list, with integer `weights`)."""

    def __init__(
        self,
        shards: TokenShards | list[TokenShards],
        seq_len: int,
        global_batch_size: int,
        micro_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: tuple[int, ...] | None = None,
    ) -> None:
        self.sources = list(shards) if isinstance(shards, list) else [shards]
        self.shards, self.seq_len, self.seed = self.sources[0], seq_len, seed
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.rows = rank_slice(global_batch_size, world_size, rank)
        counts = tuple(s.n_windows(seq_len) for s in self.sources)
        self.mixture = Mixture(weights or (1,) * len(counts), counts, seed)
        self.n_windows = sum(counts)
        self.edits: DataEdits | None = None  # documents excluded, texts injected
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future] | None = None  # (step, rows being read)
        self.last_rows: torch.Tensor | None = None  # (rows, T + 1) of the last batch served
        local = self.rows.stop - self.rows.start
        if local % micro_batch_size:
            raise ValueError(
                f"train.global_batch_size = {global_batch_size} over {world_size} process(es) "
                f"gives {local} rows each, not a multiple of train.micro_batch_size = "
                f"{micro_batch_size}"
            )

    def set_order(self, mixture: Mixture, edits: DataEdits | None) -> None:
        """A fork's mixture (another weights' pattern from its step) and the run's edits."""
        self.mixture, self.edits, self._pending = mixture, edits, None

    def origin(self, step: int) -> MixtureBatch:
        """Source, window and epoch of every row of global batch `step` (all ranks'); an
        injected row has source len(self.sources) and window its injection's index."""
        batch = self.mixture.batch(self.global_batch_size, step)
        return self.edits.apply(batch, step) if self.edits is not None else batch

    def window_indices(self, step: int) -> np.ndarray:
        """Window indices (in their source) of global batch `step`, shape (global_batch,)."""
        return self.origin(step).windows

    def spike_rows(self, step: int, names: list[str]) -> dict[str, list]:
        """Window and source name of every row of global batch `step` (a spike record)."""
        origin = self.origin(step)
        return {"windows": origin.windows.tolist(),
                "sources": [(*names, INJECT)[s] for s in origin.sources.tolist()]}  # fmt: skip

    def local_tokens(self, step: int) -> torch.Tensor:
        """This process's rows of batch `step`: (rows, seq_len + 1) int64."""
        origin = self.origin(step)
        pairs = zip(origin.sources[self.rows], origin.windows[self.rows], strict=True)
        rows = [self._row(int(s), int(w)) for s, w in pairs]
        return torch.from_numpy(np.stack(rows))

    def _row(self, source: int, window: int) -> np.ndarray:
        if source < len(self.sources):
            return self.sources[source].window(window, self.seq_len)
        return self.edits.rows[window]  # an injected text

    def _read(self, step: int, pin: bool) -> torch.Tensor:
        tokens = self.local_tokens(step)
        return tokens.pin_memory() if pin else tokens

    def _tokens(self, step: int, device: torch.device) -> torch.Tensor:
        """Rows of batch `step` (prefetched when it was the one expected), then start
        reading batch `step + 1` in the background."""
        pin = device.type == "cuda"
        if self._pending is not None and self._pending[0] == step:
            tokens = self._pending[1].result()
        else:
            tokens = self._read(step, pin)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending = (step + 1, self._pool.submit(self._read, step + 1, pin))
        return tokens

    def micro_batches(self, step: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        tokens = self._tokens(step, device)  # (rows, T + 1)
        self.last_rows = tokens
        out = []
        for chunk in tokens.split(self.micro_batch_size):
            chunk = chunk.to(device, non_blocking=True)
            out.append((chunk[:, :-1], chunk[:, 1:]))  # inputs, targets: (B, T)
        return out


def validation_batches(
    shards: TokenShards, seq_len: int, micro_batch_size: int, count: int
) -> list[torch.Tensor]:
    """`count` evenly spaced validation windows (fewer when the split has fewer), in
    micro-batches of at most `micro_batch_size` rows: the windows never depend on the
    micro-batch size, only how many go through one forward."""
    picks = validation_windows(shards.n_windows(seq_len), count)
    rows = torch.from_numpy(np.stack([shards.window(int(w), seq_len) for w in picks]))
    return list(rows.split(micro_batch_size))
