"""Typed run configuration: one dataclass per concern, loaded from TOML plus overrides.

A run is described by eight sections, `[run] [model] [data] [train] [optim]
[checkpoint] [publish] [log]`. Each section is a dataclass whose fields carry their
defaults, bounds and documentation (the typed-config base, `model/typed.py`, validates
them on creation). The `[model]` section is
special: `preset` names a `ModelConfig` preset and every other key overrides one of
that preset's fields.

Loading never evaluates anything: TOML is parsed by `tomllib` and `section.key=value`
overrides are parsed as TOML values (falling back to a bare string). Unknown sections,
unknown keys and wrongly typed values fail with a one-line `ConfigError` naming the key
and the closest valid one. `dump_toml` writes the fully resolved config with `tomli_w`
(every default spelled out) so `runs/<name>/config.toml` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from strata.model import ModelConfig
from strata.model.typed import closest, unknown_key
from strata.run.sections import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    LogConfig,
    OptimConfig,
    PublishConfig,
    RunConfig,
    TrainConfig,
)
from strata.tokenizer.fsutil import METADATA_LIMIT, read_own

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "OptimConfig",
    "PublishConfig",
    "RunConfig",
    "TrainConfig",
    "dump_toml",
    "from_dict",
    "load_config",
    "parse_override",
]

SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "checkpoint": CheckpointConfig,
    "publish": PublishConfig,
    "log": LogConfig,
}


@dataclass
class Config:
    """The whole run: one instance per section plus the resolved model config."""

    run: RunConfig = field(default_factory=RunConfig)
    model_preset: str = "quickstart"
    model: ModelConfig = field(default_factory=lambda: ModelConfig.from_preset("quickstart"))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    log: LogConfig = field(default_factory=LogConfig)
    model_keys: frozenset[str] = frozenset()
    """The `[model]` keys set explicitly (others come from the preset or the data)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {"run": self.run.to_dict()}
        out["model"] = {"preset": self.model_preset, **self.model.to_dict()}
        for name in ("data", "train", "optim", "checkpoint", "publish", "log"):
            out[name] = getattr(self, name).to_dict()
        return out


def _build_model(values: dict[str, Any]) -> tuple[str, ModelConfig]:
    """`[model]`: `preset` names a ModelConfig preset, every other key overrides a field."""
    values = dict(values)
    preset = values.pop("preset", "quickstart")
    if not isinstance(preset, str) or preset not in ModelConfig.presets():
        hint = closest(str(preset), ModelConfig.presets())
        raise ConfigError(f"model.preset = {preset!r}: expected a preset; {hint}")
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in values:
        if key not in fields:
            raise unknown_key(f"model.{key}", key, ["preset", *fields])
    return preset, ModelConfig.from_preset(preset, **values)


def _legacy_train(train: dict[str, Any]) -> dict[str, Any]:
    """`[train]` with the older `eval_batches = N` read as `eval_windows = N x micro`."""
    if "eval_batches" not in train:
        return train
    train = dict(train)
    n, micro = (
        train.pop("eval_batches"),
        train.get("micro_batch_size", TrainConfig.micro_batch_size),
    )
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"train.eval_batches = {n!r}: expected a positive integer")
    if isinstance(micro, int) and not isinstance(micro, bool):
        train.setdefault("eval_windows", n * micro)
    return train


def recorded_eval_windows(resolved: dict[str, Any] | None) -> int | None:
    """The validation windows a run evaluated, from its resolved config as a dict (the
    `run` of a strata.json, or config.toml): `train.eval_windows`, for older runs
    `eval_batches x micro_batch_size`; None when it records neither."""
    train = resolved.get("train") if isinstance(resolved, dict) else None
    if not isinstance(train, dict):
        return None
    try:
        count = _legacy_train(train).get("eval_windows")
    except ConfigError:
        return None
    ok = isinstance(count, int) and not isinstance(count, bool) and count > 0
    return count if ok else None


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated Config from nested dicts (parsed TOML with overrides applied)."""
    valid = ["model", *SECTIONS]
    for name, values in raw.items():
        if name not in valid:
            raise ConfigError(f"unknown section '[{name}]'; {closest(name, valid)}")
        if not isinstance(values, dict):
            raise ConfigError(f"'{name}' must be a section ([{name}]), got {values!r}")
    raw = {**raw, "train": _legacy_train(raw.get("train", {}))}
    sections = {n: c.from_dict(raw.get(n, {})) for n, c in SECTIONS.items()}
    preset, model = _build_model(raw.get("model", {}))
    keys = frozenset(raw.get("model", {})) - {"preset"}
    cfg = Config(model_preset=preset, model=model, model_keys=keys, **sections)
    if cfg.train.seq_len > cfg.model.max_seq_len:
        raise ConfigError(
            f"train.seq_len = {cfg.train.seq_len}: expected at most "
            f"model.max_seq_len ({cfg.model.max_seq_len})"
        )
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse `section.key=value`; the value is a TOML value, or a bare string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML recipe (or start from defaults when `path` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(read_own(path, METADATA_LIMIT, "config").decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        table = raw
        for name in (section, *key.split(".")[:-1]):  # model.moe.top_k: a nested table
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {text!r}: '{name}' is not a section")
        table[key.split(".")[-1]] = value
    return from_dict(raw)


def _without_none(values: Any) -> Any:
    """`values` with None left out at every depth, lists of tables too (TOML has no null)."""
    if isinstance(values, list):
        return [_without_none(v) for v in values]
    if not isinstance(values, dict):
        return values
    return {k: _without_none(v) for k, v in values.items() if v is not None}


def dump_toml(cfg: Config) -> str:
    """The fully resolved config as TOML text (every default written out; None left out)."""
    return tomli_w.dumps(_without_none(cfg.to_dict()))
