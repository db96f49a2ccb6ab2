"""What a study measures: one frozen, validated settings dataclass.

Design choices:
- Everything that changes a revision's numbers is a field here (plus the dataset's
  identity and the weights), so `key()` can hash it into the cache key: change a
  setting and every revision is evaluated again; change nothing and nothing is.
- Where and how loudly to run (`out`, `force`, `quiet`) are not settings: they never
  change a number. The device is, because bf16 on CUDA and fp32 on CPU differ in the
  last digits.
- The fields are typed settings (`model/typed.py`): bounds on the fields, errors named
  after the command-line option (`--eval-windows = 0: expected a positive integer`).
- `STUDY_VERSION` is bumped whenever a definition changes, which invalidates caches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch
from strata.model.typed import Typed, device_name, setting

TASK_FIELDS = ("tasks", "num_fewshot", "fewshot_seed", "task_limit")
DEFAULT_EVAL_WINDOWS = 64  # a run that records no train.eval_windows
STUDY_VERSION = 3  # 2: every revision scored over the dataset's vocabulary; 3: sample_loss


@dataclass(frozen=True)
class StudySettings(Typed):
    """The knobs of `strata study` (see docs/study.md for each one); each field is also
    a command-line option (`eval_windows` -> `--eval-windows`, strata/cli/study.py)."""

    eval_windows: int | None = setting(None, gt=0)
    """Validation windows evaluated per revision (evenly spaced over the val split); None:
    the run's train.eval_windows, so val_loss matches strata.json (64 when none is recorded)."""
    seq_len: int | None = setting(None, gt=0)
    """Validation window length; None: the run's training seq_len."""
    mem_samples: int = setting(64, ge=0)
    """Training sequences tested for memorisation."""
    mem_prefix: int = setting(32, gt=0)
    """Prompt tokens of each memorisation sequence."""
    mem_length: int = setting(32, gt=0)
    """Greedy continuation tokens that must match the corpus exactly."""
    mem_seed: int = setting(0, ge=0)
    """Seed of the memorisation sample."""
    batch_size: int = setting(16, gt=0)
    """Sequences per forward pass (evaluation and generation)."""
    source_depth: int = setting(1, gt=0)
    """Path components of a document's source that name its group in sources.csv."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    tasks: str | None = None
    """lm-evaluation-harness tasks, comma-separated: the harness's names, or a YAML file or
    folder of task YAMLs (local data runs offline); None: no tasks. Needs '.[eval]'."""
    num_fewshot: int = setting(0, ge=0)
    """For the tasks: few-shot examples per prompt."""
    fewshot_seed: int = setting(1234, ge=0)
    """For the tasks: the seed of the harness's few-shot sampling (and its other seeds)."""
    task_limit: int | None = setting(None, gt=0)
    """For the tasks: evaluate at most this many examples of each task; None: all."""

    @classmethod
    def spell(cls, name: str) -> str:
        return "--" + name.replace("_", "-")

    def check(self) -> None:
        if not device_name(self.device):
            self.fail("device", "auto, cpu, cuda or cuda:N")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available here")
        return device

    def key(self, **extra: object) -> str:
        """sha256 of these settings but the task ones (cached on their own: adding a
        task re-evaluates nothing else), the study version and `extra` (dataset,
        weights...)."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in TASK_FIELDS}
        values |= {"device": self.torch_device().type}
        blob = json.dumps({"v": STUDY_VERSION, **values, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
