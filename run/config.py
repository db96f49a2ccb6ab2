"""Typed run configuration: one dataclass per concern, loaded from TOML plus overrides.

A run is described by eight sections, `[run] [model] [data] [train] [optim]
[checkpoint] [publish] [log]`. Each section is a dataclass whose fields carry their
defaults and documentation; `__post_init__` validates values. The `[model]` section is
special: `preset` names a `ModelConfig` preset and every other key overrides one of
that preset's fields.

Loading never evaluates anything: TOML is parsed by `tomllib` and `section.key=value`
overrides are parsed as TOML values (falling back to a bare string). Unknown sections,
unknown keys and wrongly typed values fail with a one-line `ConfigError` naming the key
and the closest valid one. `dump_toml` writes the fully resolved config (every default
spelled out) so `runs/<name>/config.toml` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.model import ModelConfig
from strata.run.sections import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    LogConfig,
    OptimConfig,
    PublishConfig,
    RunConfig,
    TrainConfig,
    _check,
)

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
        out: dict[str, dict[str, Any]] = {"run": dataclasses.asdict(self.run)}
        out["model"] = {"preset": self.model_preset, **self.model.to_dict()}
        for name in ("data", "train", "optim", "checkpoint", "publish", "log"):
            out[name] = dataclasses.asdict(getattr(self, name))
        return out


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{hint}valid: {', '.join(valid)}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field type `hint`; ints are accepted for floats."""
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        ok = isinstance(value, list)
        value = [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)] if ok else value
    else:
        ok = True
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{key} = {value!r}: expected a value of type {name}")
    return value


# Keys that are Python keywords, spelled as such in TOML: `checkpoint.async`, `publish.async`.
ALIASES = {("checkpoint", "async"): "async_save", ("publish", "async"): "async_write"}


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        key = ALIASES.get((name, key), key)
        if key not in hints:
            raise ConfigError(f"unknown key '{name}.{key}'; {_closest(key, list(hints))}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def _build_model(values: dict[str, Any]) -> tuple[str, ModelConfig]:
    values = dict(values)
    preset = values.pop("preset", "quickstart")
    _check(isinstance(preset, str), "model.preset", "a preset name", preset)
    if preset not in ModelConfig.presets():
        raise ConfigError(
            f"model.preset = {preset!r}: unknown preset; {_closest(preset, ModelConfig.presets())}"
        )
    hints = typing.get_type_hints(ModelConfig)
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key 'model.{key}'; {_closest(key, ['preset', *fields])}")
        values[key] = _coerce(f"model.{key}", value, hints[key])
    try:
        return preset, ModelConfig.from_preset(preset, **values)
    except ValueError as err:
        raise ConfigError(f"[model] {err}") from None


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated Config from nested dicts (parsed TOML with overrides applied)."""
    valid = ["model", *SECTIONS]
    for name, values in raw.items():
        if name not in valid:
            raise ConfigError(f"unknown section '[{name}]'; {_closest(name, valid)}")
        if not isinstance(values, dict):
            raise ConfigError(f"'{name}' must be a section ([{name}]), got {values!r}")
    try:
        sections = {n: _build_section(n, c, raw.get(n, {})) for n, c in SECTIONS.items()}
    except TypeError as err:  # a dataclass rejected its arguments
        raise ConfigError(str(err)) from None
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
            raw = tomllib.loads(path.read_text())
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_toml(cfg: Config) -> str:
    """The fully resolved config as TOML text (every default written out)."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines += _toml_table(section, values)
    return "\n".join(lines)


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """`[name]` with its values, then its sub-tables (`[model.moe]`); None is left out."""
    lines = [f"[{name}]"]
    lines += [
        f"{k} = {_toml_value(v)}"
        for k, v in values.items()
        if v is not None and not isinstance(v, dict)
    ]
    lines.append("")
    for k, v in values.items():
        if isinstance(v, dict):
            lines += _toml_table(f"{name}.{k}", v)
    return lines
