"""The training loop, as a few named steps: `train_step`, `evaluate`, `maybe_checkpoint`,
`maybe_publish`, `fit`.

Step numbering: `step` counts completed updates; the update N -> N + 1 trains on global
batch N, so revision `stepN` has seen batches 0 .. N-1. The learning rate and the data
order are pure functions of the config and the step, so a resume continues exactly
(`train/resume_check.py` refuses a resume whose config would change either).

No host sync inside a step: losses, norms, the bad-step flag and MoE counts stay on the
device, read back only at log, eval and publication steps (every step while
`train.spike_factor > 0`; tests/train/test_no_sync.py). The model returns a
`ModelOutput`: the loss to backpropagate and, apart, the cross-entropy the run logs.

Around the loop: `train/build.py` (model, data, run files), `train/metrics.py` (the
metrics record), `train/evaluate.py` (validation loss), `train/moe_stats.py` (MoE
layers), `train/faults.py` (bad steps, skipped on the device, `train.max_bad_steps` in
a row stop the run; loss spikes in `RUN/spikes/`; failed writes, `write_guard`;
`train/stops.py`: a failed late write stops at once with a resume checkpoint).

Under torchrun the model is sharded with FSDP2 (`train/parallelize.py`): every forward
is a collective, so every process runs `train_step`, `evaluate` and `maybe_publish`
(rank 0 alone writes files; `strata train` holds the run folder's lock). Gradients
are reduced once per step; logged losses are global, whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch
from strata.checkpoints.publish import Publisher
from strata.checkpoints.resume import ResumeWriter
from strata.checkpoints.schedule import publish_steps
from strata.model import ModelOutput
from strata.model.attention_backend import segment_ids_from_tokens
from strata.run import DataCursor, Manifest, RevisionMeta, RunPaths, update_manifest
from strata.run.config import Config
from strata.train import dist
from strata.train.build import (
    build_model,
    install_tokenizer,
    load_data,
    note_weights_format,
    resolve_model_config,
    resume,
    write_config,
)
from strata.train.data_edits import set_run_order
from strata.train.data_ledger import RunLedger
from strata.train.eval_tasks import LoopTasks, check_tasks
from strata.train.evaluate import eval_dtype, validation_loss
from strata.train.faults import (
    RunStopped,
    StepGuard,
    check_spike,
    ensure_finite,
    guarded_update,
    sequence_losses,
)
from strata.train.fork import start_fork
from strata.train.metrics import (
    MetricsLogger,
    StepRecords,
    StepResult,
    batch_digest,
    finite_or_none,
    peak_flops,
)
from strata.train.moe_stats import extra_losses, update_router_bias, validation_routing
from strata.train.optim import build_optimizer, lr_at, set_lr
from strata.train.preempt import Preemption
from strata.train.resume_check import check_resume
from strata.train.stops import WriteFaults
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

__all__ = ["RunStopped", "Trainer"]  # RunStopped: the CLI catches it from here


class Trainer(WriteFaults):
    def __init__(self, cfg: Config, fork_from: str | None = None) -> None:
        self.cfg, self.run, t = cfg, RunPaths(cfg.run_dir), cfg.train
        self.run_dir = self.run.root
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            dist.set_deterministic()
        self.device = dist.pick_device(t.device)
        self.dtype = dist.pick_dtype(t.dtype, self.device)
        dist.init_distributed(self.device, t.comm_timeout_s)
        data = load_data(cfg)
        self.train_shards, self.dataset_fingerprint = data.train_shards, data.fingerprint
        self.batches, self.val_batches = data.batches, data.val_batches
        self.val_sources, self.source_losses = data.val_sources, {}  # a mixture's
        self.source_records = data.source_records
        self.tokenizer = install_tokenizer(self.run, data)
        cfg.model = resolve_model_config(cfg, self.train_shards.vocab_size)
        tok_sha = self.train_shards.index["tokenizer_sha256"]
        data_id = (tok_sha, self.dataset_fingerprint, self.source_records)
        self.fork = start_fork(self.run, cfg, fork_from, data_id, self.batches.mixture)
        names = [r["name"] for r in data.source_records] or [data.dataset.name]
        set_run_order(cfg, self.batches, self.fork, names, self.tokenizer)
        check_resume(self.run, cfg, self.dataset_fingerprint)  # the same run, or refused
        p = cfg.publish
        self.publisher = Publisher(self.run.checkpoints, p.async_write, p.async_max_gb)
        note_weights_format(self.publisher, cfg.model)  # decided once for the run
        self.model = build_model(cfg.model, t, self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.tokens_per_step, self.preempted = t.global_batch_size * t.seq_len, False
        self.guard = StepGuard(t, self.device)
        tasks = check_tasks(cfg)  # train.eval_tasks, at publication steps
        self.loop_tasks = LoopTasks(cfg, tasks) if tasks is not None else None
        # published_loss: (step, train loss) of the last revision published or resumed
        self.publish_at = set(publish_steps(t.max_steps, p.every, p.extra_steps, p.log_spaced))
        if self.fork:  # the fork point, compared with the parent's revision
            self.publish_at.add(self.fork["step"])
        self.step, self.published_loss, unlogged = resume(
            self.run, self.model, self.optimizer, t.max_steps
        )
        self.resume_writer = ResumeWriter(
            self.run.resume, cfg.checkpoint.keep, cfg.checkpoint.async_save
        )
        if p.training_state:  # the state of every revision is kept
            self.resume_writer.pinned = set(self.publish_at)
        write_config(self.run, cfg)
        flops = self.model.flops_per_token(t.seq_len)
        peak = peak_flops(self.device, cfg.log.peak_tflops)
        z_loss = cfg.model.z_loss > 0
        self.records = StepRecords(self.tokens_per_step, flops, peak, self.device, z_loss)
        self.logger = MetricsLogger(
            self.run.root, cfg.log, t.max_steps, self.step, cfg.to_dict(), dist.is_rank0()
        )
        for record in unlogged:  # kept in the checkpoint when metrics.jsonl was full
            self.logger.log(record)
        self.source_names = names
        self.ledger = (
            RunLedger(self.run.root, self.batches, names, t.max_steps, self.step, self.fork)
            if dist.is_rank0() else None
        )  # fmt: skip

    def train_step(self, step: int) -> StepResult:
        """One optimizer update on global batch `step`; returns device values."""
        self.model.train()
        set_lr(self.optimizer, lr_at(step, self.cfg.optim, self.cfg.train.max_steps))
        t0 = time.perf_counter()
        micro = self.batches.micro_batches(step, self.device)
        data_wait, n = time.perf_counter() - t0, len(micro)
        ce = torch.zeros((), device=self.device)
        extra = torch.zeros(3, device=self.device)  # z-loss, MoE aux loss, MoE z-loss
        counts: dict[str, torch.Tensor] = {}  # MoE layer -> (E,) assignments this step
        for i, (inputs, targets) in enumerate(micro):
            if isinstance(self.model, FSDPModule):  # FSDP reduces once, after the last one
                self.model.set_requires_gradient_sync(i == n - 1)
            out = self._forward(inputs, targets)
            (out.loss / n).backward()
            ce, extra = ce + out.ce, extra + extra_losses(out)  # logged: cross-entropy only
            for name, c in out.moe_counts.items():
                counts[name] = counts[name] + c if name in counts else c
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.cfg.train.grad_clip or float("inf")
        )
        if isinstance(grad_norm, DTensor):  # sharded gradients: the global norm
            grad_norm = grad_norm.full_tensor()
        result = StepResult(ce / n, extra[0] / n, extra[1:] / n, counts, grad_norm, data_wait)
        if self.guard.factor > 0:  # before the update: the weights that made the spike
            losses = functools.partial(sequence_losses, self._forward, micro)
            rows = functools.partial(self.batches.spike_rows, step, self.source_names)
            check_spike(self.guard, step, result.loss, self.run.spikes, losses, rows)
        found_inf = self.guard.found_inf(result.loss, grad_norm, step) if self.guard.skips else None
        guarded_update(
            self.optimizer, found_inf, functools.partial(update_router_bias, self.model, counts)
        )
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def _forward(
        self, inputs: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | ModelOutput:
        """The model under autocast; with `model.document_mask`, document ids for attention."""
        eos = self.train_shards.eos_id
        segments = segment_ids_from_tokens(inputs, eos) if self.cfg.model.document_mask else None
        with dist.autocast(self.device, self.dtype):
            return self.model(inputs, targets, segment_ids=segments)

    def evaluate(self) -> float | None:
        """Mean loss over the fixed validation batches (None without a val split); a
        mixture scores each source (`source_losses`), the first one is the run's."""
        self.model.eval()
        if not self.val_sources:
            return validation_loss(self._forward, self.val_batches, self.device)
        batches = self.val_sources.items()
        self.source_losses = {n: validation_loss(self._forward, b, self.device) for n, b in batches}
        return next(iter(self.source_losses.values()))

    def maybe_checkpoint(self, step: int, force: bool = False) -> None:
        every, pinned = self.cfg.checkpoint.every, step in self.resume_writer.pinned
        if force or pinned or step % every == 0 or step == self.cfg.train.max_steps:
            self._wait_publication(step, before=step)  # revisions up to `latest`: complete
            then = "its resume checkpoint was not written and "
            ensure_finite(self.model, step, self.run.resume, then)
            state = {"tokens": step * self.tokens_per_step}
            state["model_config"] = self.cfg.model.to_dict()
            state["unlogged_records"] = self.unlogged  # metrics.jsonl was full (stops.py)
            state["unpublished"] = self.unpublished  # a publication failed (stops.py)
            if self.ledger is not None:
                self.ledger.flush_if_room()  # the ledger up to `latest`, where it fits
            if self.published_loss[0] == step:  # a revision of this step may still be
                state["last_batch_loss"] = self.published_loss[1]  # writing: rewritable as is
            self.resume_writer.save(step, self.model, self.optimizer, state)

    def maybe_publish(self, step: int, batch_loss: float | None, val_loss: float | None) -> None:
        """Publish revision `step` if it is on the schedule. Every process calls it: the
        evaluation and the gathering of the sharded weights are collectives; rank 0 writes."""
        if step not in self.publish_at:
            return
        self._wait_publication(step)  # the manifest lists every earlier revision
        if self._already_published(step):
            return
        then = f"revision step{step} was not published and "  # never one of NaN weights
        ensure_finite(self.model, step, self.run.resume, then)
        if val_loss is None:
            val_loss = self.evaluate()
        self.published_loss = (step, batch_loss)
        tok_sha = self.train_shards.index["tokenizer_sha256"]
        fingerprint, windows = self.dataset_fingerprint, self.batches.n_windows
        cursor = DataCursor.at(self.cfg, step, fingerprint, tok_sha, windows).to_dict()
        parent = Manifest.read(self.run.checkpoints).parent_of(step)
        info = {"parent": parent, "tokens": step * self.tokens_per_step,
                "last_batch_loss": batch_loss, "val_loss": val_loss, "data": cursor,
                "eval_dtype": eval_dtype(self.dtype, self.cfg.train.param_dtype),
                "run": self.cfg.to_dict()}  # fmt: skip
        if self.fork:  # the parent run, the fork step, the changed keys
            info["fork"] = self.fork
        if self.cfg.publish.training_state:  # its full state, run-relative
            info["training_state"] = (
                self.run.resume_step(step).relative_to(self.run.root).as_posix()
            )
        if self.ledger is not None:  # where the data ledger stands at this revision
            info["ledger"] = self.ledger.position(step)
        if self.source_records:  # a mixture: its sources, their validation losses
            info |= {"sources": self.source_records, "source_val_loss": self.source_losses}
        if self.loop_tasks is not None:  # train.eval_tasks: the harness, every process
            vocab = self.train_shards.vocab_size
            info["tasks"] = self.loop_tasks.run(self.model, self._forward, self.tokenizer, vocab)
            self._log_line(step, self.logger, {"step": step, **info["tasks"]["columns"]})
        if self.cfg.model.moe is not None:
            info["moe_routing"] = validation_routing(self._forward, self.val_batches, self.device)
        self.publisher.publish(step, self.model, self.cfg.model, self.tokenizer, info)

    def _already_published(self, step: int) -> bool:
        """Published revisions are immutable: after a resume, one already there (folders
        are renamed into place complete) is kept and only re-entered in the manifest, in
        case a kill came between the rename and the manifest update. Rank 0 decides."""
        meta = RevisionMeta.read(self.run.revision(step)) if dist.is_rank0() else None
        if not dist.rank0_decides(meta is not None, self.device):
            return False
        if dist.is_rank0():
            update_manifest(self.run.checkpoints, meta)
        dist.barrier()
        return True

    def _log(self, step: int, out: StepResult, val_loss: float | None, since: int, elapsed: float):
        """A log step (collectives): the guard's counters, the record; `RunStopped` when the
        loss is not finite and bad steps are not skipped, or when the run diverged.
        Returns the logged (global) loss."""
        reading = self.guard.report(step, since)
        lr = self.optimizer.param_groups[0]["lr"]
        digest = batch_digest(self.batches.last_rows, self.device)
        record = self.records.build(
            step, out, elapsed, step - since, lr, digest, reading, self.guard.spikes
        )
        record["val_loss"] = val_loss
        if val_loss is not None:  # `val_loss/<source>` of a mixture
            record |= {f"val_loss/{n}": v for n, v in self.source_losses.items()}
        self._log_line(step, self.logger, record)
        if record["loss"] is None and self.cfg.train.max_bad_steps == 0:
            raise RunStopped(self.guard.not_finite(step))
        if reading is not None and reading.diverged_at:  # max_bad_steps in a row
            self._save_or_stop(step, force=True)
            self.resume_writer.wait()
            raise RunStopped(self.guard.divergence(reading.diverged_at, step))
        then = f"revision step{step} was not published and " if step in self.publish_at else ""
        ensure_finite(self.model, step, self.run.resume, then)  # a collective, a sync point
        return record["loss"]

    def fit(self) -> None:
        step = self.step
        # step 0, or a revision of the resumed step that a kill cut short (in the
        # background, or before the manifest update): the same weights and train loss
        resumed_loss = self.published_loss[1] if self.published_loss[0] == step else None
        self.maybe_publish(step, resumed_loss, None)
        if step == 0 and self.cfg.publish.training_state:
            self._save_or_stop(0, force=True)  # the state of revision step0
        preemption = Preemption().install()
        try:
            step = self._loop(step, preemption)
            with self._writing(self.run.resume):  # the last checkpoint is complete
                self.resume_writer.wait()
            self._wait_publication(step)
        finally:
            with contextlib.suppress(OSError):  # already raised, or another error is
                self.publisher.close()  # rank 0's thread: no collective
            if dist.world_size() == 1:  # an error on one rank must not wait on the others
                self.resume_writer.wait()
            preemption.uninstall()
            self.logger.close()
        self.step = step

    def _loop(self, step: int, preemption: Preemption) -> int:
        """Train from `step` to `train.max_steps` or a stop signal; returns the last step."""
        t = self.cfg.train
        last_log, t_last = step, time.perf_counter()
        while step < t.max_steps:
            out = self.train_step(step)
            if self.ledger is not None:  # rank 0: what batch `step` was made of
                self.ledger.record(step)
            step += 1
            self.logger.advance()
            t_side = time.perf_counter()  # eval and publication are not training time
            val_loss = self.evaluate() if t.eval_every and step % t.eval_every == 0 else None
            loss = None
            if step % self.cfg.log.every == 0 or step == t.max_steps or val_loss:
                loss = self._log(step, out, val_loss, last_log, t_side - t_last)
                last_log, t_last = step, t_side
            if step in self.publish_at:
                if loss is None:  # every process takes part in the reduction
                    loss = finite_or_none(dist.all_reduce_mean(out.loss).item())
                with self._keeping_work(step, self.run.revision(step)):
                    self.maybe_publish(step, loss, val_loss)
            self._check_background(step, log_step=loss is not None)
            stop = preemption.requested()
            self._save_or_stop(step, force=stop)
            t_last += time.perf_counter() - t_side
            if stop:
                self.preempted = True
                dist.print0(
                    f"stopped by signal at step {step}: resume checkpoint written to "
                    f"{self.run.resume}; rerun the same command to continue"
                )
                break
        return step
