"""Data pipeline throughput: the trainer's loader, and `strata prepare` against raw
`tokenizers`.

    PYTHONPATH=. python benchmarks/data.py                  # the default stdlib data
    PYTHONPATH=. python benchmarks/data.py --dataset DIR --corpus FILE.jsonl --tokenizer DIR

1. Loader: `TrainBatches.micro_batches` (shard reads by the data-order contract, the
   background prefetch included) for `--steps` consecutive global batches: tokens/s, to
   compare with what the trainer consumes (benchmarks/train_step.py; the ratio is printed
   when `--consume` gives the trainer's tokens/s); then the same for a `--mixture`
   of N sources (0.6/0.3/0.1 for 3), against the single source (target: >= 0.9x).
2. Prepare: `tokenizer.prepare` with 1 and N workers on the corpus, in MB of UTF-8 text
   per second, against `tokenizers.Tokenizer.encode_batch` on the same documents (all
   threads, no file output): the ceiling for tokenization alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from strata.tokenizer import Tokenizer, TokenShards, prepare
from strata.tokenizer.mixture import integer_weights
from strata.train.data import TrainBatches

DEFAULT = Path("runs/_data/stdlib")
MIXTURE_WEIGHTS = {3: [0.6, 0.3, 0.1]}


def loader(dataset: Path, seq_len: int, batch: int, steps: int, sources: int = 1) -> float:
    """Tokens/s of the trainer's loader over `steps` global batches; `sources` > 1: a
    mixture of that many sources (the dataset opened once per source, weights 0.6, 0.3,
    0.1 for three), what the mixture's order and per-source reads cost."""
    if sources == 1:
        loader = TrainBatches(TokenShards(dataset, "train"), seq_len, batch, batch, seed=0)
    else:
        weights = integer_weights(MIXTURE_WEIGHTS.get(sources, [1] * sources))
        shards = [TokenShards(dataset, "train") for _ in range(sources)]
        loader = TrainBatches(shards, seq_len, batch, batch, seed=0, weights=weights)
    loader.micro_batches(0, torch.device("cpu"))  # open the shards, start the prefetch
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loader.micro_batches(step, torch.device("cpu"))
    return steps * batch * seq_len / (time.perf_counter() - start)


def prepare_rate(corpus: Path, tok_dir: Path, workers: int) -> float:
    """MB/s of UTF-8 text through `prepare` (shards written to a temporary folder)."""
    size = sum(len(json.loads(line)["text"].encode()) for line in corpus.open())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        prepare([corpus], Path(tmp) / "out", tok_dir, workers=workers, progress=False)
        return size / 1e6 / (time.perf_counter() - start)


def raw_rate(corpus: Path, tok_dir: Path) -> float:
    """MB/s of `tokenizers` encode_batch alone on the same documents."""
    texts = [json.loads(line)["text"] for line in corpus.open()]
    size = sum(len(t.encode()) for t in texts)
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(str(tok_dir / "tokenizer.json"))
    start = time.perf_counter()
    tok.encode_batch(texts, add_special_tokens=False)
    return size / 1e6 / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DEFAULT / "shards")
    p.add_argument("--corpus", type=Path, default=DEFAULT / "corpus" / "train.jsonl")
    p.add_argument("--tokenizer", type=Path, default=DEFAULT / "tokenizer")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--consume", type=float, default=0.0, help="trainer tokens/s to compare")
    p.add_argument("--mixture", type=int, default=3, help="also a mixture of N sources (0: no)")
    args = p.parse_args()
    Tokenizer.load(args.tokenizer)  # fail early on a bad folder
    rate = loader(args.dataset, args.seq_len, args.batch, args.steps)
    line = f"loader: {rate:,.0f} tokens/s (seq {args.seq_len}, batch {args.batch})"
    if args.consume:
        line += f", {rate / args.consume:,.0f}x the trainer's {args.consume:,.0f} tokens/s"
    print(line)
    if args.mixture > 1:
        mixed = loader(args.dataset, args.seq_len, args.batch, args.steps, args.mixture)
        print(f"loader, {args.mixture}-source mixture: {mixed:,.0f} tokens/s "
              f"({mixed / rate:.2f}x the single source)")  # fmt: skip
    raw = raw_rate(args.corpus, args.tokenizer)
    for workers in sorted({1, args.workers}):
        mbs = prepare_rate(args.corpus, args.tokenizer, workers)
        print(f"prepare, {workers} worker(s): {mbs:.2f} MB/s ({mbs / raw:.0%} of raw encode)")
    print(f"raw tokenizers encode_batch: {raw:.2f} MB/s")


if __name__ == "__main__":
    main()
