"""Shared fixtures: a tiny tokenizer and prepared dataset made from synthetic text."""

import json
from pathlib import Path

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


def write_mc_task(root: Path, repeat: int = 8) -> Path:
    """A local lm-evaluation-harness task (YAML, data in a JSON file: no network) of
    3 x `repeat` two-choice examples the tiny corpus makes learnable (`def function_N(x):`,
    `value_N = x * ...`, `return value_...` against continuations it never has): chance
    0.5. benchmarks/tasks.py uses it too."""
    rows = []
    for i in range(repeat):
        rows.append({"context": f"def function_{i}(", "choices": ["x):", "q):"], "label": 0})
        rows.append({"context": f"    value_{i % 5} = x", "choices": [" *", " /"], "label": 0})
        rows.append({"context": "    return", "choices": [" value_1", " zebra_1"], "label": 0})
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mc.yaml").write_text(
        "task: strata_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'mc.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root / "mc.yaml"


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
