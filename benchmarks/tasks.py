"""Downstream tasks in the study: seconds per revision with and without `--tasks`, and the
harness over our model against the harness's own Hugging Face model and against our
direct scoring of the same requests, at the same batch size.

    PYTHONPATH=. python benchmarks/tasks.py RUN [--examples 240] [--batch-size 16]

RUN is a run trained on the tests' synthetic corpus (tests/conftest.py); its local
multiple-choice task (`write_mc_task`, two choices each) of about `--examples`
examples is written to a temporary folder. One process, the study's
device (CPU here). Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from strata.checkpoints.harness import StrataLM, Tasks, run_tasks
from strata.checkpoints.load import load
from strata.study import study
from strata.study.discover import discover
from strata.study.settings import StudySettings
from strata.tokenizer import Tokenizer

from tests.conftest import write_mc_task  # the synthetic corpus's task


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
        task = write_mc_task(root, max(1, args.examples // 3))
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
        print(f"{len(rows)} examples ({len(pairs)} requests), batch {args.batch_size}: "
              f"harness + StrataLM {ours:.2f} s, harness + its HF model on the folder "
              f"{hf:.2f} s, StrataLM scoring alone {direct:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
