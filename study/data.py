"""The data a study evaluates on: the dataset, its validation windows, the memorisation sample.

Design choices:
- The dataset is `--data DIR`, else the one the run recorded (`strata.json`
  `data.dataset`, else `config.toml` `[data] dataset`). A relative recorded path is
  tried from the current folder, then from the folder holding `runs/` (where
  `launch.sh` trains), so a study works from the repository root or elsewhere.
- Validation windows are the trainer's: window i of the val split is the `seq_len + 1`
  tokens from `i * seq_len`; `eval_windows` of them evenly spaced
  (`tokenizer.order.validation_windows`), the same for every revision; by default as
  many as the run evaluated (`train.eval_windows`), so with the run's seq_len they are
  exactly the trainer's windows and `val_loss` matches `strata.json`. Each predicted
  token carries its UTF-8 byte count (`tokenizer.tokbytes.text_byte_counts`) and its
  source group (the document holding it, see `source_group`; for a mixture run, its
  source's name, study/mixture.py).
- The data order (seed, global batch size, training seq_len) comes from the newest
  revision's `strata.json` data cursor, else `config.toml` `[train]`. It is used for
  seen/unseen only when the dataset has as many training windows as the run recorded
  (`data.n_windows`); otherwise the study falls back to an unsplit memorisation rate.
- `Plan.key` (sha256 of index.json and the data settings) goes into every cache key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from strata.checkpoints.files import sha256_file
from strata.model import ModelConfig
from strata.run import RevisionMeta
from strata.run.config import recorded_eval_windows
from strata.run.dataset import resolve_dataset as run_dataset
from strata.study.discover import Target
from strata.study.mixture import mixture_eval_set, mixture_sources
from strata.study.sample import MemSample, mem_sample
from strata.study.settings import DEFAULT_EVAL_WINDOWS, StudySettings
from strata.tokenizer import Tokenizer, text_byte_counts, validation_windows
from strata.tokenizer.fsutil import read_own
from strata.tokenizer.shards import TokenShards, load_index


@dataclass
class EvalSet:
    inputs: np.ndarray  # (N, T) int64
    targets: np.ndarray  # (N, T) int64
    nbytes: np.ndarray  # (N, T) UTF-8 bytes of each target token
    group: np.ndarray  # (N, T) index into `sources` of each target token
    sources: list[str]
    main_rows: int | None = None
    """Rows `val_loss` is over (a mixture: the first source's, study/mixture.py); None: all."""


@dataclass
class Plan:
    dataset: Path
    index: dict[str, Any]
    seq_len: int
    evalset: EvalSet
    mem: MemSample
    order_known: bool
    key: str


def source_group(source: str, depth: int) -> str:
    """The first `depth` path components of a source ("file.jsonl:17" -> "file.jsonl")."""
    parts = [p for p in re.sub(r":\d+$", "", source).replace("\\", "/").split("/") if p]
    return "/".join(parts[:depth]) or "(unknown)"


def _recorded(target: Target, key: str, section: str | None = None) -> Any:
    """`key` of the newest strata.json data cursor, else `[section] key` of the config."""
    for rev in reversed(target.revisions):
        value = getattr(rev.meta.data, key) if rev.meta and rev.meta.data else None
        if value is not None:
            return value
    return target.run_config.get(section, {}).get(key) if section else None


def resolve_dataset(target: Target, data: str | Path | None) -> Path:
    if data is not None:
        load_index(data)  # a clear error when it is not a prepared dataset
        return Path(data)
    recorded = _recorded(target, "dataset", "data")
    if recorded is None:
        raise ValueError(f"{target.source}: the run records no dataset; pass --data DIR")
    out_dir = target.run_config.get("run", {}).get("out_dir", "runs")
    try:
        return run_dataset(recorded, target.run_dir, out_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; pass --data DIR") from None


def eval_set(val: TokenShards, seq_len: int, count: int, table: np.ndarray, depth: int):
    if val.n_tokens < seq_len + 1:
        raise ValueError(
            f"{val.dataset_dir}: the val split has {val.n_tokens} tokens, fewer than one window "
            f"of {seq_len + 1}; use --data with a validation split or a smaller --seq-len"
        )
    picks = validation_windows(val.n_windows(seq_len), count)
    rows = np.stack([val.window(int(w), seq_len) for w in picks])  # (N, T + 1)
    positions = picks[:, None] * seq_len + 1 + np.arange(seq_len)  # stream index of targets
    docs = val.index["splits"][val.split]["documents"]
    starts = np.array([d[0] for d in docs], dtype=np.int64)
    names = [source_group(str(d[1]), depth) for d in docs]
    sources = sorted(set(names))
    number = {name: i for i, name in enumerate(sources)}
    doc_group = np.array([number[name] for name in names], dtype=np.int64)
    group = doc_group[np.searchsorted(starts, positions, side="right") - 1]
    return EvalSet(rows[:, :-1], rows[:, 1:], table[rows[:, 1:]], group, sources)


def _order(target: Target, train: TokenShards, seq_len: int) -> tuple[int, int] | None:
    seed = _recorded(target, "seed", "train")
    batch = _recorded(target, "global_batch_size", "train")
    windows = _recorded(target, "n_windows")
    if seed is None or batch is None:
        return None
    if windows is not None and windows != train.n_windows(seq_len):
        return None  # not the dataset the run trained on
    return int(seed), int(batch)


def make_plan(target: Target, data: str | Path | None, settings: StudySettings) -> Plan:
    dataset = resolve_dataset(target, data)
    index = load_index(dataset)
    train_seq = _recorded(target, "seq_len", "train") or settings.seq_len
    seq_len = settings.seq_len or train_seq
    if seq_len is None:
        raise ValueError(f"{target.source}: the run records no seq_len; pass --seq-len")
    table = text_byte_counts(Tokenizer.load(dataset / "tokenizer"))
    val = TokenShards(dataset, "val")
    count = settings.eval_windows or recorded_eval_windows(target.run_config)
    count = count or DEFAULT_EVAL_WINDOWS
    evalset = eval_set(val, seq_len, count, table, settings.source_depth)
    extra = b""
    if data is None and mixture_sources(target):  # one group per source of the mixture
        build = functools.partial(eval_set, depth=settings.source_depth)
        evalset, main, extra = mixture_eval_set(target, evalset, seq_len, count, table, build)
        evalset.main_rows = main
    train = TokenShards(dataset, "train")
    order = _order(target, train, train_seq)
    span = settings.mem_prefix + settings.mem_length
    mem = mem_sample(train, train_seq, span, settings.mem_samples, settings.mem_seed, order)
    blob = (
        read_own(dataset / "index.json", None, "dataset")
        + extra
        + json.dumps([seq_len, train_seq, order, count]).encode()
    )
    key = hashlib.sha256(blob).hexdigest()
    return Plan(dataset, index, seq_len, evalset, mem, order is not None, key)


def revision_tokenizer(path: Path, meta: RevisionMeta | None) -> str | None:
    """sha256 of a revision's tokenizer file, else the one its strata.json recorded."""
    for name in ("tokenizer.json", "tokenizer.model"):  # Tokenizer.load's preference
        if (path / name).is_file():
            return sha256_file(path / name)
    return meta.data.tokenizer_sha256 if meta and meta.data else None


def check_compatible(
    path: Path, meta: RevisionMeta | None, config: ModelConfig, plan: Plan, span: int
) -> None:
    """A clear error when the revision cannot be evaluated on the plan's data."""
    found, expected = revision_tokenizer(path, meta), plan.index["tokenizer_sha256"]
    if found is not None and found != expected:
        raise ValueError(
            f"{path}: tokenizer sha256 {found[:12]} differs from the one {plan.dataset} was "
            f"prepared with ({expected[:12]}); pass --data with a dataset of this tokenizer"
        )
    if config.vocab_size < plan.index["vocab_size"]:
        raise ValueError(
            f"{path}: vocabulary of {config.vocab_size} tokens, but {plan.dataset} uses "
            f"{plan.index['vocab_size']}"
        )
    for what, need in (("--seq-len", plan.seq_len), ("--mem-prefix + --mem-length", span)):
        if need > config.max_seq_len:
            raise ValueError(f"{path}: {what} = {need} exceeds max_seq_len {config.max_seq_len}")
