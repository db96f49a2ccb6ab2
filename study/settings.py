"""What a study measures: one frozen, validated settings dataclass.

Design choices:
- Everything that changes a revision's numbers is a field here (plus the dataset's
  identity and the weights), so `key()` can hash it into the cache key: change a
  setting and every revision is evaluated again; change nothing and nothing is.
- Where and how loudly to run (`out`, `force`, `quiet`) are not settings: they never
  change a number. The device is, because bf16 on CUDA and fp32 on CPU differ in the
  last digits.
- `STUDY_VERSION` is bumped whenever a definition changes, which invalidates caches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch

STUDY_VERSION = 1


@dataclass(frozen=True)
class StudySettings:
    """The knobs of `strata study` (see docs/study.md for each one)."""

    eval_windows: int = 64
    """Validation windows evaluated per revision (evenly spaced over the val split)."""
    seq_len: int | None = None
    """Validation window length; None: the run's training seq_len."""
    mem_samples: int = 64
    """Training sequences tested for memorisation."""
    mem_prefix: int = 32
    """Prompt tokens of each memorisation sequence."""
    mem_length: int = 32
    """Greedy continuation tokens that must match the corpus exactly."""
    mem_seed: int = 0
    """Seed of the memorisation sample."""
    batch_size: int = 16
    """Sequences per forward pass (evaluation and generation)."""
    source_depth: int = 1
    """Path components of a document's source that name its group in sources.csv."""
    device: str = "auto"
    """auto, cpu or cuda."""

    def __post_init__(self) -> None:
        for name in ("eval_windows", "mem_prefix", "mem_length", "batch_size", "source_depth"):
            _check_int(name, getattr(self, name), 1)
        _check_int("mem_samples", self.mem_samples, 0)
        _check_int("mem_seed", self.mem_seed, 0)
        if self.seq_len is not None:
            _check_int("seq_len", self.seq_len, 1)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available here")
        return device

    def key(self, **extra: object) -> str:
        """sha256 of these settings, the study version and `extra` (dataset, weights...)."""
        values = dataclasses.asdict(self) | {"device": self.torch_device().type}
        blob = json.dumps({"v": STUDY_VERSION, **values, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
