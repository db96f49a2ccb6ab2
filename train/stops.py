"""Failed writes inside a run: stop at once, with the training done kept.

A write can fail late: a background publication (`publish.async`) into a full
`checkpoints/`, a synchronous publication, or a line of `metrics.jsonl`. The rule for
all three: the failure is reported at the step it is seen (a background write is polled
after every step), a resume checkpoint of that step is written at once where there is
room (`resume/` may be on another disk), and the run stops (`RunStopped`, exit 1) with
one line naming both the write that failed and the checkpoint written (or, when that
write fails too, the last complete one). Nothing is retried in a loop.

A revision that was not published is not lost: the checkpoint it can be rebuilt from is
kept (one more than `checkpoint.keep` once), and the rerun resumes from the newest
checkpoint at or before the missing revision and publishes it again
(`train/build.resume`).

Under torchrun, every process must take part in the checkpoint: a background or
metrics failure is seen by rank 0 alone, so it is shared at log steps (a broadcast,
where the run syncs anyway) and every process stops there; a failure inside a
collective (a synchronous publication) stops as `faults.write_guard` says, with the
last complete checkpoint kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata.run.layout import latest_resume, revision_step
from strata.train import dist
from strata.train.faults import RunStopped, write_error, write_guard

if TYPE_CHECKING:
    from strata.checkpoints.publish import Publisher
    from strata.checkpoints.resume import ResumeWriter
    from strata.run import RunPaths

_PASSES = (RunStopped, KeyboardInterrupt, SystemExit, GeneratorExit)


class WriteFaults:
    """The trainer's part that handles failed writes (a mixin of `Trainer`)."""

    run: RunPaths
    publisher: Publisher
    resume_writer: ResumeWriter
    device: Any
    unlogged: tuple[dict[str, Any], ...] = ()
    """Metrics records a full disk kept out of metrics.jsonl, kept in the checkpoint."""
    unpublished: tuple[int, ...] = ()
    """Revisions whose publication failed: the rerun resumes from before them."""

    def maybe_checkpoint(self, step: int, force: bool = False) -> None:  # pragma: no cover
        raise NotImplementedError

    def _writing(self, where: Path):
        """`faults.write_guard`: a failed write at `where` (disk full) stops the run."""
        return write_guard(where, self.run.resume)

    def _save_or_stop(self, step: int, force: bool = False) -> None:
        with self._writing(self.run.resume):
            self.maybe_checkpoint(step, force=force)

    def _wait_publication(self, step: int, before: int | None = None) -> None:
        """`Publisher.wait` at `step`: a failed background write stops the run, keeping
        the work of `step` (`_keeping_work`)."""
        pending = self.publisher.pending
        with self._keeping_work(step, self.run.revision(pending[0] if pending else step)):
            self.publisher.wait(before)

    @contextlib.contextmanager
    def _keeping_work(self, step: int, where: Path) -> Iterator[None]:
        """A failed write at `where` inside: one process keeps the work of `step` (a
        resume checkpoint) and stops; several stop as `write_guard` says (a collective
        may be half done on the others)."""
        if dist.world_size() > 1:
            with self._writing(where):
                yield
            return
        try:
            yield
        except BaseException as err:
            cause = None if isinstance(err, _PASSES) else write_error(err, where)
            if cause is None:
                raise
            self._stop_keeping_work(step, where, cause, err)

    def _check_background(self, step: int, log_step: bool) -> None:
        """After every step: a background publication that failed stops the run now,
        with a resume checkpoint of `step` (several processes: at log steps)."""
        failed = self.publisher.failed() if dist.is_rank0() else None
        if dist.world_size() > 1:
            if not log_step or not dist.rank0_decides(failed is not None, self.device):
                return
        elif failed is None:
            return
        where, err = (self.run.revision(failed[0]), failed[1]) if failed else (self.run.root, None)
        cause = write_error(err, where) if err is not None else OSError("see rank 0")
        if cause is None:  # not a write failure: a defect, raised as it is
            self.publisher.discard()
            raise err
        self._stop_keeping_work(step, where, cause, err)

    def _log_line(self, step: int, logger: Any, record: dict[str, Any]) -> None:
        """`logger.log(record)` at log step `step` (a point every process reaches); a
        failed metrics.jsonl write stops the run with a resume checkpoint of `step`."""
        failed = None
        try:
            logger.log(record)
        except OSError as err:
            failed = err
            self.unlogged = (record,)  # written by the rerun, from the checkpoint
        if dist.rank0_decides(failed is not None, self.device):
            where = logger.path
            self._stop_keeping_work(step, where, failed or OSError("see rank 0"), failed)

    def _stop_keeping_work(
        self, step: int, where: Path, cause: OSError, err: BaseException | None
    ) -> None:
        """Write a resume checkpoint of `step`, then raise `RunStopped` naming both."""
        self.publisher.discard()  # the failed write: its folder is already removed
        failed = revision_step(where.name) if where.parent == self.run.checkpoints else None
        if failed is not None:
            self.unpublished = (failed,)
        self.resume_writer.keep += 1  # the checkpoint a missing revision is rebuilt from
        try:
            self.maybe_checkpoint(step, force=True)
            self.resume_writer.wait()
            latest = latest_resume(self.run.resume)
            kept = f"the run stopped with a resume checkpoint of step {step}, {latest}"
        except BaseException as second:
            again = None if isinstance(second, _PASSES) else write_error(second, self.run.resume)
            if again is None:
                raise
            latest = latest_resume(self.run.resume)
            kept = (
                f"the resume checkpoint of step {step} could not be written either "
                f"({again.strerror or again}); "
                + (f"the last complete one, {latest}, is intact" if latest else "none is kept")
            )
        lost = ""
        if where.parent == self.run.checkpoints:
            lost = f"revision {where.name} was not published (the rerun publishes it); "
        raise RunStopped(
            f"{where}: writing failed ({cause.strerror or cause}) after step {step}; {lost}"
            f"{kept}. Free space and rerun the same command to resume"
        ) from err
