"""Resuming must continue the same run: changes that alter the data order or the weights
are refused before anything is loaded or written.

Design choices:
- The run's own `RUN/config.toml` (the resolved config of the run so far) is compared
  key by key with the resolved config of the resume. Only keys that change neither the
  data order nor what the weights become may differ (`RESUMABLE`): how long the run is
  (`train.max_steps`; the schedule follows it by design), how it runs (devices,
  threads, parallelism, precision knobs, compile, activation checkpointing, the
  micro-batch split), and what it records (logging, evaluation cadence, checkpoints,
  publication). Everything else (seed, seq_len, global batch size, the optimizer, the
  model, the dataset) is refused with one line naming every changed key.
- The dataset is compared by content: the fingerprint of its `index.json` against the
  one recorded in the newest published revision, so a moved dataset resumes and an
  edited one with the same path does not.
- Without `config.toml` (deleted), the run config recorded in the newest revision's
  `strata.json` stands in for it.
- A run folder without a resume checkpoint is a fresh start: nothing to compare.
"""

from __future__ import annotations

from typing import Any

from strata.run import RevisionMeta, RunPaths
from strata.run.config import Config, ConfigError
from strata.run.config import from_dict as config_from_dict
from strata.run.layout import latest_resume

RESUMABLE = {
    "run": None,  # None: every key of the section
    "log": None,
    "checkpoint": None,
    "publish": None,
    "data": {"verify", "dataset"},  # the dataset: compared by content (below)
    "model": {"loss_chunk_size", "preset"},  # how the loss is computed, not what it is
    "train": {
        "max_steps", "eval_every", "eval_windows", "eval_tasks", "eval_tasks_limit", "device",
        "dtype", "threads",
        "micro_batch_size", "dp_replicate", "dp_shard", "param_dtype", "reduce_dtype",
        "reshard_after_forward", "activation_checkpointing", "compile", "deterministic",
        "comm_timeout_s", "max_bad_steps", "spike_factor", "spike_window",
    },
}  # fmt: skip


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resumable(key: str) -> bool:
    section, _, name = key.partition(".")
    allowed = RESUMABLE.get(section, set())
    return allowed is None or name.split(".")[0] in allowed


def changed_keys(before: Config, now: Config) -> list[str]:
    """`key (old -> new)` for every key that differs and may not change on resume."""
    old, new = _flat(before.to_dict()), _flat(now.to_dict())
    return [
        f"{key} ({old.get(key)!r} -> {new.get(key)!r})"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not _resumable(key)
    ]


def _newest_metas(run: RunPaths):
    """The published revisions' strata.json, newest first (unreadable ones skipped)."""
    folders = sorted(run.checkpoints.glob("step*"), key=lambda p: p.name[4:].zfill(12))
    for folder in reversed(folders):
        try:
            meta = RevisionMeta.read(folder)
        except (OSError, ValueError):
            continue
        if meta is not None:
            yield meta


def recorded_fingerprint(run: RunPaths) -> str | None:
    """`data.dataset_fingerprint` of the newest published revision that records one."""
    for meta in _newest_metas(run):
        if meta.data is not None and meta.data.dataset_fingerprint:
            return meta.data.dataset_fingerprint
    return None


def recorded_config(run: RunPaths) -> Config | None:
    """RUN/config.toml, else the run config the newest revision records."""
    cfg = run.read_config()
    if cfg is not None:
        return cfg
    for meta in _newest_metas(run):
        if meta.run:
            return config_from_dict(meta.run)
    return None


def check_resume(run: RunPaths, cfg: Config, fingerprint: str) -> None:
    """Raise ConfigError when resuming `run` with `cfg` would mix two runs."""
    if latest_resume(run.resume) is None:
        return
    before = recorded_config(run)
    if before is None:
        return
    changed = changed_keys(before, cfg)
    recorded = recorded_fingerprint(run)
    if recorded is not None and recorded != fingerprint:
        changed.append(f"data.dataset content (fingerprint {recorded[:12]} -> {fingerprint[:12]})")
    elif recorded is None and str(before.data.dataset) != str(cfg.data.dataset):
        changed.append(f"data.dataset ({before.data.dataset!r} -> {cfg.data.dataset!r})")
    if changed:
        raise ConfigError(
            f"{run.root}: cannot resume with changed {', '.join(changed)}: they change the "
            "data order or the weights; keep the run's config, or train under a new run.name"
        )
