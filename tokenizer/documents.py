"""Reading raw corpora as a stream of (text, source) documents.

Design choices:
- One entry point, `iter_documents`, used by tokenizer training and by `prepare`, so
  both see exactly the same documents in exactly the same order.
- Supported inputs: `.txt` (the whole file is one document, source = file name),
  `.jsonl`, `.jsonl.gz`, `.jsonl.zst` (one JSON object per line, the text under
  `text_field`; source = the object's "source" field if present, else
  "<file name>:<line number>"), and `.parquet` (one row per document, source = the
  "source" column if present, else "<file name>:<row number>").
- Directories expand to their supported files (recursively), sorted by relative
  path; unsupported files inside a directory are ignored, but a file named directly
  with an unknown extension is an error.
- Text is decoded as strict UTF-8 and never normalised: bytes in = text out. Bytes that
  are not UTF-8 are an error naming the file and line (never replaced or skipped), and so
  is a JSON `\\ud800`-style escape that decodes to a lone surrogate (not Unicode text).
  Blank lines in JSONL files are skipped (they are not documents). A corrupt or truncated
  `.gz`/`.zst` file is an error naming it. Inputs with no document, or whose documents
  are all empty, are an error naming the inputs.
- `zstandard` and `pyarrow` are optional (the `data` extra) and imported lazily.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
DATA_EXTRA = "pip install 'strata[data]'"

PathLike = str | Path


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def expand_inputs(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Files to read, in order: directories become their supported files, sorted."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and _suffix(f)]
            files.extend(sorted(found, key=lambda f: f.relative_to(p).as_posix()))
        elif p.is_file():
            if _suffix(p) is None:
                raise ValueError(f"{p}: unsupported input file type; expected one of {SUFFIXES}")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: input file or directory does not exist")
    return files


def iter_documents(
    path: PathLike | Iterable[PathLike], text_field: str = "text"
) -> Iterator[tuple[str, str]]:
    """Yield (text, source) for every document of `path` (a file, a directory or a list).

    Raises ValueError (at the end of iteration) when the inputs hold no document at all,
    or only empty ones.
    """
    names = [str(path)] if isinstance(path, str | Path) else [str(p) for p in path]
    count = chars = 0
    for file in expand_inputs(path):
        for doc in _iter_file(file, text_field):
            count += 1
            chars += len(doc[0])
            yield doc
    if count == 0:
        raise ValueError(f"no documents found in inputs {names}")
    if chars == 0:
        raise ValueError(f"no text in inputs {names}: all {count} documents are empty")


def _iter_file(file: Path, text_field: str) -> Iterator[tuple[str, str]]:
    suffix = _suffix(file)
    if suffix == ".txt":
        yield _decode(file.read_bytes(), file), file.name
    elif suffix == ".parquet":
        yield from _iter_parquet(file, text_field)
    else:
        try:
            with _open_jsonl(file, suffix) as f:
                yield from _iter_jsonl_lines(f, file, text_field)
        except Exception as e:  # gzip/zlib/zstandard raise assorted types on bad streams
            if isinstance(e, ValueError | ImportError) or not _is_stream_error(e):
                raise
            raise ValueError(f"{file}: corrupt or truncated {suffix} file ({e})") from None


def _decode(data: bytes, file: Path, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}{where}: not valid UTF-8 ({e})") from None


def _open_jsonl(file: Path, suffix: str | None) -> IO[bytes]:
    if suffix == ".jsonl.gz":
        return gzip.open(file, "rb")
    if suffix == ".jsonl.zst":
        try:
            import zstandard
        except ImportError:
            raise ImportError(
                f"{file}: reading .jsonl.zst needs the 'zstandard' package: {DATA_EXTRA}"
            ) from None
        raw = open(file, "rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader)
    return open(file, "rb")


def _iter_jsonl_lines(f: IO[bytes], file: Path, text_field: str) -> Iterator[tuple[str, str]]:
    for line_no, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        where = f" line {line_no}"
        try:
            obj = json.loads(_decode(raw, file, where))
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}{where}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{file}{where}: expected a JSON object, got {type(obj).__name__}")
        text = _text_of(obj, file, where, text_field)
        if b"\\u" in raw:  # JSON escapes can spell lone surrogates; plain UTF-8 cannot
            _check_unicode(text, file, where)
        source = obj.get("source")
        yield text, (str(source) if source is not None else f"{file.name}:{line_no}")


def _is_stream_error(e: Exception) -> bool:
    """A damaged compressed stream (not a missing or unreadable file: those have an errno)."""
    if isinstance(e, OSError):
        return e.errno is None  # gzip.BadGzipFile
    return isinstance(e, EOFError | zlib.error) or type(e).__name__ == "ZstdError"


def _check_unicode(text: str, file: Path, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        raise ValueError(
            f"{file}{where}: text holds a lone surrogate {bad!r} at character {e.start} "
            "(a \\ud800-\\udfff JSON escape); expected Unicode text"
        ) from None


def _text_of(obj: dict[str, Any], file: Path, where: str, text_field: str) -> str:
    if text_field not in obj:
        raise ValueError(
            f"{file}{where}: missing text field {text_field!r} (keys: {sorted(obj)[:10]})"
        )
    text = obj[text_field]
    if not isinstance(text, str):
        raise ValueError(
            f"{file}{where}: field {text_field!r} must be a string, got {type(text).__name__}"
        )
    return text


def _iter_parquet(file: Path, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{file}: reading .parquet needs the 'pyarrow' package: {DATA_EXTRA}"
        ) from None
    pf = pq.ParquetFile(file)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ValueError(f"{file}: missing text column {text_field!r} (columns: {names})")
    columns = [text_field] + (["source"] if "source" in names else [])
    row = 0
    for batch in pf.iter_batches(columns=columns):
        data = batch.to_pydict()
        sources = data.get("source")
        for i, text in enumerate(data[text_field]):
            where = f" row {row}"
            text = _text_of({text_field: text}, file, where, text_field)
            source = sources[i] if sources is not None and sources[i] is not None else None
            yield text, (str(source) if source is not None else f"{file.name}:{row}")
            row += 1
