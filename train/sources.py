"""The run's training data as sources: one prepared dataset, or a mixture of several.

Design choices:
- `data.sources` empty: the one source is `data.dataset`, and everything (order,
  fingerprint, validation) is what it was before mixtures existed.
- A mixture's sources share one tokenizer (the `tokenizer_sha256` of their index.json):
  a mismatch is refused naming both datasets. Their weights become the exact integer
  ratios of `tokenizer.mixture.integer_weights`, and the order is
  `tokenizer.mixture.Mixture`.
- `max_repetition` is checked before training: a source that would pass its limit
  within `train.max_steps` refuses the run, naming the steps the mixture supports.
- The fingerprint of a mixture is the sha256 of its sources' (name, index.json sha256,
  integer weight) list, so a resume with other sources or weights is refused as a
  changed dataset; a one-source run keeps its dataset's own fingerprint.
- Validation: every source's validation split is scored on its own fixed windows
  (`val_loss/<name>`); the run's `val_loss` is the first source's, the dataset the study
  and `verify --recompute` evaluate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from strata.run import dataset_fingerprint, resolve_dataset
from strata.run.config import Config, ConfigError
from strata.run.sections import SourceConfig
from strata.tokenizer import TokenShards
from strata.tokenizer.mixture import Mixture, integer_weights


@dataclass
class Sources:
    """The opened sources of a run, in config order."""

    names: list[str]
    datasets: list[Path]
    train: list[TokenShards]
    weights: tuple[int, ...] | None
    """Integer weights of a mixture; None for one dataset (`data.dataset`)."""
    fingerprint: str
    records: list[dict] = field(default_factory=list)
    """A mixture's sources as `strata.json` records them (`sources`: name, dataset,
    index.json sha256, integer weight); [] for one dataset."""


def _configured(cfg: Config) -> list[SourceConfig]:
    return cfg.data.sources or [SourceConfig(dataset=cfg.data.dataset)]


def open_sources(cfg: Config, verify: bool | None = None) -> Sources:
    """Open every source's training split (`verify`, default `data.verify`: check the
    shards' sha256)."""
    configured, verify = _configured(cfg), cfg.data.verify if verify is None else verify
    datasets = [resolve_dataset(s.dataset, cfg.run_dir, cfg.run.out_dir) for s in configured]
    train = [TokenShards(d, "train", verify=verify) for d in datasets]
    names = [s.label for s in configured]
    first = train[0].index["tokenizer_sha256"]
    for dataset, shards in zip(datasets[1:], train[1:], strict=True):
        if shards.index["tokenizer_sha256"] != first:
            raise ValueError(
                f"{dataset}: prepared with another tokenizer than {datasets[0]} (sha256 "
                f"{shards.index['tokenizer_sha256'][:12]} vs {first[:12]}); every source "
                "of a mixture shares one tokenizer"
            )
    if not cfg.data.sources:
        return Sources(names, datasets, train, None, dataset_fingerprint(datasets[0]))
    weights = integer_weights([s.weight for s in configured])
    rows = zip(names, datasets, weights, strict=True)
    listed = [[name, dataset_fingerprint(d), w] for name, d, w in rows]
    fingerprint = hashlib.sha256(json.dumps(listed).encode()).hexdigest()
    sources = Sources(names, datasets, train, weights, fingerprint)
    sources.records = [
        {"name": name, "dataset": s.dataset, "fingerprint": fp, "weight": w}
        for (name, fp, w), s in zip(listed, configured, strict=True)
    ]
    check_repetition(cfg, sources)
    return sources


def check_repetition(cfg: Config, sources: Sources) -> None:
    """Refuse a run in which a source would pass its `max_repetition` epochs."""
    t = cfg.train
    counts = tuple(s.n_windows(t.seq_len) for s in sources.train)
    mixture = Mixture(sources.weights, counts, t.seed)
    limits = [s.max_repetition for s in cfg.data.sources]
    supported = mixture.supported_steps(t.global_batch_size, limits)
    if supported is None or supported >= t.max_steps:
        return
    drawn = mixture.draws_before(t.max_steps * t.global_batch_size)
    over = next(i for i, lim in enumerate(limits) if lim and drawn[i] > lim * counts[i])
    raise ConfigError(
        f"data.sources: {sources.names[over]!r} would be read {drawn[over] / counts[over]:.2f} "
        f"times over train.max_steps = {t.max_steps} (max_repetition = {limits[over]}, "
        f"{counts[over]} windows of seq_len {t.seq_len}); the mixture supports {supported} "
        "steps: lower train.max_steps, raise max_repetition or add data"
    )


def validation_splits(cfg: Config, sources: Sources) -> dict[str, TokenShards]:
    """Each source's validation split, by name (a mixture's only; {} for one dataset)."""
    if sources.weights is None:
        return {}
    return {
        name: TokenShards(dataset, "val", verify=cfg.data.verify)
        for name, dataset in zip(sources.names, sources.datasets, strict=True)
    }
