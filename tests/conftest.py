"""Shared fixtures: a tiny tokenizer and prepared dataset made from synthetic text."""

import json

import pytest
from strata.run.config import load_config


def synthetic_docs(n: int, offset: int = 0) -> list[dict]:
    """Small, learnable Python-like documents."""
    docs = []
    for i in range(offset, offset + n):
        body = "".join(f"    value_{j} = x * {j % 7} + {i % 13}\n" for j in range(i % 5 + 2))
        text = f"def function_{i}(x):\n{body}    return value_{i % 5 + 1}\n"
        docs.append({"text": text, "source": f"mod_{i % 10}.py"})
    return docs


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from strata.tokenizer import prepare, train_tokenizer

    root = tmp_path_factory.mktemp("tiny_data")
    for name, docs in (("train", synthetic_docs(400)), ("val", synthetic_docs(40, 1000))):
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(d) + "\n" for d in docs)
    train_tokenizer([root / "train.jsonl"], root / "tokenizer", vocab_size=320)
    out = root / "shards"
    prepare(
        [root / "train.jsonl"],
        out,
        root / "tokenizer",
        val_inputs=[root / "val.jsonl"],
        workers=1,
        progress=False,
    )
    return out


def tiny_overrides(dataset, out_dir, **extra) -> list[str]:
    values = {
        "run.out_dir": f"'{out_dir}'",
        "data.dataset": f"'{dataset}'",
        "train.seq_len": 32,
        "train.global_batch_size": 4,
        "train.micro_batch_size": 2,
        "train.max_steps": 12,
        "train.eval_every": 6,
        "train.eval_windows": 4,
        "checkpoint.every": 4,
        "publish.every": 4,
        "log.every": 1,
        "log.progress": "false",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def tiny_config(tiny_dataset, tmp_path):
    """A debug-model config on the tiny dataset, writing under tmp_path."""

    def make(**extra):
        return load_config("configs/debug.toml", tiny_overrides(tiny_dataset, tmp_path, **extra))

    return make
