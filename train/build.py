"""What a `Trainer` is built from, out of the config: the model config, the sharded and
initialised model, and the data.

- `resolve_model_config`: the preset's config with the dataset's vocabulary size, unless
  `model.vocab_size` is set (then it must hold the dataset's).
- `build_model`: on the meta device, parallelized (sharded, `train/parallelize.py`), then
  allocated and initialised on the device (`train/materialize.py`): no process ever holds
  the whole model, and the initial weights are the same whatever the number of processes.
- `load_data`: this process's training batches (`train/data.py`), the fixed validation
  batches (none without a validation split longer than one sequence) and the dataset's
  fingerprint (the sha256 of its index.json, which lists every shard's sha256).
- `resume`: the latest resume checkpoint of the run, loaded into model and optimizer.
- `install_tokenizer`, `write_config`: the run folder's `tokenizer/` (the dataset's,
  copied once, then checked) and `config.toml` (every default written out), each
  written by rank 0 through a temporary name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from strata.checkpoints.resume import latest_resume, load_resume, read_trainer_state
from strata.model import GPT, ModelConfig
from strata.run import RunPaths
from strata.run.config import Config, ConfigError, TrainConfig, dump_toml
from strata.run.layout import TRAINER_STATE, is_revision
from strata.tokenizer import Tokenizer, TokenShards
from strata.train import dist
from strata.train.data import TrainBatches, validation_batches
from strata.train.eval_tasks import check_tasks
from strata.train.materialize import materialize
from strata.train.parallelize import parallelize
from strata.train.sources import open_sources, validation_splits


def resolve_model_config(cfg: Config, vocab_size: int) -> ModelConfig:
    """The preset's config with the data's vocabulary size unless set explicitly."""
    if "vocab_size" not in cfg.model_keys:
        return ModelConfig.from_dict({**cfg.model.to_dict(), "vocab_size": vocab_size})
    if cfg.model.vocab_size < vocab_size:
        raise ConfigError(
            f"model.vocab_size = {cfg.model.vocab_size}: expected at least the dataset's "
            f"vocabulary size ({vocab_size})"
        )
    return cfg.model


def preflight(cfg: Config) -> None:
    """The checks of the settings against the dataset, made before the run folder is
    created or locked (`strata train`): every source opens, they share a tokenizer and
    none would pass its `max_repetition`, and an explicit `model.vocab_size` holds the
    vocabulary. Reads the datasets' indexes only."""
    sources = open_sources(cfg, verify=False)  # every source, one tokenizer, repetition
    resolve_model_config(cfg, sources.train[0].vocab_size)
    check_tasks(cfg)  # train.eval_tasks: the extra is installed, the tasks exist


def build_model(config: ModelConfig, train: TrainConfig, device: torch.device) -> GPT:
    """Build on the meta device, parallelize (shard), then allocate and initialise on
    `device`: no process ever holds the whole model, and the initial weights are the same
    whatever the number of processes (`train/materialize.py`)."""
    with torch.device("meta"):
        model = GPT(config)
    dp_replicate, dp_shard = train.dp_sizes(dist.world_size())
    mesh = dist.device_mesh(dp_replicate, dp_shard, device)
    model = parallelize(model, train, device, mesh)
    materialize(model, device, train.seed)
    return model


@dataclass
class RunData:
    """The data of a run, as this process sees it."""

    dataset: Path
    """The prepared dataset folder (`run.resolve_dataset` of `data.dataset`); for a
    mixture, the first source's."""
    train_shards: TokenShards
    fingerprint: str
    """sha256 of the dataset's index.json, or of a mixture's sources
    (`strata.json` `data.dataset_fingerprint`; train/sources.py)."""
    batches: TrainBatches
    """This process's rows of every global batch."""
    val_batches: list[torch.Tensor]
    """Fixed validation micro-batches (rows, seq_len + 1); [] without a validation split."""
    val_sources: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    """A mixture's validation micro-batches per source name ({} for one dataset)."""
    source_records: list[dict] = field(default_factory=list)
    """A mixture's sources as every revision records them (`train/sources.py`)."""


def _validation(split: TokenShards, t: TrainConfig) -> list[torch.Tensor]:
    if split.n_tokens <= t.seq_len:
        return []
    return validation_batches(split, t.seq_len, t.micro_batch_size, t.eval_windows)


def load_data(cfg: Config) -> RunData:
    """Open `data.dataset`, or the sources of a mixture, for training and validation
    (`data.verify` checks the shards)."""
    sources, t = open_sources(cfg), cfg.train
    batches = TrainBatches(
        sources.train if sources.weights else sources.train[0], t.seq_len,
        t.global_batch_size, t.micro_batch_size, t.seed, dist.rank(), dist.world_size(),
        weights=sources.weights,
    )  # fmt: skip
    val_sources = {n: _validation(v, t) for n, v in validation_splits(cfg, sources).items()}
    val = next(iter(val_sources.values()), None)
    if val is None:
        val = _validation(TokenShards(sources.datasets[0], "val", verify=cfg.data.verify), t)
    first, shards = sources.datasets[0], sources.train[0]
    fingerprint, records = sources.fingerprint, sources.records
    return RunData(first, shards, fingerprint, batches, val, val_sources, records)


def install_tokenizer(run: RunPaths, data: RunData) -> Tokenizer:
    """Copy the dataset's tokenizer into the run, or check the run's one matches; a
    collective (rank 0 copies, every process then loads it)."""
    expected = data.train_shards.index["tokenizer_sha256"]
    tokenizer_dir, dataset = run.tokenizer, data.dataset
    if tokenizer_dir.exists():
        found = Tokenizer.load(tokenizer_dir).sha256()
        if found != expected:
            raise ValueError(
                f"{tokenizer_dir}: the run's tokenizer (sha256 {found[:12]}) is not the "
                f"one {dataset} was prepared with ({expected[:12]})"
            )
    elif dist.is_rank0():
        run.root.mkdir(parents=True, exist_ok=True)
        tmp = run.root / ".tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(dataset / "tokenizer", tmp)
            tmp.rename(tokenizer_dir)
        except OSError:  # disk full: nothing half-copied is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    dist.barrier()
    return Tokenizer.load(tokenizer_dir)


def note_weights_format(publisher, config) -> None:
    """Say once, at start-up, when revisions cannot be Hugging Face models, and why."""
    reason = publisher.weights_format(config).reason
    if reason is not None:
        dist.print0(
            f"note: revisions will be published with Strata's own parameter names, not "
            f"as a Hugging Face model: {reason}"
        )


def write_config(run: RunPaths, cfg: Config) -> None:
    """RUN/config.toml: the fully resolved config (rank 0)."""
    if dist.is_rank0():
        run.root.mkdir(parents=True, exist_ok=True)
        tmp = run.root / ".config.toml.tmp"
        tmp.write_text(dump_toml(cfg))
        tmp.replace(run.config)


def resume(
    run: RunPaths,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    max_steps: int,
) -> tuple[int, tuple[int, float | None], list[dict]]:
    """(step, (step, its train loss), the metrics records it holds that metrics.jsonl
    missed) of the checkpoint to resume from, loaded into `model` and `optimizer`;
    (0, (-1, None), []) when there is none (a fresh run). It is `resume/latest`, unless
    that one stopped without publishing a revision (`_before_missing`). A checkpoint
    past `max_steps` is refused: the run would end at once, as if done."""
    path = latest_resume(run.resume)
    if path is None:
        return 0, (-1, None), []
    state = read_trainer_state(path)  # checked before anything is loaded
    step = state["step"]
    if step > max_steps:
        raise ValueError(
            f"{path / TRAINER_STATE}: step {step} is past train.max_steps = {max_steps}; "
            "raise train.max_steps to continue this run"
        )
    path = _before_missing(run, path, state.get("unpublished", []))
    step = read_trainer_state(path)["step"]
    state = load_resume(path, model, optimizer)
    dist.print0(f"resumed from {path} at step {step}")
    loss = state.get("last_batch_loss", state.get("train_loss"))  # the older name
    return step, (step, loss), state.get("unlogged_records", [])


def _before_missing(run: RunPaths, latest: Path, unpublished: list[int]) -> Path:
    """`latest`, or, when it records revisions it stopped without publishing (a
    publication that failed: train/stops.py) and one is still missing, the newest
    complete checkpoint at or before that revision, so that retraining from it (the same
    steps, the same weights) publishes it. `latest` when none is left."""
    missing = sorted(s for s in unpublished if not is_revision(run.revision(s)))
    if not missing:
        return latest
    older = []
    for path in sorted(run.resume.glob("step-*")):
        if path.is_dir() and (path / TRAINER_STATE).is_file() and path != latest:
            if read_trainer_state(path)["step"] <= missing[0]:
                older.append(path)
    if not older:
        dist.print0(
            f"note: revision step{missing[0]} was never published and no resume checkpoint "
            f"before it is left; resuming from {latest}, without it"
        )
        return latest
    dist.print0(
        f"note: revision step{missing[0]} was never published: resuming from {older[-1]}, "
        "the newest checkpoint before it, to publish it"
    )
    return older[-1]
