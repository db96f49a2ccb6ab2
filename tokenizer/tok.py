"""`Tokenizer`: one interface over a Hugging Face `tokenizer.json` or a SentencePiece model.

Design choices:
- A tokenizer is the exact bytes of its file. `sha256()` hashes those bytes and
  `save()` writes them back unchanged, so a tokenizer copied into a dataset or a
  run keeps its hash, and a dataset can be checked against the run's tokenizer.
- kind "bpe" means a Hugging Face `tokenizers` file (what `train_tokenizer` writes:
  byte-level BPE); kind "sentencepiece" a SentencePiece `tokenizer.model`.
- `encode` never adds BOS/EOS, and treats special-token strings found in the text
  ("<|endoftext|>") as ordinary text: a document cannot inject control tokens.
  (`transformers.AutoTokenizer` maps them to the special ids; on any text without
  them the two agree.) `decode` never skips special tokens.
- Special ids come from `tokenizer_config.json` next to the file when present, else
  from well-known names (<|endoftext|>, </s>, ...). EOS is required; BOS and PAD
  fall back to EOS for foreign tokenizers that lack them.
- Round trip: for "bpe", `decode(encode(s)) == s` for every string that is valid
  Unicode (no lone surrogates). For "sentencepiece" it holds for every such string
  without U+2581 ("▁"), which SentencePiece uses as its space marker and decodes
  to a space. Runs of spaces, tabs, newlines and indentation survive in both.
- `save()` also writes `tokenizer_config.json` and `special_tokens_map.json` so that
  `transformers.AutoTokenizer.from_pretrained(dir)` loads the folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import trainers
from .fsutil import METADATA_LIMIT, read_own, replace_dir, temp_sibling

TOKENIZER_LIMIT = 1 << 30  # a tokenizer file may be large (a 256k vocabulary: ~20 MB)

FILES = {"bpe": "tokenizer.json", "sentencepiece": "tokenizer.model"}
CANDIDATES = {
    "eos": (trainers.EOS, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>"),
    "bos": (trainers.BOS, "<s>", "<|begin_of_text|>", "<bos>"),
    "pad": (trainers.PAD, "<pad>", "[PAD]"),
}


class Tokenizer:
    """A loaded tokenizer; build with `Tokenizer.load(path)` or `train_tokenizer(...)`."""

    def __init__(self, kind: str, data: bytes, origin: str = "<memory>", names: dict | None = None):
        if kind not in FILES:
            raise ValueError(f"{origin}: unknown tokenizer kind {kind!r}; expected one of {FILES}")
        self.kind, self.origin, self._data, self._names = kind, origin, data, names or {}
        try:
            if kind == "bpe":
                import tokenizers

                self._hf = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
                self._hf.encode_special_tokens = True  # special strings in text are text
                self._vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
            else:
                import sentencepiece

                self._sp = sentencepiece.SentencePieceProcessor(model_proto=data)
                self._vocab_size = self._sp.get_piece_size()
        except Exception as e:  # the backends raise assorted exception types
            raise ValueError(f"{origin}: not a valid {FILES[kind]} file ({e})") from None
        self._special = self._resolve_specials(self._names)

    def __getstate__(self) -> dict:
        return {"kind": self.kind, "data": self._data, "origin": self.origin, "names": self._names}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # -- loading and saving ---------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a directory holding tokenizer.json or tokenizer.model, or from that file.

        A directory with both (as some Hugging Face repos have) loads tokenizer.json.
        """
        path = Path(path)
        if path.is_dir():
            file = next((path / f for f in FILES.values() if (path / f).is_file()), None)
            if file is None:
                raise FileNotFoundError(f"{path}: no tokenizer.json or tokenizer.model in it")
        elif path.is_file():
            file = path.resolve()  # the file the caller named: a link of theirs is followed
        else:
            raise FileNotFoundError(f"{path}: tokenizer directory or file does not exist")
        if file.suffix == ".json":
            kind = "bpe"
        elif file.suffix == ".model":
            kind = "sentencepiece"
        else:
            raise ValueError(f"{file}: expected a tokenizer.json or tokenizer.model file")
        data = read_own(file, TOKENIZER_LIMIT, "tokenizer")
        return cls(kind, data, str(file), _config_names(file.parent))

    def save(self, out_dir: str | Path) -> list[str]:
        """Write the tokenizer file and Hugging Face side files; return the names written."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = {k: self.id_to_token(self._special[k]) for k in ("bos", "eos", "pad")}
        tokens = {f"{k}_token": v for k, v in names.items()}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **tokens,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
        }
        if self.kind == "sentencepiece":
            # transformers' SentencePiece-backed class (ids match ours on ordinary text
            # with transformers 5; older versions may apply their own space conventions)
            config.update(tokenizer_class="LlamaTokenizer", legacy=False, add_prefix_space=False)
        (out_dir / FILES[self.kind]).write_bytes(self._data)
        _write_json(out_dir / "tokenizer_config.json", config)
        _write_json(out_dir / "special_tokens_map.json", tokens)
        return [FILES[self.kind], "tokenizer_config.json", "special_tokens_map.json"]

    def sha256(self) -> str:
        """sha256 of the tokenizer file's bytes (as saved)."""
        return hashlib.sha256(self._data).hexdigest()

    # -- vocabulary --------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_id(self) -> int:
        return self._special["eos"]

    @property
    def bos_id(self) -> int:
        return self._special["bos"]

    @property
    def pad_id(self) -> int:
        return self._special["pad"]

    def token_to_id(self, token: str) -> int | None:
        if self.kind == "bpe":
            return self._hf.token_to_id(token)
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token else None

    def id_to_token(self, i: int) -> str:
        self._check_ids([i])
        return self._hf.id_to_token(i) if self.kind == "bpe" else self._sp.id_to_piece(i)

    def _resolve_specials(self, names: dict[str, str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for role, candidates in CANDIDATES.items():
            if self.kind == "sentencepiece":
                native = {"eos": self._sp.eos_id, "bos": self._sp.bos_id, "pad": self._sp.pad_id}
                if native[role]() >= 0:
                    found[role] = native[role]()
                    continue
            for name in ([names[role]] if role in names else []) + list(candidates):
                if (i := self.token_to_id(name)) is not None:
                    found[role] = i
                    break
        if "eos" not in found:
            raise ValueError(
                f"{self.origin}: no EOS token found; expected one of {CANDIDATES['eos']}"
            )
        return {
            "bos": found.get("bos", found["eos"]),
            "pad": found.get("pad", found["eos"]),
            **found,
        }

    # -- encoding ----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; no BOS/EOS added, special-token strings encoded as text."""
        try:
            if self.kind == "bpe":
                return self._hf.encode(text, add_special_tokens=False).ids
            return self._sp.encode(text)
        except (TypeError, RuntimeError):
            _check_texts([text])
            raise

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        try:
            if self.kind == "bpe":
                encodings = self._hf.encode_batch_fast(texts, add_special_tokens=False)
                return [e.ids for e in encodings]
            return self._sp.encode(texts)
        except (TypeError, RuntimeError):
            _check_texts(texts)
            raise

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens included."""
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        if self.kind == "bpe":
            return self._hf.decode(ids, skip_special_tokens=False)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:  # SentencePiece drops control pieces when decoding: render them
            if self._sp.is_control(i):
                parts += [self._sp.decode(run), self._sp.id_to_piece(i)]
                run = []
            else:
                run.append(i)
        parts.append(self._sp.decode(run))
        return "".join(parts)

    def _check_ids(self, ids: list[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self._vocab_size):
            bad = next(i for i in ids if not 0 <= i < self._vocab_size)
            raise ValueError(f"{self.origin}: token id {bad} outside [0, {self._vocab_size})")

    def __repr__(self) -> str:
        return (
            f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, origin={self.origin!r})"
        )


def _check_texts(texts: list) -> None:
    """Turn the backends' opaque errors into clear ones: wrong type or invalid Unicode."""
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {n}: expected str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"text {n}: not valid Unicode, lone surrogate {text[e.start]!r} at index {e.start}"
            ) from None


def _config_names(folder: Path) -> dict[str, str]:
    """Special-token names from a Hugging Face tokenizer_config.json, if there is one."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(read_own(path, METADATA_LIMIT, "tokenizer").decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    names = {}
    for role in ("eos", "bos", "pad"):
        value = config.get(f"{role}_token")
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            names[role] = value
    return names


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def train_tokenizer(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    kind: str = "bpe",
    vocab_size: int = 4096,
    text_field: str = "text",
    max_bytes: int | None = None,
    overwrite: bool = False,
) -> Tokenizer:
    """Train a tokenizer on `inputs` (read with `iter_documents`) and save it to `out_dir`.

    The folder is written to a temporary sibling and renamed into place. An existing
    non-empty `out_dir` is an error, unless `overwrite=True` and it holds a tokenizer.
    """
    if kind not in FILES:
        raise ValueError(f"kind must be one of {sorted(FILES)}, got {kind!r}")
    if not isinstance(vocab_size, int) or vocab_size < trainers.MIN_VOCAB:
        raise ValueError(f"vocab_size must be an int >= {trainers.MIN_VOCAB}, got {vocab_size!r}")
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir}: already exists (use overwrite=True to replace it)")
        if not any((out_dir / f).is_file() for f in FILES.values()):
            raise FileExistsError(f"{out_dir}: not empty and holds no tokenizer; not replacing it")
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    texts = trainers.TextBudget(inputs, text_field, max_bytes)
    print(f"training {kind} tokenizer (vocab {vocab_size}) on {[str(p) for p in inputs]}")
    start = time.perf_counter()
    if kind == "bpe":
        data = trainers.train_bpe_bytes(texts, vocab_size)
    else:
        data = trainers.train_sentencepiece_bytes(texts, vocab_size)
    tmp = temp_sibling(out_dir)
    try:
        Tokenizer(kind, data, str(out_dir / FILES[kind])).save(tmp)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tok = Tokenizer.load(out_dir)
    print(
        f"trained {kind} tokenizer in {time.perf_counter() - start:.1f}s on {texts.documents} "
        f"documents ({texts.bytes / 1e6:.1f} MB): vocab {tok.vocab_size} -> {out_dir}"
    )
    return tok
