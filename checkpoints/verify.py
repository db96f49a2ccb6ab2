"""The checkpoint ledger check behind `strata verify RUN_OR_DIR`.

Design choices:
- Report, never raise, on what is wrong with the checkpoints: every problem is a
  `Problem(kind, path, detail)` and the check goes on, so one run lists them all. Only
  a path that is neither a run nor a checkpoints folder is an error (ValueError).
- Every file of every revision is re-hashed once; weights are compared by the hash of
  their bytes, so two revisions holding the same weights (Pythia's bug) are caught
  even when each strata.json is self-consistent.
- Manifest revision names are checked before they are joined to a path: a name with
  a separator or a leading dot (`..`, `/abs`, `.x`) is a problem, never a file to open.
- The ledger chain is checked where its fields exist (older revisions lack them):
  `parent` names the previous revision by step (null for the first); `data.batches_seen`
  equals the step and `windows_consumed` step x global batch size; and
  `data.tokenizer_sha256`, `dataset_fingerprint`, `seed`, `seq_len`, `global_batch_size`,
  `n_windows` are the same in every revision and agree with the run's tokenizer and
  `config.toml` when those exist.
- The publication schedule comes from `config.toml`, or, for a folder without one (a
  copied `checkpoints/`), from the run config every `strata.json` records.
- `.stepN.tmp` folders (a publication in progress or abandoned) and other entries that
  are not revisions are notes, not problems.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.checkpoints.fork_check import check_fork, fork_step
from strata.checkpoints.ledger_check import check_ledger
from strata.checkpoints.schedule import publish_steps
from strata.checkpoints.state_check import check_states
from strata.run import Manifest, RevisionMeta, locate
from strata.run.config import Config
from strata.run.config import from_dict as config_from_dict
from strata.run.layout import MANIFEST, REVISION_META, TMP_REVISION, RunPaths, revision_step
from strata.tokenizer.tok import Tokenizer

LEDGER_KEYS = ("tokenizer_sha256", "dataset_fingerprint", "seed", "seq_len",
               "global_batch_size", "n_windows")  # fmt: skip


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"PROBLEM {self.kind} {self.path}: {self.detail}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    revisions: int = 0
    files: int = 0
    bytes: int = 0

    def add(self, kind: str, path: Path | str, detail: str) -> None:
        self.problems.append(Problem(kind, str(path), detail))


def _locate(path: str | Path) -> tuple[RunPaths | None, Path]:
    """(the run or None, its checkpoints folder) for a run folder or a checkpoints folder."""
    where = locate(path)
    if where.kind not in ("run", "checkpoints", "revisions"):
        raise ValueError(f"{path}: not a run folder (with checkpoints/) or a checkpoints folder")
    if where.kind == "run" and not where.run.checkpoints.is_dir():
        raise ValueError(f"{path}: a run folder with no checkpoints/ yet")
    return where.run, where.checkpoints


def _hash(path: Path, bar: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def _read_meta(folder: Path, step: int, report: Report) -> RevisionMeta | None:
    path = folder / REVISION_META
    try:
        meta = RevisionMeta.read(folder)
    except (OSError, ValueError) as err:
        report.add("bad-metadata", path, f"unreadable ({str(err).removeprefix(f'{path}: ')})")
        return None
    if meta is None or not meta.sha256:
        report.add("bad-metadata", path, "no 'sha256' map of the revision's files")
        return None
    if meta.step != step or (meta.revision or folder.name) != folder.name:
        detail = f"says step {meta.step!r}, revision {meta.revision!r}"
        report.add("step-mismatch", path, f"{detail}, in folder {folder.name}")
    if meta.eval_dtype not in (None, "fp32", "bf16"):
        report.add("bad-metadata", path, f"eval_dtype {meta.eval_dtype!r}: expected fp32 or bf16")
    if (problem := tasks_problem(meta.extra.get("tasks"))) is not None:
        report.add("bad-metadata", path, problem)
    return meta


def tasks_problem(tasks: Any) -> str | None:
    """Why a revision's `tasks` record (train.eval_tasks) is malformed, or None."""
    if tasks is None:
        return None
    columns = tasks.get("columns") if isinstance(tasks, dict) else None
    if not isinstance(columns, dict) or not isinstance(tasks.get("harness"), str):
        return "tasks: expected {columns, harness, configs, limit}"
    for key, value in columns.items():
        if (
            not key.startswith("task/")
            or isinstance(value, bool)
            or not (value is None or isinstance(value, int | float))
        ):
            return f"tasks: column {key!r:.80} = {value!r:.40}: expected task/... = a number"
    return None


def _check_files(folder: Path, listed: dict, bar: Any, report: Report) -> str | None:
    """Re-hash a revision's files against `listed`; returns a hash of its weights."""
    present = {p.name: p for p in folder.iterdir() if p.name != REVISION_META}
    for p in sorted(present.values()):
        if p.is_symlink():  # never followed: it could point anywhere
            report.add("symlink", p, f"a link to {os.readlink(p)}; revision files must be regular")
    actual = {
        n: _hash(p, bar) for n, p in sorted(present.items()) if p.is_file() and not p.is_symlink()
    }
    report.files += len(actual)
    report.bytes += sum(present[n].stat().st_size for n in actual)
    for name, digest in sorted(listed.items()):
        if name not in actual:
            report.add("missing-file", folder / name, "listed in strata.json, not in the folder")
        elif actual[name] != digest:
            detail = f"sha256 {actual[name][:16]}... but strata.json has {str(digest)[:16]}..."
            report.add("hash-mismatch", folder / name, detail)
    for name in sorted(set(present) - set(listed)):
        report.add("extra-file", folder / name, "in the folder, not listed in strata.json")
    weights = "".join(actual[n] for n in sorted(actual) if n.endswith(".safetensors"))
    return hashlib.sha256(weights.encode()).hexdigest() if weights else None


def _scan_folders(ckpt: Path, report: Report) -> dict[str, int]:
    folders = {}
    for entry in sorted(ckpt.iterdir()):
        if entry.is_symlink():  # it could point anywhere: never followed
            report.add("symlink", entry, f"a link to {os.readlink(entry)}, not part of the run")
        elif entry.is_dir() and (step := revision_step(entry.name)) is not None:
            folders[entry.name] = step
        elif TMP_REVISION.fullmatch(entry.name):
            report.notes.append(f"{entry}: publication in progress or abandoned (ignored)")
        elif entry.name != MANIFEST:
            report.notes.append(f"{entry}: not a revision (ignored)")
    return folders


def _check_manifest(ckpt: Path, folders: dict[str, int], report: Report) -> dict[str, int]:
    """Manifest entries vs folders; returns every known revision (name -> step)."""
    path, known, seen = ckpt / MANIFEST, dict(folders), set()
    try:
        manifest = Manifest.read(ckpt, on_bad=lambda kind, detail: report.add(kind, path, detail))
        if not manifest.exists and folders:
            report.add("bad-manifest", path, "missing: every revision is unlisted")
    except ValueError as err:
        manifest = None
        report.add("bad-manifest", path, str(err).split(": ", 1)[-1])
    for entry in manifest.revisions if manifest else []:
        if entry.revision in seen:
            report.add("duplicate-revision", path, f"{entry.revision} is listed twice")
        seen.add(entry.revision)
        if entry.revision not in folders:
            report.add("missing-revision", ckpt / entry.revision, "in the manifest, folder missing")
        known.setdefault(entry.revision, entry.step)
    unlisted = sorted(set(folders) - seen, key=folders.get) if manifest and manifest.exists else ()
    for name in unlisted:
        report.add("unlisted-revision", ckpt / name, "folder not in the manifest")
    return known


def _check_schedule(cfg: Config, known: dict[str, int], ckpt: Path, report: Report,
                    first: int | None = None) -> None:  # fmt: skip
    """Every scheduled step from `first` up to the last published one must have been
    published."""
    if not known:
        return
    pub, low, high = cfg.publish, first or 0, max(known.values())
    schedule = publish_steps(cfg.train.max_steps, pub.every, pub.extra_steps, pub.log_spaced)
    for step in sorted({s for s in schedule if low <= s <= high} - set(known.values())):
        report.add("missing-scheduled", ckpt / f"step{step}", "scheduled but not published")


def _expected_ledger(run: RunPaths | None, cfg: Config | None, report: Report) -> dict:
    """(value, where from) of ledger fields fixed by the run's own files."""
    expect: dict[str, tuple] = {}
    if cfg is not None:
        t = cfg.train
        expect = {k: (getattr(t, k), "config.toml") for k in ("seed", "seq_len",
                                                             "global_batch_size")}  # fmt: skip
    if run is not None and run.tokenizer.is_dir():
        try:
            expect["tokenizer_sha256"] = (Tokenizer.load(run.tokenizer).sha256(), "RUN/tokenizer")
        except (ValueError, FileNotFoundError) as err:
            report.add("tokenizer-mismatch", run.tokenizer, f"cannot load ({err})")
    return expect


def _check_chain(metas: dict, known: dict[str, int], expect: dict, ckpt: Path, report: Report):
    """`parent` links, batches_seen == step, ledger fields constant over the run."""
    prev = None
    for name in sorted(known, key=lambda n: (known[n], n)):
        meta, path = metas.get(name), ckpt / name / REVISION_META
        if meta is not None and "parent" in meta.recorded and meta.parent != prev:
            report.add("chain-parent", path, f"parent {meta.parent!r}, expected {prev!r}")
        prev, data = name, meta.data if meta is not None else None
        if data is None:
            continue
        if data.batches_seen is not None and data.batches_seen != known[name]:
            detail = f"batches_seen {data.batches_seen!r} at step {known[name]}"
            report.add("chain-batches", path, detail)
        consumed = known[name] * (data.global_batch_size or 0)
        if data.windows_consumed is not None and data.global_batch_size is None:
            detail = "data.global_batch_size is missing or null; windows_consumed is unchecked"
            report.add("bad-metadata", path, detail)
        elif data.windows_consumed is not None and data.windows_consumed != consumed:
            detail = f"windows_consumed {data.windows_consumed!r}, expected {consumed}"
            report.add("chain-batches", path, detail)
        for key in (k for k in LEDGER_KEYS if getattr(data, k) is not None):
            got = getattr(data, key)
            value, where = expect.setdefault(key, (got, name))
            if value != got:
                kind = "tokenizer-mismatch" if key == "tokenizer_sha256" else "data-mismatch"
                report.add(kind, path, f"data.{key} {got!r} but {where} has {value!r}")


_SOURCE_KEYS = {"name": str, "dataset": str, "fingerprint": str, "weight": int}


def _check_sources(metas: dict, known: dict[str, int], ckpt: Path, report: Report) -> None:
    """A mixture's `sources` (name, dataset, index.json sha256, integer weight): well
    formed, and the same in every revision of the run."""
    first: tuple[str, Any] | None = None
    for name in sorted(metas, key=lambda n: (known.get(n, 0), n)):
        sources, path = metas[name].extra.get("sources"), ckpt / name / REVISION_META
        if sources is None:
            continue
        ok = (
            isinstance(sources, list)
            and sources
            and all(
                isinstance(x, dict)
                and all(isinstance(x.get(k), t) for k, t in _SOURCE_KEYS.items())
                for x in sources
            )
        )
        if not ok:
            report.add("bad-metadata", path, "'sources': expected a list of {name, dataset, "
                       "fingerprint, weight}")  # fmt: skip
        elif first is None:
            first = (name, sources)
        elif sources != first[1]:
            report.add("data-mismatch", path, f"sources differ from {first[0]}'s")


def check(
    path: str | Path, progress: bool | None = None, recompute: bool = False,
    tolerance: float | None = None, device: str = "cpu",
) -> Report:  # fmt: skip
    """Check every revision under `path` (a run folder or its checkpoints/ folder);
    `progress`: tqdm bars (default: when stderr is a terminal). `recompute`: also
    evaluate every revision's val_loss again (checkpoints/recompute.py)."""
    progress = sys.stderr.isatty() if progress is None else progress
    run, ckpt = _locate(path)
    report, metas, weights = Report(), {}, {}
    folders = _scan_folders(ckpt, report)
    known = _check_manifest(ckpt, folders, report)
    bar = None
    if progress:
        from tqdm import tqdm

        size = sum(f.stat().st_size for n in folders for f in (ckpt / n).iterdir() if f.is_file())
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="verify", leave=False)
    try:
        for name, step in sorted(folders.items(), key=lambda kv: kv[1]):
            report.revisions += 1
            if (meta := _read_meta(ckpt / name, step, report)) is not None:
                metas[name] = meta
                weights[name] = _check_files(ckpt / name, meta.sha256, bar, report)
    finally:
        if bar is not None:
            bar.close()
    first: dict[str, str] = {}
    pairs = []  # (earlier, later) revisions holding the same weights
    for name in (n for n in sorted(weights, key=folders.get) if weights[n]):
        if (other := first.setdefault(weights[name], name)) != name:
            pairs.append((other, name))
            if not recompute:  # the recomputation names both, with the evidence
                report.add("identical-weights", ckpt / name, f"same weights as {other}")
    try:
        cfg = run.read_config() if run is not None else None
    except ValueError as err:
        cfg = None
        report.add("bad-config", run.config, str(err).split(": ", 1)[-1])
    schedule_cfg = cfg if cfg is not None else recorded_config(metas, report)
    if schedule_cfg is not None:  # a fork publishes from its fork step on
        _check_schedule(schedule_cfg, known, ckpt, report, fork_step(run and run.root, metas))
    _check_chain(metas, known, _expected_ledger(run, cfg, report), ckpt, report)
    _check_sources(metas, known, ckpt, report)
    check_states(run.root if run else None, cfg, metas, ckpt, report.add)
    check_fork(run.root if run else None, metas, ckpt, report.add, report.notes.append)
    if run is not None:  # the data ledger: hashes, revisions' positions, the order
        check_ledger(run.root, cfg, metas, ckpt, report.add)
    if recompute:
        _recompute(ckpt, run, metas, pairs, report, (tolerance, device, progress))
    return report


def _recompute(ckpt: Path, run, metas: dict, pairs: list, report: Report, how: tuple) -> None:
    from strata.checkpoints import recompute as rc

    tolerance, device, progress = how
    order = sorted(metas, key=lambda n: (metas[n].step or 0, n))
    root = run.root if run is not None else None
    measured = rc.measure(ckpt, root, metas, order, report.add, device, tolerance, progress)
    rc.check_falling(ckpt, [measured[n] for n in order], report.add)
    for pair in pairs:
        rc.judge_identical(ckpt, pair, measured, order, report.add)


def recorded_config(metas: dict[str, RevisionMeta], report: Report) -> Config | None:
    """The run config recorded in the newest `strata.json` that has one (every revision
    keeps a copy), for a folder without `config.toml`: its publish settings give the
    schedule. None when no revision records one."""
    for name, meta in sorted(metas.items(), key=lambda kv: -(kv[1].step or 0)):
        if meta.run:
            try:
                return config_from_dict(meta.run)
            except ValueError as err:
                report.add("bad-config", f"{name}/{REVISION_META}", f"run: {err}")
                return None
    return None


def verify(path: str | Path) -> list[Problem]:
    """Every problem found under `path` (empty when the checkpoints are clean)."""
    return check(path, progress=False).problems
