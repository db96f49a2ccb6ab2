"""Model configuration: one typed dataclass plus named presets.

Design choices:
- `ModelConfig` describes a Llama-style decoder (RMSNorm, SwiGLU, GQA, full rotary).
  Every field is a plain value so a config round-trips through TOML/JSON
  (`to_dict` / `from_dict`) and into a published checkpoint's `strata.json`.
- Validation happens once, in `__post_init__`. Every error is one line naming the
  field and what was expected, and every error is a `ValueError` (wrong types
  included), so callers need to catch one exception type.
- Presets are code: a dict of name -> keyword arguments. A preset's `vocab_size` is
  only a default; the trainer overrides it with the tokenizer's vocabulary size.
- The embedding and output matrices are padded to `padded_vocab_size` (a multiple
  of `vocab_multiple`) for matmul efficiency; the model slices logits back to
  `vocab_size`, so users never see the padding.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

# fmt: off
# Presets reproduce the published architectures (and parameter counts) of the
# models they are named after; `debug` and `quickstart` are ours.
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny, for tests: builds and runs in milliseconds.
    "debug": dict(
        vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192,
        max_seq_len=256,
    ),
    # Small Llama-style model that trains on a 2-core CPU in minutes (~4.0M params).
    "quickstart": dict(
        vocab_size=4096, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, d_ff=688,
        max_seq_len=512, tie_embeddings=True,
    ),
    # HuggingFaceTB/SmolLM-135M: 134,515,008 parameters.
    "smollm-135m": dict(
        vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
        max_seq_len=2048, tie_embeddings=True,
    ),
    # TinyLlama/TinyLlama-1.1B: 1,100,048,384 parameters.
    "tinyllama-1.1b": dict(
        vocab_size=32000, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, d_ff=5632,
        max_seq_len=2048,
    ),
    # meta-llama/Llama-2-7b: 6,738,415,616 parameters.
    "llama2-7b": dict(
        vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008,
        max_seq_len=4096,
    ),
    # meta-llama/Meta-Llama-3-8B: 8,030,261,248 parameters.
    "llama3-8b": dict(
        vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
        max_seq_len=8192, rope_theta=500000.0,
    ),
}
# fmt: on


@dataclass
class ModelConfig:
    """Architecture of a Llama-style decoder-only transformer."""

    vocab_size: int
    """Number of real tokens (the tokenizer's vocabulary size)."""
    d_model: int
    """Width of the residual stream."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Number of query heads; must divide d_model."""
    n_kv_heads: int
    """Number of key/value heads (grouped-query attention); must divide n_heads."""
    d_ff: int
    """Hidden size of the SwiGLU MLP."""
    max_seq_len: int
    """Longest sequence the model accepts; rotary tables are precomputed to this length."""
    rope_theta: float = 10000.0
    """Base of the rotary frequencies."""
    norm_eps: float = 1e-5
    """Epsilon of every RMSNorm."""
    tie_embeddings: bool = False
    """Share the token embedding matrix with the output projection (lm_head)."""
    init_std: float = 0.02
    """Standard deviation of the normal init of embeddings and linear layers."""
    vocab_multiple: int = 64
    """Embedding/output rows are padded to a multiple of this (1 disables padding)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        # Accept ints for float fields (TOML writes `rope_theta = 10000`).
        self.rope_theta = float(self.rope_theta)
        self.norm_eps = float(self.norm_eps)
        self.init_std = float(self.init_std)
        for f in dataclasses.fields(self):
            if f.type != "bool" and getattr(self, f.name) <= 0:
                raise ValueError(f"ModelConfig.{f.name}={getattr(self, f.name)} must be > 0")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} must divide d_model={self.d_model}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} gives odd head_dim={self.head_dim}; "
                "rotary embeddings need an even head_dim"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head (d_model // n_heads)."""
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """vocab_size rounded up to a multiple of vocab_multiple."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by `from_preset`."""
        return list(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Build the named preset, replacing any fields given as keyword arguments."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; valid presets: {cls.presets()}")
        _check_keys(overrides, "override")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values (JSON/TOML serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown or missing keys raise ValueError."""
        _check_keys(d, "key")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in d]
        if missing:
            raise ValueError(f"ModelConfig is missing required field(s) {missing}")
        return cls(**d)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_keys(d: dict[str, Any], what: str) -> None:
    """Reject keys that are not ModelConfig fields, suggesting the closest valid one."""
    valid = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown ModelConfig {what} {key!r}; {hint}valid fields: {valid}")


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Check a field against its (string) annotation: int, float or bool."""
    expected = _TYPES[str(annotation)]
    # bool is a subclass of int: `n_layers=True` is a mistake, not a 1.
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)):
        raise ValueError(
            f"ModelConfig.{name}={value!r} must be of type {annotation}, got {type(value).__name__}"
        )
