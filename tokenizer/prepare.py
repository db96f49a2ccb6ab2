"""`prepare`: tokenize corpora into flat token shards plus an index.

Layout of a prepared dataset (`out_dir/`):

    index.json              format, dtype, vocab, EOS id, tokenizer hash, per split:
                            total tokens, shards (file, tokens, sha256) and
                            documents ([first token offset, source] per document)
    tokenizer/              copy of the tokenizer (Tokenizer.save)
    train-00000.bin ...     the train stream, little-endian uint16 (uint32 when
    val-00000.bin ...       vocab_size > 65536), at most `shard_tokens` per shard

Design choices:
- Every document is encoded and followed by EOS; a split's stream is just the
  concatenation, so a document may span two shards.
- Validation: either `val_inputs`, or (with `val_fraction` > 0) whole documents of
  the train inputs chosen by a stable hash of (source, ordinal): the split never
  depends on the machine, the worker count or the other documents.
- Encoding runs in a `multiprocessing` pool (the platform's default start method)
  over ordered chunks with `imap`, so the output is byte-identical for any
  `workers`; `workers=1` encodes in this process (with the tokenizer's own
  threads). Pool workers encode single-threaded (TOKENIZERS_PARALLELISM=false).
- Written into `<out_dir>.tmp-<pid>` and renamed into place. An existing complete
  dataset (it has index.json) is replaced only with `overwrite=True`; a non-empty
  folder that is not a dataset is never replaced. An input that lies inside `out_dir`
  (after resolving links and `..`, folders expanded) is refused before anything is
  written: replacing the folder would delete it.
- A `kill -9` leaves `<out_dir>.tmp-<pid>` (and `<out_dir>.old-<pid>` between the two
  renames); the next prepare on the same `out_dir` removes those of processes that are
  gone (`fsutil.leftover_dirs`), keeping an `.old-` folder while `out_dir` is not a
  complete dataset (it is then the only copy) and any folder that holds an input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .documents import expand_inputs, iter_documents
from .fsutil import WRITE_ERRNOS, leftover_dirs, replace_dir, temp_sibling
from .shards import FORMAT_VERSION
from .tok import Tokenizer
from .writer import ShardWriter

Chunk = list[tuple[str, str, str]]  # (split, text, source) per document
CHUNK_DOCS = 256
CHUNK_BYTES = 1 << 20
_WORKER_TOKENIZER: Tokenizer | None = None


def val_hash(source: str, ordinal: int) -> float:
    """Stable uniform number in [0, 1) for document `ordinal` with `source`."""
    key = f"{ordinal}\0{source}".encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") / 2**64


def _documents(
    train_inputs: Sequence, val_inputs: Sequence | None, val_fraction: float, text_field: str
) -> Iterator[tuple[str, str, str]]:
    for ordinal, (text, source) in enumerate(iter_documents(train_inputs, text_field)):
        is_val = val_fraction > 0 and val_hash(source, ordinal) < val_fraction
        yield ("val" if is_val else "train"), text, source
    if val_inputs is not None:
        for text, source in iter_documents(val_inputs, text_field):
            yield "val", text, source


def _chunks(docs: Iterable[tuple[str, str, str]]) -> Iterator[Chunk]:
    chunk: Chunk = []
    size = 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc[1])
        if len(chunk) >= CHUNK_DOCS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encode(tok: Tokenizer, chunk: Chunk, dtype: str) -> tuple[Chunk, np.ndarray, np.ndarray]:
    """Encode a chunk: (chunk metadata without texts, per-doc lengths, tokens with EOS)."""
    ids = tok.encode_batch([text for _, text, _ in chunk])
    lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for x in ids:
        tokens[pos : pos + len(x)] = x
        tokens[pos + len(x)] = tok.eos_id
        pos += len(x) + 1
    meta = [(split, "", source) for split, _, source in chunk]
    return meta, lengths, tokens


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = Tokenizer.load(tokenizer_dir)


def _worker_encode(args: tuple[Chunk, str]) -> tuple[Chunk, np.ndarray, np.ndarray]:
    assert _WORKER_TOKENIZER is not None
    return _encode(_WORKER_TOKENIZER, *args)


@contextlib.contextmanager
def _encoder(tok_dir: Path, dtype: str, workers: int) -> Iterator[Callable]:
    """A function mapping chunks to encoded chunks in input order (in-process or a pool)."""
    if workers == 1:
        tok = Tokenizer.load(tok_dir)
        yield lambda chunks: (_encode(tok, chunk, dtype) for chunk in chunks)
        return
    # single-threaded tokenizers in the workers: no oversubscription, no fork warning
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.Pool(workers, initializer=_init_worker, initargs=(str(tok_dir),))
    finally:
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        yield lambda chunks: pool.imap(_worker_encode, ((chunk, dtype) for chunk in chunks))


def _check_args(out_dir: Path, val_inputs, val_fraction, workers, shard_tokens, overwrite) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if val_inputs is not None and val_fraction > 0:
        raise ValueError("give either val_inputs or val_fraction > 0, not both")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise ValueError(f"shard_tokens must be an integer >= 1, got {shard_tokens!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    if (out_dir / "index.json").is_file():
        if not overwrite:
            raise FileExistsError(
                f"{out_dir}: already holds a prepared dataset (index.json); "
                "pass overwrite=True to replace it"
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir}: exists, is not empty and is not a prepared dataset (no index.json); "
            "not replacing it"
        )


def _inside(path: Path, folder: Path) -> bool:
    resolved = path.resolve()
    return resolved == folder or folder in resolved.parents


def _check_inputs_outside(inputs: list[str], out_dir: Path) -> None:
    """Refuse an input (or a file a folder input expands to) that lies inside `out_dir`."""
    folder = out_dir.resolve()
    for given in map(Path, inputs):
        files = expand_inputs([given]) if given.is_dir() else []
        bad = next((p for p in [given, *files] if _inside(p, folder)), None)
        if bad is not None:
            raise ValueError(
                f"{bad}: input lies inside the output folder {out_dir}, which prepare "
                "replaces; move the input or choose another --out"
            )


def _remove_leftovers(out_dir: Path, keep: list[str]) -> None:
    """Remove what a killed prepare on `out_dir` left, never a folder holding `keep`."""
    for folder in leftover_dirs(out_dir, complete=(out_dir / "index.json").is_file()):
        if not any(_inside(Path(p), folder.resolve()) for p in keep):
            shutil.rmtree(folder, ignore_errors=True)


def prepare(
    train_inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    val_inputs: str | Path | Sequence[str | Path] | None = None,
    val_fraction: float = 0.0,
    workers: int = 1,
    text_field: str = "text",
    shard_tokens: int = 2**24,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenize `train_inputs` (and validation) into token shards in `out_dir`; return the index."""
    out_dir = Path(out_dir)
    train_inputs, val_inputs = _as_list(train_inputs), _as_list(val_inputs)
    _check_inputs_outside(train_inputs + (val_inputs or []), out_dir)
    _check_args(out_dir, val_inputs, val_fraction, workers, shard_tokens, overwrite)
    tok = Tokenizer.load(tokenizer_dir)
    _remove_leftovers(out_dir, [*train_inputs, *(val_inputs or []), str(tokenizer_dir)])
    dtype = "uint16" if tok.vocab_size <= 2**16 else "uint32"
    tmp = temp_sibling(out_dir)
    try:
        tok.save(tmp / "tokenizer")
        docs = _documents(train_inputs, val_inputs, val_fraction, text_field)
        with _encoder(tmp / "tokenizer", dtype, workers) as encode:
            splits = _write_splits(tmp, encode(_chunks(docs)), dtype, shard_tokens, progress)
        if not splits["train"]["documents"]:
            raise ValueError(f"no training documents in {train_inputs} (val_fraction too high?)")
        index = {
            "format_version": FORMAT_VERSION,
            "dtype": dtype,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "bos_id": tok.bos_id,
            "tokenizer_kind": tok.kind,
            "tokenizer_sha256": tok.sha256(),
            "text_field": text_field,
            "shard_tokens": shard_tokens,
            "val_fraction": val_fraction,
            "inputs": {"train": train_inputs, "val": val_inputs},
            "splits": splits,
        }
        (tmp / "index.json").write_text(dumps_index(index), encoding="utf-8")
        replace_dir(tmp, out_dir)
    except OSError as err:  # disk full, say: name the dataset and what is left of it
        if err.errno not in WRITE_ERRNOS:
            raise
        raise _write_failed(err, tmp, out_dir) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        parts = [
            f"{k} {v['tokens']:,} tokens in {len(v['shards'])} shards" for k, v in splits.items()
        ]
        print(f"prepared {out_dir}: " + ", ".join(parts))
    return index


def _write_failed(err: OSError, tmp: Path, out_dir: Path) -> OSError:
    """The one-line error of a failed write into `tmp`: the partial dataset is removed and
    an older `out_dir` is left as it was (it is replaced only by the finished folder)."""
    kept = f"{out_dir} is as it was" if out_dir.exists() else f"nothing was written to {out_dir}"
    where = f" ({err.filename})" if err.filename else ""
    reason = f"{err.strerror or err}{where} while writing the dataset; {kept}"
    return OSError(err.errno, f"{reason}, and the partial {tmp.name} was removed", str(out_dir))


def _as_list(inputs: str | Path | Sequence[str | Path] | None) -> list[str] | None:
    if inputs is None:
        return None
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    return [str(p) for p in inputs]


def _write_splits(
    tmp: Path, encoded: Iterator, dtype: str, shard_tokens: int, progress: bool
) -> dict[str, dict[str, Any]]:
    from tqdm import tqdm

    writers = {s: ShardWriter(tmp, s, dtype, shard_tokens) for s in ("train", "val")}
    # the bar only on a terminal (disable=None): errors stay one line in logs and pipes
    with tqdm(desc="prepare", unit="doc", disable=None if progress else True) as bar:
        for meta, lengths, tokens in encoded:
            start = 0
            for (split, _, source), n in zip(meta, lengths.tolist(), strict=True):
                writers[split].add_document(tokens[start : start + n], source)
                start += n
            bar.update(len(meta))
            bar.set_postfix(tokens=sum(w.tokens for w in writers.values()), refresh=False)
    return {s: w.finish() for s, w in writers.items()}


def dumps_index(index: dict[str, Any]) -> str:
    """index.json text: indented, but one line per shard and per document to stay compact."""
    slim = {**index, "splits": {}}
    bodies: dict[str, str] = {}
    for name, split in index["splits"].items():
        slim["splits"][name] = dict(split)
        for key in ("shards", "documents"):
            marker = json.dumps(f"@@{key}:{name}@@")
            slim["splits"][name][key] = json.loads(marker)
            lines = ",\n".join("        " + json.dumps(item) for item in split[key])
            bodies[marker] = f"[\n{lines}\n      ]" if lines else "[]"
    text = json.dumps(slim, indent=2)
    for marker, body in bodies.items():
        text = text.replace(marker, body)
    return text + "\n"
