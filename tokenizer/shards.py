"""Reading a prepared dataset: one split's token shards as a single token stream.

Design choices:
- Shards are flat little-endian `uint16`/`uint32` files listed in `index.json`;
  each is opened with a read-only `np.memmap`, so opening is instant and reading
  touches only the pages needed. Reads come back as int64.
- `load_index` (the one reader of `index.json`) type-checks every key Strata reads (the
  top level, each split, shard and document) and names the first bad one: `DIR/index.json:
  key 'splits.train.shards[0].tokens': expected a non-negative integer, got ...`.
- Sizes are always checked against the index on open (a truncated or padded shard, or
  one whose length is not a multiple of its dtype, is an error naming the file);
  `verify=True` also checks every shard's sha256. The dataset's `tokenizer/` copy must
  hash to the index's `tokenizer_sha256` (checked on open: one small file).
- Every read checks its tokens against the index's `vocab_size` (one numpy max over the
  window): an out-of-range id is an error naming the shard file and position, never an
  out-of-bounds embedding lookup.
- Training windows are fixed-length slices of the stream: window i holds the
  `seq_len + 1` tokens starting at `i * seq_len`, so consecutive windows share one
  token and inputs/targets are `window[:-1]` / `window[1:]`.
- A `TokenShards` pickles as (dataset_dir, split) and reopens its memmaps, so it is
  cheap to send to data-loader worker processes.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .fsutil import own_file, read_own, sha256_file

FORMAT_VERSION = 1
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # the order Tokenizer.load picks


def load_index(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed `index.json` of a prepared dataset, with its format and keys checked."""
    path = Path(dataset_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no index.json; is {dataset_dir} a prepared dataset?")
    try:
        index = json.loads(read_own(path, None, "dataset").decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a JSON object at the top, got a {_json_type(index)}")
    version = index.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ValueError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
    if index.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: dtype {index.get('dtype')!r}, expected one of {list(DTYPES)}")
    _check_keys(path, index)
    return index


_MISSING = object()
_SHA256 = "a sha256 hex string (64 characters 0-9a-f)"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _fail(path: Path, key: str, expected: str, value: Any) -> NoReturn:
    got = "nothing (the key is missing)" if value is _MISSING else repr(value)
    got = got if len(got) <= 60 else got[:57] + "..."
    raise ValueError(f"{path}: key {key!r}: expected {expected}, got {got}")


def _is_int(value: Any, low: int, high: float = float("inf")) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and not value.strip("0123456789abcdef")


def _check_keys(path: Path, index: dict[str, Any]) -> None:
    """Type-check the keys Strata reads (the top level, every split, shard and document)."""
    vocab = index.get("vocab_size", _MISSING)
    if not _is_int(vocab, 1):
        _fail(path, "vocab_size", "a positive integer", vocab)
    if not _is_int(eos := index.get("eos_id", _MISSING), 0, vocab):
        _fail(path, "eos_id", f"an integer in [0, {vocab})", eos)
    if not _is_sha256(sha := index.get("tokenizer_sha256", _MISSING)):
        _fail(path, "tokenizer_sha256", _SHA256, sha)
    splits = index.get("splits", _MISSING)
    if not isinstance(splits, dict):
        _fail(path, "splits", "an object (split name -> split)", splits)
    for name, split in splits.items():
        _check_split(path, f"splits.{name}", split)


def _check_split(path: Path, key: str, split: Any) -> None:
    if not isinstance(split, dict):
        _fail(path, key, "an object", split)
    if not _is_int(tokens := split.get("tokens", _MISSING), 0):
        _fail(path, f"{key}.tokens", "a non-negative integer", tokens)
    shards, docs = split.get("shards", _MISSING), split.get("documents", _MISSING)
    for name, value in (("shards", shards), ("documents", docs)):
        if not isinstance(value, list):
            _fail(path, f"{key}.{name}", "a list", value)
    for i, shard in enumerate(shards):
        _check_shard(path, f"{key}.shards[{i}]", shard)
    for i, d in enumerate(docs):  # plain type checks: datasets list millions of documents
        if not (type(d) is list and len(d) == 2 and type(d[0]) is int and d[0] >= 0
                and type(d[1]) is str):  # fmt: skip
            expected = "[first token, source]: a non-negative integer and a string"
            _fail(path, f"{key}.documents[{i}]", expected, d)


def _check_shard(path: Path, key: str, shard: Any) -> None:
    if not isinstance(shard, dict):
        _fail(path, key, "an object", shard)
    file = shard.get("file", _MISSING)
    plain = isinstance(file, str) and file not in ("", ".", "..") and not set(file) & set("/\\")
    if not plain:
        _fail(path, f"{key}.file", f"a file name inside {path.parent}", file)
    if not _is_int(tokens := shard.get("tokens", _MISSING), 0):
        _fail(path, f"{key}.tokens", "a non-negative integer", tokens)
    if not _is_sha256(sha := shard.get("sha256", _MISSING)):
        _fail(path, f"{key}.sha256", _SHA256, sha)


def check_tokenizer(dataset_dir: Path, index: dict[str, Any]) -> None:
    """The dataset's `tokenizer/` copy (when present) is the one its index was made with."""
    folder = dataset_dir / "tokenizer"
    file = next((folder / n for n in TOKENIZER_FILES if (folder / n).is_file()), None)
    expected = index.get("tokenizer_sha256")
    if file is None or expected is None:
        return
    found = sha256_file(own_file(file, "dataset"))
    if found != expected:
        raise ValueError(
            f"{file}: sha256 {found[:12]} is not the tokenizer_sha256 {str(expected)[:12]} of "
            f"{dataset_dir / 'index.json'}: the data was prepared with another tokenizer"
        )


class TokenShards:
    """The token stream of one split of a prepared dataset."""

    def __init__(self, dataset_dir: str | Path, split: str = "train", verify: bool = False):
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.index = load_index(self.dataset_dir)
        splits = self.index.get("splits", {})
        if split not in splits:
            raise ValueError(f"{self.dataset_dir}: no split {split!r}; has {sorted(splits)}")
        self.vocab_size: int = self.index["vocab_size"]
        self.eos_id: int = self.index["eos_id"]
        self.dtype = DTYPES[self.index["dtype"]]
        check_tokenizer(self.dataset_dir, self.index)
        info = splits[split]
        self._maps = [self._open(s, verify) for s in info["shards"] if s["tokens"] > 0]
        sizes = [len(m) for m in self._maps]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n_tokens = int(self._starts[-1])
        if self.n_tokens != info["tokens"]:
            raise ValueError(
                f"{self.dataset_dir}/index.json: split {split!r} lists {info['tokens']} tokens "
                f"but its shards hold {self.n_tokens}"
            )
        self._doc_starts = [int(d[0]) for d in info["documents"]]
        self._doc_sources = [str(d[1]) for d in info["documents"]]

    def _open(self, shard: dict[str, Any], verify: bool) -> np.memmap:
        path = own_file(self.dataset_dir / shard["file"], "dataset")  # never a link out
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in index.json is missing")
        expected = shard["tokens"] * self.dtype.itemsize
        actual = path.stat().st_size
        if actual != expected:
            what = "truncated" if actual < expected else "wrong size"
            if actual % self.dtype.itemsize:
                what += f" (not a multiple of {self.dtype.itemsize} bytes)"
            raise ValueError(
                f"{path}: shard is {what}: {actual} bytes, expected {expected} "
                f"({shard['tokens']} tokens of {self.dtype.name})"
            )
        if verify and sha256_file(path) != shard["sha256"]:
            raise ValueError(f"{path}: sha256 does not match index.json (corrupted shard)")
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(shard["tokens"],))

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset_dir": self.dataset_dir, "split": self.split}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dataset_dir"], state["split"])

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return (
            f"TokenShards({str(self.dataset_dir)!r}, split={self.split!r}, tokens={self.n_tokens})"
        )

    @property
    def n_documents(self) -> int:
        return len(self._doc_starts)

    def read(self, start: int, length: int) -> np.ndarray:
        """`length` tokens (int64) starting at stream position `start`, across shards."""
        if start < 0 or length < 0 or start + length > self.n_tokens:
            raise ValueError(
                f"{self.dataset_dir} ({self.split}): cannot read [{start}, {start + length}) "
                f"from a stream of {self.n_tokens} tokens"
            )
        out = np.empty(length, dtype=np.int64)
        done = 0
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while done < length:
            offset = start + done - int(self._starts[shard])
            take = min(length - done, len(self._maps[shard]) - offset)
            out[done : done + take] = self._maps[shard][offset : offset + take]
            done += take
            shard += 1
        if length and int(out.max()) >= self.vocab_size:
            self._out_of_range(start, out)
        return out

    def _out_of_range(self, start: int, tokens: np.ndarray) -> NoReturn:
        pos = start + int(np.argmax(tokens >= self.vocab_size))
        shard = int(np.searchsorted(self._starts, pos, side="right")) - 1
        raise ValueError(
            f"{self._maps[shard].filename}: token id {int(tokens[pos - start])} at token "
            f"{pos - int(self._starts[shard])} is >= vocab_size {self.vocab_size} of "
            f"{self.dataset_dir / 'index.json'} (corrupt shard, or prepared for another index)"
        )

    def n_windows(self, seq_len: int) -> int:
        """Number of training windows of `seq_len` (+1) tokens: (n_tokens - 1) // seq_len."""
        if not isinstance(seq_len, int | np.integer) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        n = max(self.n_tokens - 1, 0) // seq_len
        if n == 0:
            raise ValueError(
                f"{self.dataset_dir} ({self.split}) is too small for seq_len {seq_len}: "
                f"{self.n_tokens} tokens, need at least {seq_len + 1}"
            )
        return n

    def window(self, i: int, seq_len: int) -> np.ndarray:
        """The `seq_len + 1` tokens (int64) of window `i`, starting at `i * seq_len`."""
        n = self.n_windows(seq_len)
        if not 0 <= i < n:
            raise ValueError(f"window index {i} out of range [0, {n}) for seq_len {seq_len}")
        return self.read(i * seq_len, seq_len + 1)

    def document_at(self, pos: int) -> tuple[int, str]:
        """(document id, source) of the document holding stream position `pos`."""
        if not 0 <= pos < self.n_tokens:
            raise ValueError(f"position {pos} out of range [0, {self.n_tokens})")
        doc = bisect.bisect_right(self._doc_starts, pos) - 1
        return doc, self._doc_sources[doc]
