"""Loading `torch.distributed.checkpoint` (DCP) folders without executing what they hold.

A DCP folder is not a safe format on its own. torch 2.x's `FileSystemReader` reads the
`.metadata` file with plain `pickle.load`, and `DefaultLoadPlanner` reads every non-tensor
value (the optimizer's `param_groups`: learning rates, betas, parameter names) with
`torch.load(..., weights_only=False)`; a planted file runs arbitrary code on resume. Only
the tensors are read with `weights_only=True`.

`load()` closes both holes and checks the folder before DCP touches it:
- `.metadata` is read by a restricted unpickler whose allow-list holds only the classes DCP
  metadata legitimately contains (the dataclasses of `torch.distributed.checkpoint.metadata`,
  `_StorageInfo`, `torch.Size`, dtypes and layouts, `pathlib` paths); anything else is
  refused, naming the file and the global it asked for.
- Non-tensor values are read with `torch.load(..., weights_only=True)`.
- Every data file named by the metadata must be a plain file name inside the folder (no
  `..`, separators or absolute paths), exist, and be long enough for the byte ranges
  listed (a truncated shard is an error naming it).
- A checkpoint of another architecture is refused before anything is read: given the
  caller's model config, `trainer.json`'s `model_config` must agree on every field that
  changes what the weights compute (RESUMABLE_FIELDS may differ); and every entry of the
  state being restored must be saved with the same shape, every saved model tensor must
  be in the state. The message names the differing fields or the first differing entry.

Every refusal is a `ValueError` (an `UnsafeCheckpointError` for planted content), one line.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from strata.run.jsonfile import read_object
from strata.tokenizer.fsutil import own_file
from torch.distributed.checkpoint import CheckpointException, FileSystemReader
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)

__all__ = ["SafeFileSystemReader", "SafeLoadPlanner", "UnsafeCheckpointError", "load"]

METADATA = ".metadata"
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_DCP_CLASSES = ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                "_MEM_FORMAT_ENCODING")  # fmt: skip
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {(_DCP_METADATA, name) for name in _DCP_CLASSES}
    | {("torch.distributed.checkpoint.filesystem", "_StorageInfo")}
    | {("torch", "Size"), ("torch.serialization", "_get_layout")}
    | {("torch", n) for n, v in vars(torch).items() if isinstance(v, torch.dtype)}
    | {
        (m, c)
        for m in ("pathlib", "pathlib._local")
        for c in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")
    }
    | {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}
)
"""(module, name) pairs the metadata unpickler may resolve; nothing else is importable."""

RESUMABLE_FIELDS = frozenset(
    {"loss_chunk_size", "z_loss", "init", "init_std", "max_seq_len", "document_mask"}
)
"""`model_config` fields that may change on resume: the saved weights compute the same
function (memory/loss settings, initialisation, rotary table length, document masking)."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint file asked for something outside the allow-list; nothing was run."""


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, origin: str) -> None:
        super().__init__(file)
        self.origin = origin

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise UnsafeCheckpointError(
                f"{self.origin}: refused to unpickle {module}.{name}; a DCP metadata file "
                "holds only torch.distributed.checkpoint metadata classes (planted file?)"
            )
        return super().find_class(module, name)


def read_metadata_file(path: str | Path) -> Metadata:
    """The `Metadata` of a DCP `.metadata` file, unpickled through the allow-list."""
    path = Path(path)
    if not own_file(path).is_file():
        raise FileNotFoundError(f"{path}: missing; not a complete DCP checkpoint")
    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f, str(path)).load()
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # truncated or garbage bytes: assorted pickle errors
        raise ValueError(f"{path}: not a readable DCP metadata file ({err!r})") from None
    if not isinstance(metadata, Metadata):
        raise ValueError(f"{path}: holds a {type(metadata).__name__}, expected DCP Metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose `.metadata` goes through the allow-listed unpickler.

    Only the global `.metadata` is supported (Strata always saves with coordination), so
    DCP never falls back to per-rank metadata files."""

    def read_metadata(self) -> Metadata:  # no **kwargs: no per-rank fallback
        metadata = read_metadata_file(Path(self.path) / METADATA)
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """`DefaultLoadPlanner` that reads non-tensor values with `weights_only=True`."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as err:
            found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(err))
            why = f"it asks for {found[1]}" if found else str(err).strip().split("\n")[0]
            raise UnsafeCheckpointError(
                f"entry {fqn!r} refused by torch.load(weights_only=True): {why}"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def check_files(path: Path, metadata: Metadata) -> None:
    """Every data file the metadata names is a plain name inside `path`, long enough."""
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        name = str(info.relative_path)
        if not name or os.path.basename(name) != name or name in (".", "..") or "\\" in name:
            raise UnsafeCheckpointError(
                f"{path / METADATA}: names data file {name!r}, which is not a file inside {path}"
            )
        needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(needed.items()):
        file = path / name
        if not own_file(file).is_file():
            raise ValueError(f"{file}: missing; the resume checkpoint {path} is incomplete")
        if file.stat().st_size < size:
            raise ValueError(
                f"{file}: truncated: {file.stat().st_size} bytes, the metadata needs {size}"
            )


def check_config(path: Path, model_config: dict[str, Any] | None) -> None:
    """Refuse when `trainer.json`'s model_config differs from `model_config` in a field
    that changes what the weights compute (anything outside RESUMABLE_FIELDS)."""
    trainer = path / "trainer.json"
    if model_config is None or not trainer.is_file():
        return
    try:
        saved = read_object(trainer).get("model_config")
    except FileNotFoundError:
        raise
    except ValueError as err:
        raise ValueError(f"{trainer}: not a JSON object ({err})") from None
    if not isinstance(saved, dict):
        return  # older checkpoints: the shape check below still applies
    keys = sorted((set(saved) | set(model_config)) - RESUMABLE_FIELDS)
    diffs = [f"{k} {saved.get(k)!r} -> {model_config.get(k)!r}" for k in keys
             if saved.get(k) != model_config.get(k)]  # fmt: skip
    if diffs:
        raise ValueError(
            f"{path}: saved with another model config; cannot resume with "
            f"{', '.join(diffs)} (model_config in {trainer.name}; use a new run.name)"
        )


def _shape(value: Any) -> list[int] | None:
    return list(value.size()) if isinstance(value, torch.Tensor) else None


def check_state(path: Path, metadata: Metadata, state: dict[str, Any]) -> None:
    """Every entry of `state` is saved with the same shape; no saved model tensor is extra."""
    flat, _ = flatten_state_dict(state)
    saved = metadata.state_dict_metadata
    where = f"{path}: cannot load into this model"
    for key, value in flat.items():
        meta = saved.get(key)
        if meta is None:
            raise ValueError(f"{where}: {key} is not in the checkpoint")
        want = _shape(value)
        if want is not None and not isinstance(meta, TensorStorageMetadata):
            raise ValueError(f"{where}: {key} is not a tensor in the checkpoint")
        if want is not None and list(meta.size) != want:
            raise ValueError(
                f"{where}: {key} has shape {list(meta.size)} in the checkpoint, {want} here"
            )
        if want is None and not isinstance(meta, BytesStorageMetadata):
            raise ValueError(f"{where}: {key} is a tensor in the checkpoint")
    model_keys = [k for k, m in saved.items() if isinstance(m, TensorStorageMetadata)
                  and k.startswith("model.")]  # fmt: skip
    extra = [k for k in model_keys if k not in flat] if "model" in state else []
    if extra:
        raise ValueError(f"{where}: the checkpoint also holds {extra[0]}, not in this model")


def _first_failure(err: CheckpointException) -> BaseException | None:
    for exc, _trace in err.failures.values():
        return exc
    return None


def load(
    state: dict[str, Any],
    path: str | Path,
    no_dist: bool = False,
    model_config: dict[str, Any] | None = None,
) -> None:
    """`dcp.load(state, ...)` from folder `path`, safely (see the module docstring).

    With `model_config` (this run's, as a dict), a checkpoint whose `trainer.json` records
    a model config differing outside RESUMABLE_FIELDS is refused, naming the fields.
    Raises ValueError naming the file or entry on anything planted, corrupt or mismatched.
    """
    path = Path(path)
    metadata = read_metadata_file(path / METADATA)
    check_files(path, metadata)
    check_config(path, model_config)
    check_state(path, metadata, state)
    try:
        dcp.load(
            state,
            storage_reader=SafeFileSystemReader(path),
            planner=SafeLoadPlanner(),
            no_dist=no_dist,
        )
    except CheckpointException as err:  # DCP wraps failures of its collective steps
        inner = _first_failure(err)
        if isinstance(inner, ValueError):
            raise _named(path, inner) from None
        raise ValueError(f"{path}: cannot read the resume checkpoint ({inner!r})") from None
    except UnsafeCheckpointError as err:
        raise _named(path, err) from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise ValueError(f"{path}: cannot read the resume checkpoint ({first})") from None


def _named(path: Path, err: ValueError) -> ValueError:
    """`err` (same type) with the checkpoint folder in front, unless it names it already."""
    text = str(err)
    return type(err)(text if text.startswith(str(path)) else f"{path}: {text}")
