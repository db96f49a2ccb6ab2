"""Published revisions: `checkpoints/stepN/` folders that any Hugging Face tool can read.

Each revision holds `model.safetensors` (Hugging Face parameter names), `config.json`
(loadable by `transformers.AutoModelForCausalLM`), the tokenizer files, and
`strata.json`: the native model config, step, tokens seen, the data cursor, train and
validation loss, the code's git commit and the sha256 of every other file.
`checkpoints/manifest.json` lists every revision once, in step order.

A config that no Hugging Face class can express (e.g. an MoE with `balance = "bias"` or
shared experts, a Llama layout with a parallel residual) is still published, with our
own parameter names in `model.safetensors`, no `config.json`, and `weights_format =
"strata"` plus the reason in `strata.json`; Strata's own tools (load, study, generate,
verify) read it, `strata export --to hf` refuses it with that reason. Which of the two a
config gets is decided once, by one `check_hf_compatible` call (`weights_format`), and the
decision is passed down to the plan, the weights' metadata and config.json; a
`Publisher` decides it on its first revision and keeps it for the run.

Writes are atomic: the revision is assembled in `.stepN.tmp/` and renamed into place,
then the manifest is rewritten through a temporary file. A crash leaves either the
previous state or the complete new revision, never a half-written one in the manifest.

A sharded (FSDP2, DTensor) model is gathered tensor by tensor: every process follows
the same plan of outputs (`weights_plan`) and calls `full_tensor()` on each sharded input
(an all-gather). `write_revision` streams: rank 0 writes each output into
`model.safetensors` as it comes (`checkpoints/safetensors_stream.py`) and drops its
inputs, so no process ever holds more than one output's inputs (a fused q/k/v: three
tensors). Publishing is therefore a collective: every process calls `publish_revision`
/ `write_revision`, rank 0 writes the files and the others return None.

`Publisher(background=True)` (the trainer's default, `publish.async`) instead copies the
full weights into rank 0's CPU memory, which is all training waits for, and writes,
hashes and renames the folder from a thread, never two in flight; a sharded model whose
fp32 weights pass `publish.async_max_gb` is streamed synchronously instead, so that no
process ever holds a large model whole.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from strata.checkpoints.files import git_commit, replace_dir, sha256_file, write_json_atomic
from strata.checkpoints.hf import _Family, check_hf_compatible, hf_config
from strata.checkpoints.hf_weights import Plan, hf_plan, identity
from strata.checkpoints.safetensors_stream import Spec, StreamWriter
from strata.model import ModelConfig
from strata.run import RevisionMeta, update_manifest
from strata.run.layout import HF_CONFIG, REVISION_META, WEIGHTS, revision_name
from strata.run.meta import FORMAT_VERSION, NATIVE
from strata.tokenizer import Tokenizer
from torch.distributed.tensor import DTensor


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full weights as CPU copies on rank 0 ({} elsewhere); a collective when sharded."""
    keep, out = _rank0(), {}
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()  # every process, in the same order
        if keep:
            out[name] = tensor.detach().to("cpu", copy=True)
    return out


@dataclass(frozen=True)
class WeightsFormat:
    """How the revisions of one model config are written (`weights_format`)."""

    family: _Family | None
    """The Hugging Face family record when a class can hold the config, else None."""
    reason: str | None
    """Why no Hugging Face class can hold it (None when `family` is set)."""

    @property
    def hf(self) -> bool:
        """Hugging Face names and a config.json (else our own names, `weights_format =
        "strata"`)."""
        return self.family is not None


def weights_format(config: ModelConfig) -> WeightsFormat:
    """The decision for `config`: one `check_hf_compatible` call."""
    try:
        return WeightsFormat(check_hf_compatible(config), None)
    except ValueError as err:
        return WeightsFormat(None, str(err))


def hf_incompatibility(config: ModelConfig) -> str | None:
    """Why no Hugging Face class can hold this config (None when one can)."""
    return weights_format(config).reason


def weights_plan(config: ModelConfig, names: list[str], fmt: WeightsFormat | None = None) -> Plan:
    """What `model.safetensors` holds, output by output (`checkpoints.hf_weights.hf_plan`):
    Hugging Face names when a class can hold the config, else our own names (`names`, the
    state_dict's), a tied lm_head stored once, as the embedding. `fmt`: the config's
    `weights_format`, decided here when not given."""
    fmt = fmt or weights_format(config)
    if fmt.hf:
        return hf_plan(config, fmt.family)
    tied = {"lm_head.weight"} if config.tie_embeddings else set()
    return [(name, (name,), identity) for name in names if name not in tied]


def write_weights(
    path: Path | None,
    plan: Plan,
    inputs: dict[str, torch.Tensor],
    fetch: Callable[[str], torch.Tensor | None],
    metadata: dict[str, str] | None,
) -> None:
    """Write `plan`'s outputs to `path` one at a time (None: this process only takes part
    in the collectives). `fetch(name)` returns input `name` in full (a collective for a
    sharded one; None where nothing is written); `inputs` gives their shapes and dtypes.
    Each input is held only until its last output is written. A failed write still
    fetches the rest, so every process makes the same collectives, then raises."""
    last_use = {n: i for i, (_, names, _) in enumerate(plan) for n in names}
    writer = StreamWriter(path, _specs(plan, inputs), metadata) if path is not None else None
    held: dict[str, torch.Tensor | None] = {}
    failed: OSError | None = None
    try:
        for i, (name, names, fn) in enumerate(plan):
            for n in names:
                if n not in held:
                    held[n] = fetch(n)
            if writer is not None and failed is None:
                try:
                    writer.write(name, fn(*(held[n] for n in names)).contiguous())
                except OSError as err:
                    failed = err
            for n in names:
                if last_use[n] == i:
                    del held[n]
    finally:
        if writer is not None:
            writer.file.close()
    if failed is not None:
        raise failed
    if writer is not None:
        writer.close()  # every output written


def _specs(plan: Plan, inputs: dict[str, torch.Tensor]) -> list[Spec]:
    """Each output's (name, dtype, shape), worked out on the meta device."""
    specs = []
    for name, names, fn in plan:
        metas = (torch.empty(inputs[n].shape, dtype=inputs[n].dtype, device="meta") for n in names)
        out = fn(*metas)
        specs.append((name, out.dtype, tuple(out.shape)))
    return specs


def special_ids(tokenizer: Tokenizer | None) -> dict[str, int | None]:
    if tokenizer is None:
        return {"bos_id": None, "eos_id": None, "pad_id": None}
    return {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id}


def write_revision(
    out: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
    fmt: WeightsFormat | None = None,
) -> RevisionMeta | None:
    """Write a complete revision folder at `out` (which must not exist); returns strata.json.

    Every process calls it for a sharded model: the weights are gathered one tensor at a
    time and streamed into the file, so no process ever holds more than the tensors of
    one output; rank 0 writes, the others return None. `fmt`: the config's
    `weights_format`, decided here when not given.
    """
    state = model.state_dict()
    path = out / WEIGHTS if _rank0() else None
    if path is not None:
        out.mkdir(parents=True)

    def fetch(name: str) -> torch.Tensor | None:
        tensor = state[name]
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()  # every process, in the same order
        return tensor.detach().to("cpu", copy=True) if path is not None else None

    fmt = fmt or weights_format(config)
    plan = weights_plan(config, list(state), fmt)
    write_weights(path, plan, state, fetch, {"format": "pt"} if fmt.hf else None)
    if path is None:
        return None
    return _revision_files(out, config, tokenizer, info, fmt)


def write_revision_files(
    out: Path,
    state: dict[str, torch.Tensor],
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
    fmt: WeightsFormat | None = None,
) -> RevisionMeta:
    """The files of a revision from full CPU weights (our names); returns strata.json."""
    out.mkdir(parents=True)
    fmt = fmt or weights_format(config)
    plan = weights_plan(config, list(state), fmt)
    metadata = {"format": "pt"} if fmt.hf else None
    write_weights(out / WEIGHTS, plan, state, state.__getitem__, metadata)
    return _revision_files(out, config, tokenizer, info, fmt)


def _revision_files(
    out: Path,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
    fmt: WeightsFormat,
) -> RevisionMeta:
    """Everything beside the weights: config.json, the tokenizer, strata.json."""
    if fmt.hf:
        hf = hf_config(config, family=fmt.family, **special_ids(tokenizer))
        write_json_atomic(out / HF_CONFIG, hf)
    else:  # no Hugging Face class: our own parameter names, no config.json
        info = {**info, "weights_format": NATIVE, "hf_incompatible": fmt.reason}
    if tokenizer is not None:
        tokenizer.save(out)
    digests = {f.name: sha256_file(f) for f in sorted(out.iterdir()) if f.is_file()}
    raw = {"format_version": FORMAT_VERSION, **info, "git_commit": git_commit(),
           "model_config": config.to_dict(), "sha256": digests}  # fmt: skip
    meta = RevisionMeta.from_dict(raw, out / REVISION_META)  # what we write is typed too
    meta.write(out)
    return meta


class Publisher:
    """Publishes revisions into `checkpoints_dir`, writing files in the background or not.

    With `background=True`, `publish` copies the full weights into rank 0's CPU memory (a
    collective; training waits for this part only), then rank 0 writes the files, hashes
    them, renames the folder into place and updates the manifest from a thread while
    training goes on. Never two in flight: `publish` and `wait()` first complete the
    previous one, and a write error (disk full) is raised there, the half-written
    folder removed and the manifest untouched. A sharded model whose fp32 weights pass
    `max_staged_gb` is never copied whole: it is streamed (`write_revision`, one tensor
    at a time), synchronously, as is every revision without `background`. The weights
    format is decided on the first revision of a config and kept (`weights_format`).
    """

    def __init__(
        self, checkpoints_dir: str | Path, background: bool = False, max_staged_gb: float = 8.0
    ) -> None:
        self.root, self.background = Path(checkpoints_dir), background
        self.max_staged_bytes = max_staged_gb * 1e9
        self._pool = ThreadPoolExecutor(1, "publish") if background else None
        self.pending: tuple[int, Future] | None = None  # (step, write), rank 0 only
        self._format: tuple[ModelConfig, WeightsFormat] | None = None  # (config, its format)

    def weights_format(self, config: ModelConfig) -> WeightsFormat:
        """`weights_format(config)`, decided once and kept while the config stays the same
        (one Hugging Face check per run)."""
        if self._format is None or self._format[0] != config:
            self._format = (copy.deepcopy(config), weights_format(config))
        return self._format[1]

    def publish(
        self,
        step: int,
        model: torch.nn.Module,
        config: ModelConfig,
        tokenizer: Tokenizer | None,
        info: dict[str, Any],
    ) -> Path:
        """Start (or, when not in the background, complete) revision `step{step}`."""
        self.wait()
        root, final = self.root, self.root / revision_name(step)
        tmp = root / f".{final.name}.tmp"
        if _rank0():
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            for stale in root.glob("step*.old-*"):  # left by a kill inside replace_dir
                shutil.rmtree(stale, ignore_errors=True)
        info = {"revision": final.name, "step": step, **info}
        fmt = self.weights_format(config)
        if self.stages(model):
            state = _cpu_state_dict(model)  # a collective; rank 0's copies
            if _rank0():
                args = (tmp, final, state, config, tokenizer, info, fmt)
                self.pending = (step, self._pool.submit(self._write, *args))
            return final
        try:
            meta = write_revision(tmp, model, config, tokenizer, info, fmt)  # a collective
        except BaseException:
            if _rank0():  # a failed write (disk full) leaves nothing behind
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if meta is not None:
            replace_dir(tmp, final)
            update_manifest(root, meta)
        if dist.is_initialized():
            dist.barrier()
        return final

    def stages(self, model: torch.nn.Module) -> bool:
        """Whether `publish` copies the whole model to CPU and writes in the background."""
        if self._pool is None:
            return False
        params = list(model.parameters())
        if not any(isinstance(p, DTensor) for p in params):
            return True  # one process already holds the whole model
        return sum(p.numel() for p in params) * 4 <= self.max_staged_bytes

    def wait(self, before: int | None = None) -> None:
        """Complete the write in flight (only one of a step < `before`, when given);
        re-raises its error."""
        if self.pending is None or (before is not None and self.pending[0] >= before):
            return
        _, write = self.pending
        self.pending = None
        write.result()

    def failed(self) -> tuple[int, BaseException] | None:
        """(step, error) of a background write that has ended with an error, without
        waiting (rank 0); None while it runs, after it succeeded, or with none."""
        if self.pending is None or not self.pending[1].done():
            return None
        step, write = self.pending
        err = write.exception()
        return None if err is None else (step, err)

    def discard(self) -> None:
        """Forget a failed write (its folder is already removed; `failed` reported it)."""
        if self.pending is not None and self.pending[1].done():
            self.pending = None

    def close(self) -> None:
        """Complete the write in flight and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()

    def _write(self, tmp: Path, final: Path, state: dict, *args: Any) -> None:
        try:
            meta = write_revision_files(tmp, state, *args)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves nothing behind
            raise
        replace_dir(tmp, final)
        update_manifest(self.root, meta)


def publish_revision(
    checkpoints_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    info: dict[str, Any],
) -> Path:
    """Publish `checkpoints_dir/step{step}` atomically and record it in the manifest.

    A collective under torchrun: every process calls it, rank 0 writes, and all return
    once the revision is in place.
    """
    return Publisher(checkpoints_dir).publish(step, model, config, tokenizer, info)
