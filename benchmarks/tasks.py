"""Downstream tasks in the study: seconds per revision with and without `--tasks`, and the
harness over our model against the harness's own Hugging Face model and against our
direct scoring of the same requests, at the same batch size.

    PYTHONPATH=. python benchmarks/tasks.py RUN [--examples 240] [--batch-size 16]

RUN is a trained run (e.g. `configs/debug.toml` on the stdlib data); a local
multiple-choice task of `--examples` examples (two choices each, as in
tests/study/test_tasks.py) is written to a temporary folder. One process, the study's
device (CPU here). Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from strata.checkpoints.load import load
from strata.study import study
from strata.study.discover import discover
from strata.study.harness import StrataLM, Tasks, run_tasks
from strata.study.settings import StudySettings
from strata.tokenizer import Tokenizer


def write_task(root: Path, examples: int) -> Path:
    rows = []
    for i in range(examples):
        kind = i % 3
        if kind == 0:
            rows.append({"context": f"def function_{i}(", "choices": ["x):", "q):"], "label": 0})
        elif kind == 1:
            rows.append({"context": f"    value_{i % 5} = x", "choices": [" *", " /"], "label": 0})
        else:
            rows.append({"context": "    return", "choices": [" value_1", " zebra_1"], "label": 0})
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mc.yaml").write_text(
        "task: bench_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'mc.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root / "mc.yaml"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--examples", type=int, default=240)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    import lm_eval

    revisions = discover(args.run).revisions
    knobs = {"eval_windows": 16, "mem_samples": 16, "batch_size": args.batch_size,
             "device": "cpu", "quiet": True}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = write_task(root, args.examples)
        plain = timed(lambda: study(args.run, out=root / "plain", **knobs))
        both = timed(lambda: study(args.run, out=root / "tasks", tasks=str(task), **knobs))
        n = len(revisions)
        print(f"study, {n} revisions: {plain / n:.2f} s per revision without tasks, "
              f"{both / n:.2f} s with {args.examples} task examples")  # fmt: skip
        last = revisions[-1].path
        model, settings = load(last), StudySettings(batch_size=args.batch_size)
        tok = Tokenizer.load(last)
        tasks = Tasks(str(task))
        ours = timed(lambda: run_tasks(model, tok, model.config.vocab_size, tasks, settings))
        hf = timed(lambda: lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(last), "device": "cpu",
                                    "dtype": "float32", "batch_size": args.batch_size},
            tasks=tasks.names, task_manager=tasks.manager, verbosity="ERROR",
            bootstrap_iters=1000))  # fmt: skip
        lm = StrataLM(model, tok, model.config.vocab_size, args.batch_size)
        rows = [json.loads(x) for x in (root / "mc.jsonl").read_text().splitlines()]
        pairs = [lm._pair(r["context"], c) for r in rows for c in r["choices"]]
        direct = timed(lambda: lm._score(pairs))
        print(f"{args.examples} examples ({len(pairs)} requests), batch {args.batch_size}: "
              f"harness + StrataLM {ours:.2f} s, harness + its HF model on the folder "
              f"{hf:.2f} s, StrataLM scoring alone {direct:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
