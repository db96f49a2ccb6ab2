"""`strata verify`'s checks of a fork (`strata train CONFIG --from RUN/checkpoints/stepN`).

Design choices:
- Reported as `fork-mismatch`, never raised: a revision whose `fork` record differs
  from `RUN/fork.json` (or, without it, from the other revisions'), a malformed record,
  a fork point (its step N) that was not published, a fork point whose weights
  (sha256 of its `*.safetensors` files) differ from the parent's revision, and a
  ledger whose first N steps are not the parent's (their ledger positions at N).
- The parent is found at the recorded `parent_run`; when it is not there (a fork
  copied alone), what needs it is left unchecked and a note says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from strata.run.jsonfile import read_object
from strata.run.layout import REVISION_META, revision_name
from strata.run.ledger import INDEX, LEDGER_DIR, Ledger
from strata.run.meta import RevisionMeta

FORK_FILE = "fork.json"
Add = Callable[[str, Path | str, str], None]


def fork_step(root: Path | None, metas: dict[str, RevisionMeta]) -> int | None:
    """The fork step of the run (None for a run that is no fork, or a bad record)."""
    record = _record(root, metas)
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _record(root: Path | None, metas: dict[str, RevisionMeta]) -> Any:
    if root is not None and (root / FORK_FILE).is_file():
        try:
            return read_object(root / FORK_FILE)
        except (OSError, ValueError) as err:
            return f"unreadable ({err})"
    return next((m.extra["fork"] for m in metas.values() if "fork" in m.extra), None)


def check_fork(root: Path | None, metas: dict[str, RevisionMeta], ckpt: Path, add: Add,
               note: Callable[[str], None]) -> None:  # fmt: skip
    """Every check above."""
    record = _record(root, metas)
    if record is None:
        return
    where = root / FORK_FILE if root is not None else ckpt
    keys = {"parent_run": str, "parent_revision": str, "step": int, "changed": dict}
    if not isinstance(record, dict) or any(
        not isinstance(record.get(k), t) or isinstance(record.get(k), bool) for k, t in keys.items()
    ):
        add("fork-mismatch", where, f"fork record {record!r:.100}: expected {list(keys)}")
        return
    for name, meta in sorted(metas.items()):
        if meta.extra.get("fork") != record:
            add("fork-mismatch", ckpt / name / REVISION_META, "its fork record is not the run's")
    point, parent = revision_name(record["step"]), Path(record["parent_run"])
    if point not in metas:
        add("fork-mismatch", ckpt / point, f"the fork point {point} is not published")
    elif not (parent / "checkpoints" / record["parent_revision"]).is_dir():
        note(f"fork of {parent}: the parent is not there; the fork point is unchecked")
        return
    else:
        _compare_point(metas[point], parent / "checkpoints" / record["parent_revision"],
                       ckpt / point, add)  # fmt: skip
    if root is not None:
        _compare_ledgers(root, parent, record["step"], add)


def _weights(meta: RevisionMeta) -> dict[str, str]:
    return {k: v for k, v in meta.sha256.items() if k.endswith(".safetensors")}


def _compare_point(meta: RevisionMeta, parent: Path, folder: Path, add: Add) -> None:
    try:
        theirs = RevisionMeta.read(parent)
    except (OSError, ValueError) as err:
        add("fork-mismatch", folder, f"the parent's revision {parent} is unreadable ({err})")
        return
    if theirs is None or not _weights(meta) or _weights(meta) != _weights(theirs):
        add("fork-mismatch", folder, f"its weights are not the parent's {parent}")


def _compare_ledgers(root: Path, parent: Path, step: int, add: Add) -> None:
    ours, theirs = root / LEDGER_DIR, parent / LEDGER_DIR
    if not (ours / INDEX).is_file() or not (theirs / INDEX).is_file():
        return
    try:
        same = Ledger.read(ours).position(step) == Ledger.read(theirs).position(step)
    except (OSError, ValueError):
        return  # the ledger checks report it
    if not same:
        add("fork-mismatch", ours, f"its first {step} steps are not the parent's ledger's")
