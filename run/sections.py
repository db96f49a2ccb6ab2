"""The config sections as typed dataclasses, one per concern, validated on creation.

Each field carries its default and a docstring (docs/CONFIG.md documents every key);
`__post_init__` checks values and raises `ConfigError`, one line naming the key and what
was expected. Loading TOML and overrides into these is `run/config.py`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the offending key."""


def _check(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key} = {value!r}: expected {expected}")


@dataclass
class RunConfig:
    name: str = "quickstart"
    """Run name; outputs go to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Parent folder of run directories."""

    def __post_init__(self) -> None:
        ok = bool(self.name) and self.name not in (".", "..") and not set("/\\\0") & set(self.name)
        _check(ok, "run.name", "a folder name (not '.' or '..', no '/' or '\\')", self.name)


@dataclass
class DataConfig:
    dataset: str = "runs/_data/stdlib/shards"
    """Folder written by `strata prepare` (shards + index.json + tokenizer/)."""
    verify: bool = False
    """Check every shard's sha256 against the index before training."""


@dataclass
class TrainConfig:
    seed: int = 1337
    """Seeds weight init and the data order (a seeded permutation per epoch)."""
    seq_len: int = 256
    """Tokens per training sequence (must not exceed model.max_seq_len)."""
    global_batch_size: int = 16
    """Sequences per optimizer step, summed over all processes and micro-batches."""
    micro_batch_size: int = 16
    """Sequences per forward/backward; global / (micro * world) micro-batches accumulate."""
    max_steps: int = 300
    """Number of optimizer steps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    eval_every: int = 100
    """Compute validation loss every this many steps (0 disables; publications always do)."""
    eval_batches: int = 4
    """Validation micro-batches per evaluation (fixed windows, the same every time)."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda`, or `cuda:N`."""
    dtype: str = "auto"
    """Autocast dtype: `auto` (bf16 on cuda, fp32 on cpu), `bf16`, `fp32` (no fp16: it would
    need loss scaling)."""
    threads: int = 0
    """CPU threads for torch (0 keeps torch's default)."""
    dp_replicate: int = 1
    """HSDP replica groups: processes are a dp_replicate x dp_shard mesh (1 = plain FSDP)."""
    dp_shard: int = -1
    """Processes each parameter is sharded over; -1 = world size / dp_replicate."""
    param_dtype: str = "auto"
    """FSDP (2+ processes) compute dtype: `auto` (= resolved `dtype`), `bf16`, `fp32`."""
    reduce_dtype: str = "fp32"
    """FSDP gradient reduce-scatter dtype: `fp32` or `bf16`."""
    reshard_after_forward: bool = True
    """Free each block's gathered parameters after forward (ZeRO-3; false = ZeRO-2-like)."""
    activation_checkpointing: str = "none"
    """Recompute activations in backward: `none`, `full` (all blocks), `selective` (every other)."""
    compile: bool = False
    """`torch.compile` each transformer block."""
    deterministic: bool = False
    """Deterministic algorithms (`torch.use_deterministic_algorithms`): CPU runs are bitwise
    reproducible; on GPU see docs/reliability.md for what stays nondeterministic."""
    comm_timeout_s: float = 1800.0
    """Under torchrun: a collective (or barrier, e.g. while rank 0 writes a revision) that
    waits longer than this fails the run (NCCL's own default is 10 minutes)."""
    max_bad_steps: int = 5
    """A step whose loss or gradient norm is NaN/Inf is skipped on the device (the fused
    AdamW kernel leaves the state as it was) and counted; after this many in a row the run
    stops at the next log step with a resume checkpoint. 0 turns skipping off (a non-finite
    logged loss then stops the run)."""
    spike_factor: float = 0.0
    """Record a loss spike (batch indices and per-sequence losses in RUN/spikes/) when a
    step's loss exceeds this multiple of the mean of the last `spike_window` losses; 0 = off.
    On, it reads the loss back from the device every step (a host sync)."""
    spike_window: int = 50
    """Steps in the running mean that `spike_factor` compares against."""

    def __post_init__(self) -> None:
        for key in ("seq_len", "global_batch_size", "micro_batch_size", "max_steps"):
            value = getattr(self, key)
            _check(value > 0, f"train.{key}", "a positive integer", value)
        _check(self.grad_clip >= 0, "train.grad_clip", "a value >= 0", self.grad_clip)
        _check(self.eval_every >= 0, "train.eval_every", "an integer >= 0", self.eval_every)
        _check(self.eval_batches > 0, "train.eval_batches", "a positive integer", self.eval_batches)
        _check(self.threads >= 0, "train.threads", "an integer >= 0", self.threads)
        _check(
            self.max_bad_steps >= 0, "train.max_bad_steps", "an integer >= 0", self.max_bad_steps
        )
        _check(self.spike_factor >= 0, "train.spike_factor", "a value >= 0", self.spike_factor)
        _check(self.spike_window > 0, "train.spike_window", "a positive integer", self.spike_window)
        dtypes = ("auto", "bf16", "fp32")  # fp16 would need loss scaling, which we do not do
        _check(self.dtype in dtypes, "train.dtype", f"one of {dtypes}", self.dtype)
        _check(self.comm_timeout_s > 0, "train.comm_timeout_s", "seconds > 0", self.comm_timeout_s)
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        _check(ok, "train.device", "auto, cpu, cuda or cuda:N", dev)
        _check(
            self.global_batch_size % self.micro_batch_size == 0,
            "train.global_batch_size",
            f"a multiple of train.micro_batch_size ({self.micro_batch_size})",
            self.global_batch_size,
        )
        self._check_parallel()

    def _check_parallel(self) -> None:
        _check(self.dp_replicate > 0, "train.dp_replicate", "a positive integer", self.dp_replicate)
        ok = self.dp_shard == -1 or self.dp_shard > 0
        _check(ok, "train.dp_shard", "a positive integer or -1", self.dp_shard)
        dtypes = ("auto", "bf16", "fp32")
        _check(
            self.param_dtype in dtypes, "train.param_dtype", f"one of {dtypes}", self.param_dtype
        )
        reduce = ("fp32", "bf16")
        _check(
            self.reduce_dtype in reduce, "train.reduce_dtype", f"one of {reduce}", self.reduce_dtype
        )
        modes = ("none", "full", "selective")
        ac = self.activation_checkpointing
        _check(ac in modes, "train.activation_checkpointing", f"one of {modes}", ac)

    def dp_sizes(self, world_size: int) -> tuple[int, int]:
        """(dp_replicate, dp_shard) for `world_size` processes; their product must equal it."""
        rep, shard = self.dp_replicate, self.dp_shard
        if shard == -1:
            if world_size % rep:
                raise ConfigError(
                    f"train.dp_replicate = {rep}: expected a divisor of the world size "
                    f"({world_size}) when train.dp_shard = -1"
                )
            shard = world_size // rep
        if rep * shard != world_size:
            raise ConfigError(
                f"train.dp_replicate x train.dp_shard = {rep} x {shard} = {rep * shard}: "
                f"expected the world size ({world_size})"
            )
        return rep, shard


@dataclass
class OptimConfig:
    lr: float = 3e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of `lr`."""
    schedule: str = "cosine"
    """Decay after warmup: `cosine`, `linear`, `wsd` (warmup-stable-decay) or `constant`."""
    warmup_steps: int = 20
    """Linear warmup from 0 to `lr` over this many steps."""
    decay_fraction: float = 0.2
    """For `wsd`: the final fraction of steps over which the rate decays linearly."""
    weight_decay: float = 0.1
    """Decoupled weight decay; never applied to norms, biases or embeddings."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "a positive float", self.lr)
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)
        names = ("cosine", "linear", "wsd", "constant")
        _check(self.schedule in names, "optim.schedule", f"one of {names}", self.schedule)
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "an integer >= 0", self.warmup_steps)
        ok = 0 < self.decay_fraction <= 1
        _check(ok, "optim.decay_fraction", "in (0, 1]", self.decay_fraction)
        _check(self.weight_decay >= 0, "optim.weight_decay", "a value >= 0", self.weight_decay)
        _check(0 <= self.beta1 < 1, "optim.beta1", "in [0, 1)", self.beta1)
        _check(0 <= self.beta2 < 1, "optim.beta2", "in [0, 1)", self.beta2)


@dataclass
class CheckpointConfig:
    every: int = 100
    """Write a resume checkpoint every this many steps (and at the last step)."""
    keep: int = 2
    """Resume checkpoints to keep (older ones are pruned; published revisions never are)."""
    async_save: bool = False
    """Write resume checkpoints in the background while training goes on (one in flight)."""

    def __post_init__(self) -> None:
        _check(self.every > 0, "checkpoint.every", "a positive integer", self.every)
        _check(self.keep > 0, "checkpoint.keep", "a positive integer", self.keep)


@dataclass
class PublishConfig:
    every: int = 1000
    """Pythia schedule: step 0, powers of two below `every`, multiples of `every`, last."""
    extra_steps: list[int] = field(default_factory=list)
    """Additional steps to publish."""
    log_spaced: bool = True
    """Publish the powers of two below `every` (Pythia's early log-spaced revisions)."""
    async_write: bool = True
    """(Also spelled `async`.) Training waits only while the weights are gathered into CPU
    memory; rank 0 writes, hashes and renames the revision from a thread. Never two in
    flight; a resume checkpoint of a later step waits for it. Sharded models above
    `async_max_gb` are streamed synchronously instead."""
    async_max_gb: float = 8.0
    """A sharded model (2+ processes) whose fp32 weights pass this many GB is not copied
    whole into rank 0's memory for a background write: it is streamed into the file one
    tensor at a time, and training waits for the write."""

    def __post_init__(self) -> None:
        _check(self.every > 0, "publish.every", "a positive integer", self.every)
        _check(self.async_max_gb >= 0, "publish.async_max_gb", "GB >= 0", self.async_max_gb)
        bad = [s for s in self.extra_steps if s < 0]
        _check(not bad, "publish.extra_steps", "non-negative steps", self.extra_steps)


@dataclass
class LogConfig:
    every: int = 10
    """Write a metrics.jsonl record (and a progress line) every this many steps."""
    wandb_project: str = ""
    """Weights & Biases project; empty disables wandb."""
    wandb_mode: str = "offline"
    """`online`, `offline` (no login needed) or `disabled`."""
    wandb_entity: str = ""
    """Weights & Biases entity (team); empty uses the default."""
    peak_tflops: float = 0.0
    """Peak device TFLOP/s for MFU; 0 looks the device up (A100, H100, H200), CPU has none."""
    progress: bool = True
    """Show a progress bar when stderr is a terminal."""

    def __post_init__(self) -> None:
        _check(self.every > 0, "log.every", "a positive integer", self.every)
        modes = ("online", "offline", "disabled")
        _check(self.wandb_mode in modes, "log.wandb_mode", f"one of {modes}", self.wandb_mode)
        _check(self.peak_tflops >= 0, "log.peak_tflops", "a value >= 0", self.peak_tflops)
