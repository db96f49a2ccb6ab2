"""The run's data edits (`data.exclude_docs`, `data.exclude_docs_file`, `data.inject`)
built from its config, sources and tokenizer; the rule is `tokenizer/edits.py`.

Design choices:
- An excluded id names a document of a source's train split (`index.json` order): a
  bare integer the first source's, `NAME:ID` source NAME's. Every id is checked
  against its source (one line naming the key, the id and the range), and every
  window overlapping one of them is masked.
- An injection's text is encoded with the run's tokenizer (no BOS); a `file` is read
  as UTF-8 relative to the working directory. More injections at one step than rows
  in the batch, or a text longer than a row, is one line naming the injection.
- The edits apply from the fork step in a fork (its steps before are the parent's),
  else from step 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from strata.run.config import Config, ConfigError
from strata.tokenizer import Tokenizer, TokenShards
from strata.tokenizer.edits import DataEdits, excluded_entries, exclusion_masks, injection_row
from strata.tokenizer.mixture import ordered
from strata.train.data import TrainBatches


def excluded_ids(cfg: Config) -> list[int | str]:
    """`data.exclude_docs` and the lines of `data.exclude_docs_file`."""
    try:
        return excluded_entries(cfg.data.exclude_docs, cfg.data.exclude_docs_file)
    except OSError as err:
        file = cfg.data.exclude_docs_file
        raise ConfigError(f"data.exclude_docs_file = {file!r}: {err.strerror}") from None


def masks_of(cfg: Config, names: list[str], shards: list[TokenShards]) -> list[np.ndarray]:
    """Per source, (n_windows,) bool: the windows overlapping an excluded document."""
    starts = [np.asarray(s._doc_starts, dtype=np.int64) for s in shards]
    try:
        return exclusion_masks(excluded_ids(cfg), names, starts, [s.n_tokens for s in shards],
                               cfg.train.seq_len)  # fmt: skip
    except ValueError as err:
        raise ConfigError(f"data.exclude_docs: {err}") from None


def injection_rows(cfg: Config, tokenizer: Tokenizer, eos_id: int) -> list[np.ndarray]:
    """The (seq_len + 1,) row of every `data.inject` entry."""
    rows = []
    for i, inject in enumerate(cfg.data.inject):
        try:
            text = inject.text or Path(inject.file).read_text(encoding="utf-8")
            rows.append(injection_row(tokenizer.encode(text), eos_id, cfg.train.seq_len))
        except (OSError, ValueError) as err:
            detail = err.strerror if isinstance(err, OSError) else str(err)
            raise ConfigError(f"data.inject[{i}]: {detail}") from None
    return rows


def build_edits(cfg: Config, names: list[str], shards: list[TokenShards], tokenizer: Tokenizer,
                start: int) -> DataEdits | None:  # fmt: skip
    """The run's edits, or None when it has none."""
    if not (cfg.data.exclude_docs or cfg.data.exclude_docs_file or cfg.data.inject):
        return None
    steps, rows_per_step = [tuple(sorted(set(i.steps))) for i in cfg.data.inject], {}
    for step in (s for group in steps for s in group):
        rows_per_step[step] = rows_per_step.get(step, 0) + 1
    if rows_per_step and max(rows_per_step.values()) > (b := cfg.train.global_batch_size):
        step = max(rows_per_step, key=rows_per_step.get)
        raise ConfigError(f"data.inject: {rows_per_step[step]} injections at step {step}, "
                          f"more than train.global_batch_size = {b}")  # fmt: skip
    rows = injection_rows(cfg, tokenizer, shards[0].eos_id)
    try:
        return DataEdits(start, cfg.train.seed, masks_of(cfg, names, shards), rows, steps)
    except ValueError as err:
        raise ConfigError(f"data.exclude_docs: {err}") from None


def set_run_order(cfg: Config, batches: TrainBatches, fork: dict, names: list[str],
                  tokenizer: Tokenizer) -> None:  # fmt: skip
    """A fork's mixture (`fork.json` order) and the run's edits, from the fork step."""
    edits = build_edits(cfg, names, batches.sources, tokenizer, fork.get("step", 0))
    batches.set_order(ordered(fork.get("order"), batches.mixture), edits)
