"""The training loop, as a few named steps: `train_step`, `evaluate`, `maybe_checkpoint`,
`maybe_publish`, `fit`.

Step numbering: `step` counts completed optimizer updates. The update that turns step
N into N + 1 trains on global batch N, so published revision `stepN` has seen batches
0 .. N-1 (N x global_batch_size sequences). The learning rate is a pure function of the
step and the data order a pure function of (dataset, seed, seq_len, global batch, step),
so a resumed run continues exactly where the checkpoint left off.

No host sync inside a step: losses, norms, the bad-step flag and MoE counts stay on the
device and are read back only at log, eval and publication steps (and every step while
`train.spike_factor > 0`); preemption is agreed on with a CPU all-reduce
(tests/train/test_no_sync.py).

Faults (`train/faults.py`): a step whose global loss or gradient norm is NaN/Inf is
skipped on the device (the fused AdamW kernel reads a `found_inf` flag); a run of
`train.max_bad_steps` in a row stops the run at the next log step with a resume
checkpoint and `RunStopped`. Loss spikes are recorded in `RUN/spikes/` before the
update. A failed checkpoint or publication write (disk full) stops the run with
`RunStopped`; the previous checkpoint is untouched.
MoE measurements (router losses, routing statistics, bias balancing) are in
`train/moe_stats.py`.

Under torchrun the model is sharded with FSDP2 (`train/parallelize.py`), so every
forward is a collective: every process runs `train_step`, `evaluate` and
`maybe_publish` (rank 0 alone writes files). Gradients are reduced by FSDP once per step,
on the last micro-batch. Logged losses, grad norms and validation losses are global
values, the same whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from strata.checkpoints.files import sha256_file, write_json_atomic
from strata.checkpoints.publish import Publisher, hf_incompatibility, read_manifest
from strata.checkpoints.resume import ResumeWriter, latest_resume, load_resume
from strata.checkpoints.schedule import publish_steps
from strata.model import GPT, ModelConfig
from strata.model.attention_backend import segment_ids_from_tokens
from strata.tokenizer import Tokenizer, TokenShards, row_digests
from strata.train import dist
from strata.run.config import Config, ConfigError, TrainConfig, dump_toml
from strata.train.data import TrainBatches, validation_batches
from strata.train.faults import GuardReading, RunStopped, StepGuard, spike_record, write_failed
from strata.train.materialize import materialize
from strata.train.metrics import MetricsLogger, mfu_of, peak_flops
from strata.train.moe_stats import extra_losses, routing, update_router_bias
from strata.train.optim import build_optimizer, lr_at, set_lr
from strata.train.parallelize import parallelize
from strata.train.preempt import Preemption
from strata.train.revision_info import already_published, data_cursor, parent_revision


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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class Trainer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            dist.set_deterministic()
        self.device = dist.pick_device(cfg.train.device)
        self.dtype = dist.pick_dtype(cfg.train.dtype, self.device)
        dist.init_distributed(self.device, cfg.train.comm_timeout_s)
        self._setup_data()
        cfg.model = resolve_model_config(cfg, self.train_shards.vocab_size)
        reason = hf_incompatibility(cfg.model)
        if reason is not None:
            dist.print0(
                f"note: revisions will be published with Strata's own parameter names, not "
                f"as a Hugging Face model: {reason}"
            )
        self.model = build_model(cfg.model, cfg.train, self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.step, self.tokens_per_step = 0, cfg.train.global_batch_size * cfg.train.seq_len
        self.preempted = False
        self.published_loss: tuple[int, float | None] = (-1, None)  # (step, train loss)
        self.guard = StepGuard(cfg.train, self.device)
        self._resume()
        self.resume_writer = ResumeWriter(
            self.run_dir / "resume", cfg.checkpoint.keep, cfg.checkpoint.async_save
        )
        self._write_run_files()
        self.publisher = Publisher(
            self.run_dir / "checkpoints", cfg.publish.async_write, cfg.publish.async_max_gb
        )
        self.publish_at = set(
            publish_steps(
                cfg.train.max_steps,
                cfg.publish.every,
                cfg.publish.extra_steps,
                cfg.publish.log_spaced,
            )
        )
        self.peak = peak_flops(self.device, cfg.log.peak_tflops)
        self.flops_per_token = self.model.flops_per_token(cfg.train.seq_len)
        self.logger = MetricsLogger(
            self.run_dir, cfg.log, cfg.train.max_steps, self.step, cfg.to_dict(), dist.is_rank0()
        )

    # -- setup -----------------------------------------------------------------------

    def _setup_data(self) -> None:
        cfg = self.cfg
        dataset = Path(cfg.data.dataset)
        self.train_shards = TokenShards(dataset, "train", verify=cfg.data.verify)
        # index.json lists every shard's sha256, so its own hash fingerprints the data
        self.dataset_fingerprint = sha256_file(dataset / "index.json")
        self.batches = TrainBatches(
            self.train_shards,
            cfg.train.seq_len,
            cfg.train.global_batch_size,
            cfg.train.micro_batch_size,
            cfg.train.seed,
            dist.rank(),
            dist.world_size(),
        )
        val = TokenShards(dataset, "val", verify=cfg.data.verify)
        self.val_batches = (
            validation_batches(
                val, cfg.train.seq_len, cfg.train.micro_batch_size, cfg.train.eval_batches
            )
            if val.n_tokens > cfg.train.seq_len
            else []
        )
        self.tokenizer_dir = self.run_dir / "tokenizer"
        self._install_tokenizer(dataset / "tokenizer")

    def _install_tokenizer(self, source: Path) -> None:
        """Copy the dataset's tokenizer into the run, or check the run's one matches."""
        expected = self.train_shards.index["tokenizer_sha256"]
        if self.tokenizer_dir.exists():
            found = Tokenizer.load(self.tokenizer_dir).sha256()
            if found != expected:
                raise ValueError(
                    f"{self.tokenizer_dir}: the run's tokenizer (sha256 {found[:12]}) is not the "
                    f"one {self.cfg.data.dataset} was prepared with ({expected[:12]})"
                )
        elif dist.is_rank0():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / ".tokenizer.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            tmp.rename(self.tokenizer_dir)
        dist.barrier()
        self.tokenizer = Tokenizer.load(self.tokenizer_dir)

    def _resume(self) -> None:
        path = latest_resume(self.run_dir / "resume")
        if path is None:
            return
        state = load_resume(path, self.model, self.optimizer)
        self.step = int(state["step"])
        self.published_loss = (self.step, state.get("train_loss"))
        dist.print0(f"resumed from {path} at step {self.step}")

    def _write_run_files(self) -> None:
        if dist.is_rank0():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / ".config.toml.tmp"
            tmp.write_text(dump_toml(self.cfg))
            tmp.replace(self.run_dir / "config.toml")

    # -- the loop --------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimizer update on global batch `step`; returns device tensors."""
        self.model.train()
        set_lr(self.optimizer, lr_at(step, self.cfg.optim, self.cfg.train.max_steps))
        t0 = time.perf_counter()
        micro = self.batches.micro_batches(step, self.device)
        data_wait = time.perf_counter() - t0
        total = torch.zeros((), device=self.device)
        extra = torch.zeros(3, device=self.device)  # z-loss, MoE aux loss, MoE z-loss
        counts: dict[str, torch.Tensor] = {}  # MoE layer -> (E,) assignments this step
        for i, (inputs, targets) in enumerate(micro):
            self._sync_grads(i == len(micro) - 1)  # FSDP reduces once, after the last one
            with dist.autocast(self.device, self.dtype):
                _, loss = self.model(inputs, targets, segment_ids=self._segments(inputs))
            (loss / len(micro)).backward()
            terms = extra_losses(self.model)
            extra += terms
            total += loss.detach() - terms.sum()  # logged loss: cross-entropy only
            for name, c in self.model.last_moe_counts.items():
                counts[name] = counts[name] + c if name in counts else c
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if isinstance(grad_norm, DTensor):  # sharded gradients: the global norm
            grad_norm = grad_norm.full_tensor()
        out = {
            "loss": total / len(micro),
            "z_loss": extra[0] / len(micro),
            "moe_losses": extra[1:] / len(micro),
            "moe_counts": counts,
            "grad_norm": grad_norm,
            "data_wait": data_wait,
        }
        if self.guard.factor > 0:
            self._check_spike(step, out, micro)
        found_inf = self.guard.found_inf(out["loss"], grad_norm, step) if self.guard.skips else None
        self._update(found_inf, counts)
        self.optimizer.zero_grad(set_to_none=True)
        return out

    def _update(self, found_inf: torch.Tensor | None, counts: dict[str, torch.Tensor]) -> None:
        """The AdamW update, skipped on the device when `found_inf` is 1 (the fused kernel
        reads it and leaves weights, moments and step counts as they were)."""
        if found_inf is None:
            self.optimizer.step()
            update_router_bias(self.model, counts)
        elif self.optimizer.defaults.get("fused"):
            self.optimizer.found_inf = found_inf
            self.optimizer.step()
            update_router_bias(self.model, counts, keep=1 - found_inf)
        elif not found_inf.item():  # no fused kernel for these parameters: one host sync
            self.optimizer.step()
            update_router_bias(self.model, counts)

    def _check_spike(self, step: int, out: dict[str, Any], micro: list) -> None:
        """`train.spike_factor > 0`: before the update, compare the global loss with the
        running mean and record a spike (one host sync per step)."""
        loss = dist.all_reduce_mean(out["loss"].clone()).item()
        spike_mean = self.guard.spike(loss)
        if spike_mean is not None:
            self._record_spike(step, loss, spike_mean, micro)

    @torch.no_grad()
    def _record_spike(self, step: int, loss: float, mean: float, micro: list) -> None:
        """Write RUN/spikes/step{step+1}.json (`train.faults.spike_record`); a collective."""
        losses = []
        for inputs, targets in micro:
            with dist.autocast(self.device, self.dtype):
                logits = self.model(inputs, segment_ids=self._segments(inputs))  # (B, T, V)
            ce = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), targets.flatten(), reduction="none"
            )
            losses.append(ce.view(targets.shape).mean(1))  # (B,)
        per_sequence = dist.all_gather_rows(torch.cat(losses)).tolist()  # global row order
        if dist.is_rank0():
            windows = self.batches.window_indices(step).tolist()
            record = spike_record(step, loss, mean, self.guard.factor, windows, per_sequence)
            (self.run_dir / "spikes").mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "spikes" / f"step{step + 1}.json", record)
        dist.print0(f"loss spike at step {step + 1}: {loss:.4f} vs running mean {mean:.4f}")

    def _sync_grads(self, enabled: bool) -> None:
        if isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(enabled)

    def _segments(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """Document ids for attention when `model.document_mask` is on, else None."""
        if not self.cfg.model.document_mask:
            return None
        return segment_ids_from_tokens(inputs, self.train_shards.eos_id)  # (B, T)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over the fixed validation batches (None when there is no val split).

        Every process calls it: process r evaluates batches r, r + W, ... and the sums
        are combined. Forwards are collectives under FSDP, so every process runs the
        same number; one with fewer batches runs a spare forward that counts for nothing.
        """
        if not self.val_batches:
            return None
        self.model.eval()
        n, world = len(self.val_batches), dist.world_size()
        total = torch.zeros(2, device=self.device)  # (sum of batch losses, batches)
        for i in range(dist.rank(), math.ceil(n / world) * world, world):
            rows = self.val_batches[i % n].to(self.device)
            inputs = rows[:, :-1]
            with dist.autocast(self.device, self.dtype):
                _, loss = self.model(inputs, rows[:, 1:], segment_ids=self._segments(inputs))
            weight = float(i < n)
            ce = loss.float() - extra_losses(self.model).sum()  # cross-entropy only
            total += torch.stack([ce * weight, ce.new_tensor(weight)])
        total = dist.all_reduce_mean(total)  # the ratio of two means is the global mean
        return (total[0] / total[1]).item()

    def maybe_checkpoint(self, step: int, force: bool = False) -> None:
        every = self.cfg.checkpoint.every
        if force or step % every == 0 or step == self.cfg.train.max_steps:
            self._wait_publication(before=step)  # revisions up to `latest` are complete
            state = {"tokens": step * self.tokens_per_step}
            state["model_config"] = self.cfg.model.to_dict()
            if self.published_loss[0] == step:  # a revision of this step may still be
                state["train_loss"] = self.published_loss[1]  # writing: rewritable as is
            self.resume_writer.save(step, self.model, self.optimizer, state)

    def maybe_publish(self, step: int, train_loss: float | None, val_loss: float | None) -> None:
        """Publish revision `step` if it is on the schedule. Every process calls it: the
        evaluation and the gathering of the sharded weights are collectives; rank 0 writes."""
        if step not in self.publish_at:
            return
        self._wait_publication()  # the manifest lists every earlier revision
        if already_published(self.run_dir / "checkpoints", step, self.device):
            return
        if val_loss is None:
            val_loss = self.evaluate()
        self.published_loss = (step, train_loss)
        info = {
            "parent": parent_revision(self.run_dir / "checkpoints", step),
            "tokens": step * self.tokens_per_step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "data": data_cursor(
                self.cfg,
                step,
                self.dataset_fingerprint,
                self.train_shards.index["tokenizer_sha256"],
                self.batches.n_windows,
            ),
            "run": self.cfg.to_dict(),
        }
        if self.cfg.model.moe is not None:
            info["moe_routing"] = self._validation_routing()
        self.publisher.publish(step, self.model, self.cfg.model, self.tokenizer, info)

    @torch.no_grad()
    def _validation_routing(self) -> dict[str, dict] | None:
        """Routing statistics on the first (fixed) validation batch. Every process runs
        the same batch (a collective forward under FSDP), so no reduction is needed."""
        if not self.val_batches:
            return None
        self.model.eval()
        rows = self.val_batches[0].to(self.device)
        with dist.autocast(self.device, self.dtype):
            self.model(rows[:, :-1], rows[:, 1:], segment_ids=self._segments(rows[:, :-1]))
        return routing(self.model.last_moe_counts, reduce=False)

    def _batch_digest(self) -> str:
        """`tokenizer.order.batch_digest` of the global batch just trained: every process
        hashes its own rows, rank order is global row order. A collective."""
        local = torch.from_numpy(row_digests(self.batches.last_rows.numpy()))  # (rows, 32)
        rows = dist.all_gather_rows(local.to(self.device)).cpu()  # (global_batch, 32)
        return hashlib.sha256(rows.numpy().tobytes()).hexdigest()

    def _record(
        self, step: int, out: dict[str, Any], elapsed: float, steps: int, reading: Any
    ) -> dict:
        tokens_per_s = steps * self.tokens_per_step / max(elapsed, 1e-9)
        mfu = mfu_of(self.flops_per_token, tokens_per_s, dist.world_size(), self.peak)
        loss = dist.all_reduce_mean(out["loss"]).item()
        record = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "loss": loss if math.isfinite(loss) else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": _finite_or_none(out["grad_norm"].item()),
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": tokens_per_s / dist.world_size(),
            "mfu": mfu,
            "data_wait_s": out["data_wait"],
            "batch_sha256": self._batch_digest(),  # of global batch step - 1
        }
        if reading is not None and reading.skipped_steps:
            record |= {"skipped": reading.last_skipped, "skipped_steps": reading.skipped_steps}
        if self.guard.spikes:
            record["spikes"] = self.guard.spikes
        if self.cfg.model.z_loss > 0:
            record["z_loss"] = dist.all_reduce_mean(out["z_loss"]).item()
        if out["moe_counts"]:
            aux, z = dist.all_reduce_mean(out["moe_losses"].clone()).tolist()
            record |= {"moe_aux_loss": aux, "moe_z_loss": z}
            record["moe"] = routing(out["moe_counts"], reduce=True)
        if self.device.type == "cuda":
            record["memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return record

    def _read_guard(self, step: int, since: int) -> GuardReading | None:
        """At a log step: the bad-step counters (a host sync) and a line about steps
        skipped since the last log step."""
        if not self.guard.skips:
            return None
        reading = self.guard.read()
        if reading.new_skips:
            dist.print0(
                f"steps {since + 1}-{step}: {reading.new_skips} updates skipped "
                "(non-finite loss or gradient norm)"
            )
        return reading

    def _stop_if_diverged(self, step: int, reading: GuardReading | None) -> None:
        """Once `train.max_bad_steps` came in a row: a resume checkpoint, `RunStopped`."""
        if reading is None or not reading.diverged_at:
            return
        self._save_or_stop(step, force=True)
        self.resume_writer.wait()
        raise RunStopped(self.guard.divergence(reading.diverged_at, step))

    def _save_or_stop(self, step: int, force: bool = False) -> None:
        """`maybe_checkpoint`, turning a failed write (disk full) into `RunStopped`."""
        try:
            self.maybe_checkpoint(step, force=force)
        except OSError as err:
            raise RunStopped(self._write_failed(self.run_dir / "resume", err)) from err

    def _wait_publication(self, before: int | None = None) -> None:
        """`Publisher.wait`, turning a failed background write into `RunStopped`."""
        pending = self.publisher.pending
        try:
            self.publisher.wait(before)
        except OSError as err:
            where = self.run_dir / "checkpoints" / f"step{pending[0] if pending else '?'}"
            raise RunStopped(self._write_failed(where, err)) from err

    def _write_failed(self, where: Path, err: OSError) -> str:
        return write_failed(where, err, latest_resume(self.run_dir / "resume"))

    def fit(self) -> None:
        cfg = self.cfg
        step = self.step
        # step 0, or a revision of the resumed step that a kill cut short (in the
        # background, or before the manifest update): the same weights and train loss
        resumed_loss = self.published_loss[1] if self.published_loss[0] == step else None
        self.maybe_publish(step, resumed_loss, None)
        last_log, t_last = step, time.perf_counter()
        preemption = Preemption().install()
        try:
            while step < cfg.train.max_steps:
                out = self.train_step(step)
                step += 1
                self.logger.advance()
                t_side = time.perf_counter()  # eval and publication are not training time
                val_loss = None
                if cfg.train.eval_every and step % cfg.train.eval_every == 0:
                    val_loss = self.evaluate()
                loss = None
                if step % cfg.log.every == 0 or step == cfg.train.max_steps or val_loss:
                    reading = self._read_guard(step, last_log)
                    record = self._record(step, out, t_side - t_last, step - last_log, reading)
                    record["val_loss"] = val_loss
                    self.logger.log(record)
                    loss, last_log, t_last = record["loss"], step, t_side
                    if loss is None and self.cfg.train.max_bad_steps == 0:
                        raise RunStopped(
                            f"the loss is not finite at step {step} (train.max_bad_steps = 0: "
                            "bad steps are not skipped); rerun to resume from the last checkpoint"
                        )
                    self._stop_if_diverged(step, reading)
                if step in self.publish_at:
                    if loss is None:  # every process takes part in the reduction
                        loss = _finite_or_none(dist.all_reduce_mean(out["loss"]).item())
                    try:
                        self.maybe_publish(step, loss, val_loss)
                    except OSError as err:
                        where = self.run_dir / "checkpoints" / f"step{step}"
                        raise RunStopped(self._write_failed(where, err)) from err
                stop = preemption.requested()
                self._save_or_stop(step, force=stop)
                t_last += time.perf_counter() - t_side
                if stop:
                    self.preempted = True
                    dist.print0(
                        f"stopped by signal at step {step}: resume checkpoint written to "
                        f"{self.run_dir / 'resume'}; rerun the same command to continue"
                    )
                    break
            try:  # the last checkpoint is complete before we return
                self.resume_writer.wait()
            except OSError as err:
                raise RunStopped(self._write_failed(self.run_dir / "resume", err)) from err
            self._wait_publication()
        finally:
            with contextlib.suppress(OSError):  # already raised, or another error is
                self.publisher.close()  # rank 0's thread: no collective
            if dist.world_size() == 1:  # an error on one rank must not wait on the others
                self.resume_writer.wait()
            preemption.uninstall()
            self.logger.close()
        self.step = step

    def summary(self) -> str:
        """A closing line: where the run is and what it published."""
        revisions = read_manifest(self.run_dir / "checkpoints")["revisions"]
        state = "stopped early" if self.preempted else "done"
        text = f"{state}: step {self.step}, run folder {self.run_dir}"
        losses = [r["val_loss"] for r in revisions if r.get("val_loss") is not None]
        if revisions:
            text += f"; {len(revisions)} published revisions in {self.run_dir / 'checkpoints'}"
        if len(losses) > 1:
            text += f"; val loss {losses[0]:.3f} (step 0) -> {losses[-1]:.3f}"
        return text
