"""`strata.json`, the metadata of a published revision, and its data cursor.

A revision folder `checkpoints/stepN/` holds its weights, `config.json` (when a Hugging
Face class fits), the tokenizer files and `strata.json`: the native model config, the
step, tokens seen, train/validation loss, the data cursor (where the revision stands in
the data-order contract), its parent revision, the resolved run config, the code's git
commit and the sha256 of every other file in the folder.

Design choices:
- One reader (`RevisionMeta.read`) and one writer (`RevisionMeta.write`). The reader
  checks the type of every field it knows and fails with one line naming the file and
  the key; keys it does not know are kept in `extra` and written back unchanged, so a
  newer revision read by older code loses nothing. Fields added later are optional, so
  older revisions still read.
- `DataCursor.at(cfg, step, ...)` is the one place that says what the cursor of step N
  holds: `batches_seen == next_batch == N` and `windows_consumed == N x global batch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata.run.fields import take, take_str_map
from strata.run.jsonfile import read_object, write_atomic
from strata.run.layout import REVISION_META

if TYPE_CHECKING:
    from strata.run.config import Config

FORMAT_VERSION = 1
NATIVE = "strata"
"""`weights_format` of a revision no Hugging Face class can hold (our parameter names)."""


@dataclass(frozen=True)
class DataCursor:
    """Where a revision stands in the data-order contract (`strata.json` `data`)."""

    dataset: str | None = None
    dataset_fingerprint: str | None = None
    tokenizer_sha256: str | None = None
    seed: int | None = None
    seq_len: int | None = None
    global_batch_size: int | None = None
    batches_seen: int | None = None
    next_batch: int | None = None
    windows_consumed: int | None = None
    n_windows: int | None = None

    @classmethod
    def at(
        cls, cfg: Config, step: int, fingerprint: str, tokenizer_sha256: str, n_windows: int
    ) -> DataCursor:
        """The cursor of revision `step` of the run configured by `cfg`."""
        t = cfg.train
        return cls(
            str(cfg.data.dataset), fingerprint, tokenizer_sha256, t.seed, t.seq_len,
            t.global_batch_size, step, step, step * t.global_batch_size, n_windows,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> DataCursor:
        kinds = {f.name: str if f.type.startswith("str") else int for f in fields(cls)}
        return cls(**{k: take(raw, k, kind, f"{where} data") for k, kind in kinds.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_SCALARS: dict[str, type] = {
    "format_version": int, "revision": str, "step": int, "tokens": int,
    "last_batch_loss": float, "val_loss": float, "parent": str, "git_commit": str,
    "weights_format": str, "hf_incompatible": str, "exported_from": str,
    "imported_from": str, "eval_dtype": str,
}  # fmt: skip
_OBJECTS = ("model_config", "run", "moe_routing")


@dataclass
class RevisionMeta:
    """The typed content of one `strata.json`."""

    step: int | None = None
    revision: str | None = None
    tokens: int | None = None
    last_batch_loss: float | None = None
    val_loss: float | None = None
    eval_dtype: str | None = None
    """The dtype val_loss was computed in ("fp32" or "bf16"): how close a recomputation
    must come (`strata verify --recompute`)."""
    parent: str | None = None
    data: DataCursor | None = None
    run: dict[str, Any] | None = None
    """The resolved run config (`config.toml` as a dict) of the run that published it."""
    model_config: dict[str, Any] | None = None
    moe_routing: dict[str, Any] | None = None
    weights_format: str | None = None
    hf_incompatible: str | None = None
    exported_from: str | None = None
    imported_from: str | None = None
    git_commit: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as they were."""
    recorded: frozenset[str] = frozenset()
    """The keys the file held (a null `parent` and no `parent` at all differ)."""

    @property
    def native_weights(self) -> bool:
        """Whether `model.safetensors` holds our own parameter names (no HF class fits)."""
        return self.weights_format == NATIVE

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str | Path) -> RevisionMeta:
        if "train_loss" in raw:  # the older name of last_batch_loss
            old = raw["train_loss"]
            raw = {k: v for k, v in raw.items() if k != "train_loss"}
            raw.setdefault("last_batch_loss", old)
        values: dict[str, Any] = {k: take(raw, k, t, where) for k, t in _SCALARS.items()}
        values |= {k: take(raw, k, dict, where) for k in _OBJECTS}
        values["sha256"] = take_str_map(raw, "sha256", where)
        data = take(raw, "data", dict, where)
        values["data"] = None if data is None else DataCursor.from_dict(data, str(where))
        if values["format_version"] is None:
            values["format_version"] = FORMAT_VERSION
        known = {*_SCALARS, *_OBJECTS, "sha256", "data"}
        values["extra"] = {k: v for k, v in raw.items() if k not in known}
        return cls(**values, recorded=frozenset(raw))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("format_version", "extra", "sha256", "recorded"):
                continue
            if value is None and f.name not in self.recorded:  # a recorded null stays
                continue
            out[f.name] = value.to_dict() if isinstance(value, DataCursor) else value
        return out | self.extra | {"sha256": self.sha256}

    @classmethod
    def read(cls, folder: str | Path) -> RevisionMeta | None:
        """The revision's `strata.json`, or None for a folder without one (a plain
        Hugging Face folder); ValueError naming the file and key when it is malformed."""
        path = Path(folder) / REVISION_META
        if not path.exists() and not path.is_symlink():
            return None  # a FIFO or a link is not missing: read_object refuses it
        return cls.from_dict(read_object(path), path)

    def write(self, folder: str | Path) -> None:
        """Write `strata.json` into `folder` atomically."""
        write_atomic(Path(folder) / REVISION_META, self.to_dict())
