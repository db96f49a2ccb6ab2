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
- `.stepN.tmp` folders (a publication in progress or abandoned) and other entries that
  are not revisions are notes, not problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.checkpoints.provenance import manifest_entries, read_config
from strata.checkpoints.schedule import publish_steps
from strata.tokenizer.tok import Tokenizer

STEP_DIR = re.compile(r"step(\d+)")
SAFE_NAME = re.compile(r"[^./\\][^/\\]*")
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


def locate(path: str | Path) -> tuple[Path | None, Path]:
    """(run folder or None, checkpoints folder) for a run folder or its checkpoints/."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        return path, path / "checkpoints"
    if path.is_dir() and any(p.name == "manifest.json" or STEP_DIR.fullmatch(p.name)
                             for p in path.iterdir()):  # fmt: skip
        return (path.parent if (path.parent / "config.toml").is_file() else None), path
    raise ValueError(f"{path}: not a run folder (with checkpoints/) or a checkpoints folder")


def _hash(path: Path, bar: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def _read_meta(folder: Path, step: int, report: Report) -> dict[str, Any] | None:
    path = folder / "strata.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        report.add("bad-metadata", path, f"unreadable ({err})")
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
        report.add("bad-metadata", path, "no 'sha256' map of the revision's files")
        return None
    if meta.get("step") != step or meta.get("revision", folder.name) != folder.name:
        detail = f"says step {meta.get('step')!r}, revision {meta.get('revision')!r}"
        report.add("step-mismatch", path, f"{detail}, in folder {folder.name}")
    return meta


def _check_files(folder: Path, listed: dict, bar: Any, report: Report) -> str | None:
    """Re-hash a revision's files against `listed`; returns a hash of its weights."""
    present = {p.name: p for p in folder.iterdir() if p.name != "strata.json"}
    actual = {n: _hash(p, bar) for n, p in sorted(present.items()) if p.is_file()}
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
        elif entry.is_dir() and (m := STEP_DIR.fullmatch(entry.name)):
            folders[entry.name] = int(m[1])
        elif re.fullmatch(r"\.step\d+\.tmp", entry.name):
            report.notes.append(f"{entry}: publication in progress or abandoned (ignored)")
        elif entry.name != "manifest.json":
            report.notes.append(f"{entry}: not a revision (ignored)")
    return folders


def _check_manifest(ckpt: Path, folders: dict[str, int], report: Report) -> dict[str, int]:
    """Manifest entries vs folders; returns every known revision (name -> step)."""
    path, known, seen = ckpt / "manifest.json", dict(folders), set()
    try:
        entries = manifest_entries(ckpt)
        if entries is None and folders:
            report.add("bad-manifest", path, "missing: every revision is unlisted")
    except ValueError as err:
        entries = None
        report.add("bad-manifest", path, str(err).split(": ", 1)[-1])
    for entry in entries or []:
        name, step = entry.get("revision"), entry.get("step")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            report.add("unsafe-revision-name", path, f"{name!r} is not a folder inside {ckpt}")
            continue
        if name in seen:
            report.add("duplicate-revision", path, f"{name} is listed twice")
        seen.add(name)
        if name not in folders:
            report.add("missing-revision", ckpt / name, "in the manifest, folder missing")
        m = STEP_DIR.fullmatch(name)
        if m is None or int(m[1]) != step:
            report.add("step-mismatch", path, f"entry {name!r} has step {step!r}")
        known.setdefault(name, int(m[1]) if m else step if isinstance(step, int) else -1)
    for name in sorted(set(folders) - seen, key=folders.get) if entries is not None else ():
        report.add("unlisted-revision", ckpt / name, "folder not in the manifest")
    return known


def _check_schedule(cfg: dict, known: dict[str, int], ckpt: Path, report: Report) -> None:
    """Every scheduled step up to the last published one must have been published."""
    train, pub = cfg.get("train", {}), cfg.get("publish", {})
    if "max_steps" not in train or not known:
        return
    schedule = publish_steps(train["max_steps"], pub.get("every", 1000),
                             pub.get("extra_steps", ()), pub.get("log_spaced", True))  # fmt: skip
    for step in sorted({s for s in schedule if s <= max(known.values())} - set(known.values())):
        report.add("missing-scheduled", ckpt / f"step{step}", "scheduled but not published")


def _expected_ledger(run: Path | None, cfg: dict | None, report: Report) -> dict[str, tuple]:
    """(value, where from) of ledger fields fixed by the run's own files."""
    expect = {k: (v, "config.toml") for k, v in (cfg or {}).get("train", {}).items()
              if k in ("seed", "seq_len", "global_batch_size")}  # fmt: skip
    if run is not None and (run / "tokenizer").is_dir():
        try:
            sha = Tokenizer.load(run / "tokenizer").sha256()
            expect["tokenizer_sha256"] = (sha, "RUN/tokenizer")
        except (ValueError, FileNotFoundError) as err:
            report.add("tokenizer-mismatch", run / "tokenizer", f"cannot load ({err})")
    return expect


def _check_chain(metas: dict, known: dict[str, int], expect: dict, ckpt: Path, report: Report):
    """`parent` links, batches_seen == step, ledger fields constant over the run."""
    prev = None
    for name in sorted(known, key=lambda n: (known[n], n)):
        meta, path = metas.get(name) or {}, ckpt / name / "strata.json"
        if "parent" in meta and meta["parent"] != prev:
            report.add("chain-parent", path, f"parent {meta['parent']!r}, expected {prev!r}")
        prev, data = name, meta.get("data")
        if not isinstance(data, dict):
            continue
        if "batches_seen" in data and data["batches_seen"] != known[name]:
            detail = f"batches_seen {data['batches_seen']!r} at step {known[name]}"
            report.add("chain-batches", path, detail)
        consumed = known[name] * data.get("global_batch_size", 0)
        if data.get("windows_consumed", consumed) != consumed:
            detail = f"windows_consumed {data['windows_consumed']!r}, expected {consumed}"
            report.add("chain-batches", path, detail)
        for key in (k for k in LEDGER_KEYS if k in data):
            value, where = expect.setdefault(key, (data[key], name))
            if value != data[key]:
                kind = "tokenizer-mismatch" if key == "tokenizer_sha256" else "data-mismatch"
                report.add(kind, path, f"data.{key} {data[key]!r} but {where} has {value!r}")


def check(path: str | Path, progress: bool | None = None) -> Report:
    """Check every revision under `path` (a run folder or its checkpoints/ folder);
    `progress`: a tqdm bar over the bytes hashed (default: when stderr is a terminal)."""
    run, ckpt = locate(path)
    report, metas, weights = Report(), {}, {}
    folders = _scan_folders(ckpt, report)
    known = _check_manifest(ckpt, folders, report)
    bar = None
    if sys.stderr.isatty() if progress is None else progress:
        from tqdm import tqdm

        size = sum(f.stat().st_size for n in folders for f in (ckpt / n).iterdir() if f.is_file())
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="verify", leave=False)
    try:
        for name, step in sorted(folders.items(), key=lambda kv: kv[1]):
            report.revisions += 1
            if (meta := _read_meta(ckpt / name, step, report)) is not None:
                metas[name] = meta
                weights[name] = _check_files(ckpt / name, meta["sha256"], bar, report)
    finally:
        if bar is not None:
            bar.close()
    first: dict[str, str] = {}
    for name in (n for n in sorted(weights, key=folders.get) if weights[n]):
        if (other := first.setdefault(weights[name], name)) != name:
            report.add("identical-weights", ckpt / name, f"same weights as {other}")
    try:
        cfg = read_config(run) if run is not None else None
    except ValueError as err:
        cfg = None
        report.add("bad-config", run / "config.toml", str(err).split(": ", 1)[-1])
    if cfg is not None:
        _check_schedule(cfg, known, ckpt, report)
    _check_chain(metas, known, _expected_ledger(run, cfg, report), ckpt, report)
    return report


def verify(path: str | Path) -> list[Problem]:
    """Every problem found under `path` (empty when the checkpoints are clean)."""
    return check(path, progress=False).problems
