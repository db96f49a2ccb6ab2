"""`ShardWriter`: append one split's token stream to fixed-size little-endian shards.

Design choices:
- Shards are named `<split>-00000.bin`, `<split>-00001.bin`, ... and hold exactly
  `shard_tokens` tokens except the last; a document may continue in the next
  shard. A split with no tokens has no shard files.
- The sha256 of each shard is computed while writing (no second pass), and every
  document's first-token offset in the split's stream is recorded with its source.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

import numpy as np


class ShardWriter:
    """Writes the token stream of one split into `<folder>/<split>-NNNNN.bin` shards."""

    def __init__(self, folder: Path, split: str, dtype: str, shard_tokens: int) -> None:
        self.folder, self.split, self.shard_tokens = Path(folder), split, shard_tokens
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.tokens = 0
        self.shards: list[dict[str, Any]] = []
        self.documents: list[list[Any]] = []
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._in_shard = 0

    def add_document(self, tokens: np.ndarray, source: str) -> None:
        """Append one document's tokens (EOS included) and record where it starts."""
        self.documents.append([self.tokens, source])
        self.write(tokens)

    def write(self, tokens: np.ndarray) -> None:
        data = np.ascontiguousarray(tokens, dtype=self.dtype)
        pos = 0
        while pos < len(data):
            if self._file is None:
                self._open_shard()
            take = min(len(data) - pos, self.shard_tokens - self._in_shard)
            block = data[pos : pos + take].tobytes()
            self._file.write(block)
            self._hash.update(block)
            self._in_shard += take
            self.tokens += take
            pos += take
            if self._in_shard == self.shard_tokens:
                self._close_shard()

    def _open_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self.shards.append({"file": name, "tokens": 0, "sha256": ""})
        self._file = open(self.folder / name, "wb")
        self._hash = hashlib.sha256()
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self.shards[-1].update(tokens=self._in_shard, sha256=self._hash.hexdigest())

    def finish(self) -> dict[str, Any]:
        """Close the last shard; return this split's index entry."""
        self._close_shard()
        return {"tokens": self.tokens, "shards": self.shards, "documents": self.documents}
