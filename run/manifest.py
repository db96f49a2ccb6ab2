"""`checkpoints/manifest.json`: one entry per published revision, in step order.

Design choices:
- One reader (`Manifest.read`) and one writer (`Manifest.write`, atomic). An entry is
  a `ManifestEntry` whose `revision` is checked to be a `stepN` folder name matching its
  `step` before anything joins it to a path (`..`, `/abs`, `.x` are never opened).
- The reader is strict by default (the first bad entry is a one-line ValueError);
  `strata verify` passes `on_bad` to collect every bad entry as a problem and read on.
- `Manifest.add(meta)` replaces the entry of the same revision and keeps step order;
  `parent_of(step)` is the latest revision before `step` (the ledger chain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strata.run.fields import take
from strata.run.jsonfile import read_object, write_atomic
from strata.run.layout import MANIFEST, revision_name, revision_step
from strata.run.meta import FORMAT_VERSION, RevisionMeta

BadEntry = Callable[[str, str], None]
"""on_bad(kind, detail): kind is `unsafe-revision-name` or `step-mismatch`."""


@dataclass(frozen=True)
class ManifestEntry:
    revision: str
    step: int
    tokens: int | None = None
    last_batch_loss: float | None = None
    val_loss: float | None = None
    training_state: str | None = None
    """The run-relative resume checkpoint of this step (publish.training_state)."""

    @classmethod
    def from_dict(cls, raw: Any, where: Path) -> ManifestEntry:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: entry {raw!r:.60} is not an object")
        name = raw.get("revision")
        if not isinstance(name, str) or revision_step(name) is None:
            detail = f"revision {name!r:.60} is not a stepN folder inside {where.parent}"
            raise _Bad("unsafe-revision-name", detail)
        step = raw.get("step")
        if step != revision_step(name) or isinstance(step, bool):
            raise _Bad("step-mismatch", f"entry {name!r} has step {step!r:.40}")
        if "train_loss" in raw and "last_batch_loss" not in raw:  # the older name
            raw = {k: v for k, v in raw.items() if k != "train_loss"} | {
                "last_batch_loss": raw["train_loss"]
            }
        values = {k: take(raw, k, t, where) for k, t in
                  (("tokens", int), ("last_batch_loss", float), ("val_loss", float),
                   ("training_state", str))}  # fmt: skip
        return cls(name, step, **values)

    @classmethod
    def of(cls, meta: RevisionMeta) -> ManifestEntry:
        step = meta.step if meta.step is not None else -1
        state = meta.extra.get("training_state")
        return cls(meta.revision or revision_name(step), step, meta.tokens,
                   meta.last_batch_loss, meta.val_loss,
                   state if isinstance(state, str) else None)  # fmt: skip


class _Bad(ValueError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class Manifest:
    """The manifest of a checkpoints folder (empty when it has none yet)."""

    folder: Path
    revisions: list[ManifestEntry] = field(default_factory=list)
    exists: bool = False
    format_version: int = FORMAT_VERSION

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def read(cls, folder: str | Path, on_bad: BadEntry | None = None) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists() and not path.is_symlink():
            return cls(folder)  # a FIFO or a link is not missing: read_object refuses it
        raw = read_object(path)
        entries = raw.get("revisions")
        if not isinstance(entries, list):
            raise ValueError(f"{path}: 'revisions' must be a list of objects")
        revisions = []
        for entry in entries:
            try:
                revisions.append(ManifestEntry.from_dict(entry, path))
            except _Bad as bad:
                if on_bad is None:
                    raise ValueError(f"{path}: {bad}") from None
                on_bad(bad.kind, str(bad))
        version = raw.get("format_version", FORMAT_VERSION)
        return cls(folder, revisions, True, version if isinstance(version, int) else -1)

    def add(self, meta: RevisionMeta) -> None:
        """Add or replace the entry of `meta`'s revision, keeping step order."""
        entry = ManifestEntry.of(meta)
        kept = [r for r in self.revisions if r.revision != entry.revision]
        self.revisions = sorted([*kept, entry], key=lambda r: r.step)

    def parent_of(self, step: int) -> str | None:
        """The latest revision published before `step` (None for the first one)."""
        earlier = [r for r in self.revisions if r.step < step]
        return max(earlier, key=lambda r: r.step).revision if earlier else None

    def write(self) -> None:
        entries = [{k: v for k, v in asdict(r).items() if v is not None or k != "training_state"}
                   for r in self.revisions]  # fmt: skip
        body = {"format_version": self.format_version, "revisions": entries}
        write_atomic(self.path, body)
        self.exists = True


def update_manifest(folder: str | Path, meta: RevisionMeta) -> None:
    """Record `meta`'s revision in the manifest of `folder` (read, add, write)."""
    manifest = Manifest.read(folder)
    manifest.add(meta)
    manifest.write()
