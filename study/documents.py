"""What seeing one document did: the edited documents of a run (excluded or injected),
scored at every revision of every run of a comparison (`strata study RUN_A RUN_B`).

Definitions (docs/study.md):
- The documents are the ones a run's `config.toml` edits: `data.exclude_docs` (and
  `data.exclude_docs_file`) of the study's dataset (the first source; `NAME:ID` ids of
  other sources are left out, with a note), and `data.inject` texts (their tokens and
  EOS, as the trainer showed them).
- `doc_loss`: mean cross-entropy (nats) over the document's tokens, each predicted from
  the tokens before it within chunks of seq_len + 1 tokens (the trainer's windows), in
  float32 over the dataset's vocabulary.
- `doc_mem` / `doc_mem_acc`: prompted with the document's first `mem_prefix` tokens,
  whether greedy decoding reproduces the next `mem_length` exactly, and the fraction of
  those positions it gets right (None when the document is shorter).
- Not cached: documents are few, and each revision is loaded again to score them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from strata.study.data import Plan
from strata.study.evaluate import token_losses
from strata.study.memorise import greedy
from strata.study.settings import StudySettings
from strata.tokenizer import Tokenizer, TokenShards
from strata.tokenizer.edits import excluded_entries


@dataclass(frozen=True)
class EditedDoc:
    label: str  # "excluded 12", "injected 0"
    run: str  # the run whose config edits it
    tokens: np.ndarray  # (n,) int64


def edited_docs(name: str, config: dict[str, Any], plan: Plan, notes: list[str]) -> list[EditedDoc]:
    """The documents run `name`'s config (a dict) excludes or injects."""
    data = config.get("data", {})
    names = [s.get("name") or s.get("dataset", "").rstrip("/").split("/")[-1]
             for s in data.get("sources", [])]  # fmt: skip
    out, train = [], None
    try:
        entries = excluded_entries(data.get("exclude_docs", []), data.get("exclude_docs_file", ""))
    except OSError as err:
        notes.append(f"{name}: data.exclude_docs_file unreadable ({err.strerror}): left out")
        entries = []
    for entry in entries:
        source, _, number = str(entry).rpartition(":")
        if source and names and source != names[0]:
            notes.append(f"{name}: excluded document {entry!r} is not of the studied dataset")
            continue
        train = train or TokenShards(plan.dataset, "train")
        doc = int(number)
        end = train._doc_starts[doc + 1] if doc + 1 < len(train._doc_starts) else train.n_tokens
        start = train._doc_starts[doc]
        out.append(EditedDoc(f"excluded {entry}", name, train.read(start, end - start)))
    inject = data.get("inject", [])
    if inject:
        tok = Tokenizer.load(plan.dataset / "tokenizer")
        for i, item in enumerate(inject):
            text = item.get("text") or _read(item.get("file", ""), notes, name)
            ids = [*tok.encode(text), tok.eos_id] if text else []
            if ids:
                out.append(EditedDoc(f"injected {i}", name, np.asarray(ids, dtype=np.int64)))
    return out


def _read(path: str, notes: list[str], name: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        notes.append(f"{name}: data.inject file {path!r} unreadable ({err.strerror}): left out")
        return ""


@torch.no_grad()
def doc_scores(model: torch.nn.Module, doc: EditedDoc, plan: Plan, settings: StudySettings) -> dict:
    """doc_loss, doc_mem and doc_mem_acc of one document under `model`."""
    vocab, T, tokens = plan.index["vocab_size"], plan.seq_len, doc.tokens
    losses = []
    for start in range(0, max(len(tokens) - 1, 0), T):
        chunk = tokens[start : start + T + 1]
        ce = token_losses(model, chunk[None, :-1], chunk[None, 1:], 1, vocab)
        losses.append(ce.ravel())
    row: dict[str, Any] = {"doc_loss": float(np.concatenate(losses).mean()) if losses else None}
    prefix, length = settings.mem_prefix, settings.mem_length
    row |= {"doc_mem": None, "doc_mem_acc": None}
    if len(tokens) >= prefix + length:
        generated = greedy(model, tokens[None, :prefix], length, 1, vocab)[0]
        match = generated == tokens[prefix : prefix + length]
        row |= {"doc_mem": bool(match.all()), "doc_mem_acc": float(match.mean())}
    return row
