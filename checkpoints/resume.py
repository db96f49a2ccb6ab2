"""Resume checkpoints: sharded `torch.distributed.checkpoint` folders for exact restarts.

Layout: `resume/step-XXXXXXXX/` holds the DCP shards (model, optimizer, RNG states) and
`trainer.json` (step, tokens and other plain values, kept out of DCP so that nothing is
ever unpickled). A checkpoint is written to `step-XXXXXXXX.tmp/`, renamed into place,
and only then is `resume/latest` (a one-line text file naming the folder) replaced
atomically; a crash at any point leaves the previous checkpoint as `latest`. Old
checkpoints beyond `keep` are pruned after the new one is in place, except the pinned
steps (`publish.training_state`: the state of every published revision).

Loading goes through `checkpoints/safe_dcp.py`: DCP's own reader unpickles the
`.metadata` file and loads non-tensor values with `weights_only=False`, so a planted
file could run code; the safe reader allows only DCP's metadata classes, reads values
with `weights_only=True`, and refuses a checkpoint of another model config first.

DCP works in one process as well as under torchrun, and `get_state_dict` /
`set_state_dict` understand FSDP-sharded modules, so the same code serves both. DCP
stores global tensors (and `get_state_dict` names parameters without wrapper prefixes
such as activation checkpointing's), so a checkpoint written by N processes resumes on
M processes, with or without sharding, HSDP or activation checkpointing: every process
writes its shards and reads the slices it needs. Saving and loading are collectives.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from strata.checkpoints import safe_dcp
from strata.checkpoints.files import write_json_atomic
from strata.run.jsonfile import read_object
from strata.run.layout import LATEST, TRAINER_STATE, latest_resume, resume_name
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

__all__ = ["ResumeWriter", "latest_resume", "load_resume", "prune", "save_resume"]


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rng_state() -> dict[str, torch.Tensor]:
    # Only the CPU generator: the model has no dropout and the data order is seeded, so
    # this is for user code that draws random numbers; CUDA state is device-specific.
    return {"cpu": torch.get_rng_state()}


# DCP warns on every save/load without a process group (also from async_save's writer
# thread, where a `catch_warnings` block cannot reach); one process is intended here.
_NO_PG = ".*torch.distributed is disabled, unavailable.*"
warnings.filterwarnings("ignore", message=_NO_PG)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_PG)
        return fn(*args, **kwargs)


def _single() -> bool:
    """True without a process group: DCP then reads and writes as one process."""
    return not dist.is_initialized()


class ResumeWriter:
    """Writes resume checkpoints, synchronously or in the background.

    With `background=True`, `dcp.async_save` stages the state (a copy in CPU memory) and
    writes it from a thread while training continues. Never two in flight: a new save,
    `wait()` or the end of training first completes the previous one. Only a complete
    checkpoint is renamed into place and named by `latest`. Under torchrun the
    background writes use their own gloo process group, so they never interleave with
    the training collectives.
    """

    def __init__(self, resume_dir: str | Path, keep: int = 2, background: bool = False) -> None:
        self.resume_dir, self.keep, self.background = Path(resume_dir), keep, background
        self.pinned: set[int] = set()  # steps never pruned (publish.training_state)
        self.pending: tuple[Any, Path, Path, dict[str, Any]] | None = None
        self.group = (
            dist.new_group(backend="gloo") if background and dist.is_initialized() else None
        )

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
    ) -> Path:
        """Start (or, when not in the background, complete) the checkpoint of `step`."""
        self.wait()
        final = self.resume_dir / resume_name(step)
        tmp = self.resume_dir / f"{resume_name(step)}.tmp"
        if _rank0():
            self.resume_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        _barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd, "rng": _rng_state()}
        trainer_state = {"step": step, **trainer_state}
        if self.background:
            future = dcp.async_save(
                state, checkpoint_id=str(tmp), process_group=self.group, no_dist=_single()
            )
            self.pending = (future, tmp, final, trainer_state)
        else:
            with _cleanup_on_error(tmp):
                _quiet(dcp.save, state, checkpoint_id=str(tmp), no_dist=_single())
            self._finish(tmp, final, trainer_state)
        return final

    def wait(self) -> None:
        """Complete the checkpoint in flight, if any, and make it `latest`."""
        if self.pending is None:
            return
        future, tmp, final, trainer_state = self.pending
        self.pending = None
        with _cleanup_on_error(tmp):
            future.result()
        self._finish(tmp, final, trainer_state)

    def _finish(self, tmp: Path, final: Path, trainer_state: dict[str, Any]) -> None:
        _barrier()  # every rank's shards are on disk
        if _rank0():
            write_json_atomic(tmp / TRAINER_STATE, trainer_state)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            (self.resume_dir / f".{LATEST}.tmp").write_text(final.name + "\n")
            (self.resume_dir / f".{LATEST}.tmp").replace(self.resume_dir / LATEST)
            prune(self.resume_dir, self.keep, self.pinned)
        _barrier()


@contextlib.contextmanager
def _cleanup_on_error(tmp: Path):
    """Remove a half-written checkpoint folder when writing it fails (disk full, say);
    `latest` still names the previous, complete one."""
    try:
        yield
    except BaseException:
        if _rank0():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_resume(
    resume_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the resume checkpoint for `step` synchronously; returns its folder."""
    return ResumeWriter(resume_dir, keep).save(step, model, optimizer, trainer_state)


def prune(resume_dir: Path, keep: int, pinned: set[int] | frozenset = frozenset()) -> None:
    """Delete all but the newest `keep` complete checkpoints (and stale temp folders);
    the checkpoints of `pinned` steps are kept and not counted."""
    latest, names = latest_resume(resume_dir), {resume_name(s) for s in pinned}
    done = sorted(p for p in resume_dir.glob("step-*") if not p.name.endswith(".tmp"))
    done = [p for p in done if p.name not in names]
    for old in done[:-keep]:
        if old != latest:
            shutil.rmtree(old, ignore_errors=True)
    for stale in resume_dir.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def load_resume(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and RNG state in place; returns the trainer state."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, "rng": _rng_state()}
    config = getattr(model, "config", None)  # GPT (FSDP-wrapped too) carries its ModelConfig
    # torch's own reader unpickles `.metadata`: read through the allow-listed one instead
    _quiet(safe_dcp.load, state, path, _single(), config.to_dict() if config else None)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    torch.set_rng_state(state["rng"]["cpu"])
    return read_trainer_state(path)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """`path`/trainer.json, checked: `step` a non-negative integer equal to the one in the
    folder's name (`step-XXXXXXXX`), `tokens` a non-negative integer, the last batch's
    loss a number or null, `model_config` an object, `unlogged_records` (metrics records
    a full disk kept out of metrics.jsonl) a list of records, `unpublished` (revisions
    whose publication failed) a list of steps. ValueError naming file and
    key."""
    file = path / TRAINER_STATE
    try:
        state = read_object(file)
    except (OSError, ValueError) as err:
        raise ValueError(f"{file}: not a readable trainer state ({err})") from None
    step = state.get("step")
    if not _count(step):
        raise ValueError(f"{file}: key 'step': expected a non-negative integer, got {step!r}")
    if path.name.startswith("step-") and path.name != resume_name(step):
        raise ValueError(f"{file}: step {step} disagrees with its folder's name {path.name}")
    if "tokens" in state and state["tokens"] is not None and not _count(state["tokens"]):
        raise ValueError(f"{file}: key 'tokens': expected a non-negative integer")
    for key in ("last_batch_loss", "train_loss"):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{file}: key {key!r}: expected a number or null, got {value!r}")
    if not isinstance(state.get("model_config", {}), dict):
        raise ValueError(f"{file}: key 'model_config': expected an object")
    records = state.get("unlogged_records", [])
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and _count(r.get("step")) for r in records
    ):
        raise ValueError(f"{file}: key 'unlogged_records': expected a list of metrics records")
    unpublished = state.get("unpublished", [])
    if not isinstance(unpublished, list) or not all(_count(s) for s in unpublished):
        raise ValueError(f"{file}: key 'unpublished': expected a list of steps")
    return state


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
