"""The config sections as typed dataclasses, one per concern, validated on creation.

Each section derives from the typed-config base (`model/typed.py`): a field's type is
its annotation, its choices and bounds are declared with `setting(...)`, its
documentation is the string after it (docs/CONFIG.md documents every key), and the
rules between fields live in `check()`. Every error is a `ConfigError`, one line naming
the key and what was expected. Loading TOML and overrides into these is
`run/config.py`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from strata.model.typed import ConfigError, Typed, device_name, setting

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "OptimConfig",
    "PublishConfig",
    "RunConfig",
    "InjectConfig",
    "SourceConfig",
    "TrainConfig",
]

DTYPES = ("auto", "bf16", "fp32")  # fp16 would need loss scaling, which we do not do


@dataclass
class RunConfig(Typed):
    PREFIX: ClassVar[str] = "run."

    name: str = "quickstart"
    """Run name; outputs go to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Parent folder of run directories."""

    def check(self) -> None:
        name = self.name
        if not name or name in (".", "..") or set("/\\\0") & set(name):
            self.fail("name", "a folder name (not '.' or '..', no '/' or '\\')")


@dataclass
class SourceConfig(Typed):
    """One prepared dataset of a mixture (`[[data.sources]]`)."""

    PREFIX: ClassVar[str] = "data.sources."

    dataset: str
    """Folder written by `strata prepare`; every source shares one tokenizer."""
    weight: float = setting(1.0, gt=0)
    """Its share of the sequences, relative to the other weights (read as the exact
    decimal written: 0.7 is 7/10)."""
    max_repetition: float | None = setting(None, gt=0)
    """At most this many epochs of the source over the run (the run refuses to start
    otherwise, naming the steps the mixture supports); unset: no limit."""
    name: str | None = None
    """The source's name in metrics (`val_loss/<name>`), the ledger and the study;
    default: the dataset folder's name."""

    @property
    def label(self) -> str:
        return self.name or Path(self.dataset).name

    def check(self) -> None:
        if self.name is not None and (not self.name or set("/\\ \0") & set(self.name)):
            self.fail("name", "a name without '/', '\\' or spaces")


@dataclass
class InjectConfig(Typed):
    """A text shown at given steps (`[[data.inject]]`)."""

    PREFIX: ClassVar[str] = "data.inject."

    steps: list[int] = setting(default_factory=list, ge=0, expected="non-negative steps")
    """The global batches (batch N trains the update N -> N+1) that show it."""
    text: str = ""
    """The text (encoded with the run's tokenizer, EOS after it, repeated to fill the
    row of seq_len + 1 tokens; at most seq_len tokens)."""
    file: str = ""
    """Or a UTF-8 file holding it."""

    def check(self) -> None:
        if bool(self.text) == bool(self.file):
            self.fail("text", "either `text` or `file`, not both")
        if not self.steps:
            self.fail("steps", "at least one step")


@dataclass
class DataConfig(Typed):
    PREFIX: ClassVar[str] = "data."

    dataset: str = "runs/_data/stdlib/shards"
    """Folder written by `strata prepare` (shards + index.json + tokenizer/). With
    `sources`, the first source's dataset (its validation split gives `val_loss`)."""
    verify: bool = False
    """Check every shard's sha256 against the index before training."""
    sources: list[SourceConfig] = setting(default_factory=list)
    """A mixture of prepared datasets (`[[data.sources]]` tables: `dataset`, `weight`,
    `max_repetition`, `name`); empty: `dataset` alone. docs/ARCHITECTURE.md gives the
    order."""

    exclude_docs: list[int | str] = setting(default_factory=list)
    """Documents never shown (in a fork, from its fork step on): ids of the first source's
    train split (`index.json` order), or `NAME:ID` for source NAME of a mixture. A row
    that would show a window overlapping one shows the next allowed window of the same
    permutation instead (docs/ARCHITECTURE.md, "Data order")."""
    exclude_docs_file: str = ""
    """A text file of more such ids, one per line (`#` starts a comment)."""
    inject: list[InjectConfig] = setting(default_factory=list)
    """Texts shown at given steps (`[[data.inject]]` tables: `text` or `file`, `steps`),
    each in one of the last rows of its steps' batches; the ledger names them as source
    `inject`."""

    def check(self) -> None:
        for doc in self.exclude_docs:
            name, _, number = str(doc).rpartition(":")
            if isinstance(doc, bool) or not number.isdigit() or (name == "" and ":" in str(doc)):
                self.fail("exclude_docs", "document ids (integers >= 0) or 'NAME:ID' strings")
        if not self.sources:
            return
        labels = [s.label for s in self.sources]
        if len(set(labels)) < len(labels):
            dup = next(x for x in labels if labels.count(x) > 1)
            raise ConfigError(f"data.sources: two sources named {dup!r}; give one a `name`")
        object.__setattr__(self, "dataset", self.sources[0].dataset)


@dataclass
class TrainConfig(Typed):
    PREFIX: ClassVar[str] = "train."

    seed: int = setting(1337, ge=0, le=2**63 - 1, expected="an integer in [0, 2**63 - 1]")
    """Seeds weight init and the data order (a seeded permutation per epoch)."""
    seq_len: int = setting(256, gt=0)
    """Tokens per training sequence (must not exceed model.max_seq_len)."""
    global_batch_size: int = setting(16, gt=0)
    """Sequences per optimizer step, summed over all processes and micro-batches."""
    micro_batch_size: int = setting(16, gt=0)
    """Sequences per forward/backward; global / (micro * world) micro-batches accumulate."""
    max_steps: int = setting(300, gt=0)
    """Number of optimizer steps."""
    grad_clip: float = setting(1.0, ge=0)
    """Clip the global gradient norm to this value (0 disables)."""
    eval_every: int = setting(100, ge=0)
    """Compute validation loss every this many steps (0 disables; publications always do)."""
    eval_windows: int = setting(64, gt=0)
    """Validation windows per evaluation: evenly spaced over the val split, the same every
    time and for any micro-batch size or number of processes (the study's default too).
    Older configs' `eval_batches = N` reads as N x micro_batch_size windows."""
    eval_tasks: str = ""
    """lm-evaluation-harness tasks (names, or a YAML file or folder of them, as `strata
    study --tasks`) evaluated at every publication step into metrics.jsonl, wandb and
    the revision's `strata.json` (`tasks`); empty: off. Needs the '.[eval]' extra."""
    eval_tasks_limit: int | None = setting(None, gt=0)
    """With `eval_tasks`: at most this many examples of each task (None: all)."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda`, or `cuda:N`."""
    dtype: str = setting("auto", choices=DTYPES)
    """Autocast dtype: `auto` (bf16 on cuda, fp32 on cpu), `bf16`, `fp32` (no fp16: it would
    need loss scaling)."""
    threads: int = setting(0, ge=0)
    """CPU threads for torch (0 keeps torch's default)."""
    dp_replicate: int = setting(1, gt=0)
    """HSDP replica groups: processes are a dp_replicate x dp_shard mesh (1 = plain FSDP)."""
    dp_shard: int = setting(-1, ge=-1, expected="a positive integer or -1")
    """Processes each parameter is sharded over; -1 = world size / dp_replicate."""
    param_dtype: str = setting("auto", choices=DTYPES)
    """FSDP (2+ processes) compute dtype: `auto` (= resolved `dtype`), `bf16`, `fp32`."""
    reduce_dtype: str = setting("fp32", choices=("fp32", "bf16"))
    """FSDP gradient reduce-scatter dtype: `fp32` or `bf16`."""
    reshard_after_forward: bool = True
    """Free each block's gathered parameters after forward (ZeRO-3; false = ZeRO-2-like)."""
    activation_checkpointing: str = setting("none", choices=("none", "full", "selective"))
    """Recompute activations in backward: `none`, `full` (all blocks), `selective` (every other)."""
    compile: bool = False
    """`torch.compile` each transformer block."""
    deterministic: bool = False
    """Deterministic algorithms (`torch.use_deterministic_algorithms`): CPU runs are bitwise
    reproducible; on GPU see docs/reliability.md for what stays nondeterministic."""
    comm_timeout_s: float = setting(1800.0, gt=0, expected="seconds > 0")
    """Under torchrun: a collective (or barrier, e.g. while rank 0 writes a revision) that
    waits longer than this fails the run (NCCL's own default is 10 minutes)."""
    max_bad_steps: int = setting(5, ge=0)
    """A step whose loss or gradient norm is NaN/Inf is skipped on the device (the fused
    AdamW kernel leaves the state as it was) and counted; after this many in a row the run
    stops at the next log step with a resume checkpoint. 0 turns skipping off (a non-finite
    logged loss then stops the run)."""
    spike_factor: float = setting(0.0, ge=0)
    """Record a loss spike (batch indices and per-sequence losses in RUN/spikes/) when a
    step's loss exceeds this multiple of the mean of the last `spike_window` losses; 0 = off.
    On, it reads the loss back from the device every step (a host sync)."""
    spike_window: int = setting(50, gt=0)
    """Steps in the running mean that `spike_factor` compares against."""

    def check(self) -> None:
        if not device_name(self.device):
            self.fail("device", "auto, cpu, cuda or cuda:N")
        if self.global_batch_size % self.micro_batch_size:
            self.fail(
                "global_batch_size",
                f"a multiple of train.micro_batch_size ({self.micro_batch_size})",
            )
        if self.dp_shard == 0:
            self.fail("dp_shard", "a positive integer or -1")

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
class OptimConfig(Typed):
    PREFIX: ClassVar[str] = "optim."

    lr: float = setting(3e-3, gt=0, expected="a positive float")
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = setting(0.1, ge=0, le=1)
    """Final learning rate as a fraction of `lr`."""
    schedule: str = setting("cosine", choices=("cosine", "linear", "wsd", "constant"))
    """Decay after warmup: `cosine`, `linear`, `wsd` (warmup-stable-decay) or `constant`."""
    warmup_steps: int = setting(20, ge=0)
    """Linear warmup from 0 to `lr` over this many steps."""
    decay_fraction: float = setting(0.2, gt=0, le=1)
    """For `wsd`: the final fraction of steps over which the rate decays linearly."""
    weight_decay: float = setting(0.1, ge=0)
    """Decoupled weight decay; never applied to norms, biases or embeddings."""
    beta1: float = setting(0.9, ge=0, lt=1)
    """AdamW's first-moment decay."""
    beta2: float = setting(0.95, ge=0, lt=1)
    """AdamW's second-moment decay."""
    eps: float = setting(1e-8, gt=0)
    """AdamW's epsilon, added to the root of the second moment."""


@dataclass
class CheckpointConfig(Typed):
    PREFIX: ClassVar[str] = "checkpoint."
    ALIASES: ClassVar[dict[str, str]] = {"async": "async_save"}  # a Python keyword

    every: int = setting(100, gt=0)
    """Write a resume checkpoint every this many steps (and at the last step)."""
    keep: int = setting(2, gt=0)
    """Resume checkpoints to keep (older ones are pruned; published revisions never are)."""
    async_save: bool = False
    """Write resume checkpoints in the background while training goes on (one in flight)."""


@dataclass
class PublishConfig(Typed):
    PREFIX: ClassVar[str] = "publish."
    ALIASES: ClassVar[dict[str, str]] = {"async": "async_write"}

    every: int = setting(1000, gt=0)
    """Pythia schedule: step 0, powers of two below `every`, multiples of `every`, last."""
    extra_steps: list[int] = setting(default_factory=list, ge=0, expected="non-negative steps")
    """Additional steps to publish."""
    log_spaced: bool = True
    """Publish the powers of two below `every` (Pythia's early log-spaced revisions)."""
    async_write: bool = True
    """(Also spelled `async`.) Training waits only while the weights are gathered into CPU
    memory; rank 0 writes, hashes and renames the revision from a thread. Never two in
    flight; a resume checkpoint of a later step waits for it. Sharded models above
    `async_max_gb` are streamed synchronously instead."""
    training_state: bool = False
    """Keep, for every published revision, the full resume state of its step (model,
    optimizer, schedule position, RNG, data cursor): the resume checkpoint
    `resume/step-XXXXXXXX` of that step, which `checkpoint.keep` never prunes, named
    by the revision's `strata.json` and the manifest (`training_state`). A fork starts
    from it (`strata train CONFIG --from RUN/checkpoints/stepN`). Disk: about 3x the
    fp32 weights per revision (weights and AdamW's two moments)."""
    async_max_gb: float = setting(8.0, ge=0, expected="GB >= 0")
    """A sharded model (2+ processes) whose fp32 weights pass this many GB is not copied
    whole into rank 0's memory for a background write: it is streamed into the file one
    tensor at a time, and training waits for the write."""


@dataclass
class LogConfig(Typed):
    PREFIX: ClassVar[str] = "log."

    every: int = setting(10, gt=0)
    """Write a metrics.jsonl record (and a progress line) every this many steps."""
    wandb_project: str = ""
    """Weights & Biases project; empty disables wandb."""
    wandb_mode: str = setting("offline", choices=("online", "offline", "disabled"))
    """`online`, `offline` (no login needed) or `disabled`."""
    wandb_entity: str = ""
    """Weights & Biases entity (team); empty uses the default."""
    peak_tflops: float = setting(0.0, ge=0)
    """Peak device TFLOP/s for MFU; 0 looks the device up (A100, H100, H200), CPU has none."""
    progress: bool = True
    """Show a progress bar when stderr is a terminal."""
