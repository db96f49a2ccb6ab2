"""The study of a run trained on a mixture (`[[data.sources]]`): one source group per
mixture source.

Design choices:
- For a mixture run (its recorded config lists two or more sources) and no `--data`,
  the evaluation set is every source's validation windows (the same `eval_windows`
  evenly spaced windows each, as the trainer's `val_loss/<name>`), one after the other,
  the first source's first. Each predicted token's source group is its mixture
  source's name, so `sources.csv` gives each source's loss and bits per byte.
- `val_loss` and `val_bpb` stay the first source's alone (the first `main_rows` rows),
  which is the run's `val_loss` in `strata.json`.
- The other sources' datasets are found by the run layer's rule, from the run folder;
  a missing one is a clear error suggesting `--data` (which studies one dataset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from strata.run.dataset import resolve_dataset
from strata.study.discover import Target
from strata.tokenizer.fsutil import read_own
from strata.tokenizer.shards import TokenShards


def mixture_sources(target: Target) -> list[dict[str, Any]]:
    """The recorded `[[data.sources]]` of a mixture run ([] for one dataset)."""
    sources = target.run_config.get("data", {}).get("sources") or []
    return sources if len(sources) > 1 else []


def _label(source: dict[str, Any]) -> str:
    return source.get("name") or Path(str(source["dataset"])).name


def source_datasets(target: Target, sources: list[dict[str, Any]]) -> list[Path]:
    out_dir = target.run_config.get("run", {}).get("out_dir", "runs")
    found = []
    for source in sources:
        try:
            found.append(resolve_dataset(str(source["dataset"]), target.run_dir, out_dir))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; pass --data DIR to study one dataset") from None
    return found


def mixture_eval_set(target: Target, first, seq_len: int, count: int, table, build):
    """The evaluation set of a mixture run: `first` (the first source's, built by
    `build(val, seq_len, count, table)`) then every other source's, grouped by source
    name. Returns (EvalSet, main_rows, the datasets' index bytes for the cache key)."""
    sources = mixture_sources(target)
    datasets = source_datasets(target, sources)
    sets = [first] + [build(TokenShards(d, "val"), seq_len, count, table) for d in datasets[1:]]
    names = [_label(s) for s in sources]
    group = np.concatenate(
        [np.full(s.targets.shape, i, dtype=np.int64) for i, s in enumerate(sets)]
    )
    merged = type(first)(
        np.concatenate([s.inputs for s in sets]), np.concatenate([s.targets for s in sets]),
        np.concatenate([s.nbytes for s in sets]), group, names,
    )  # fmt: skip
    key = b"".join(read_own(d / "index.json", None, "dataset") for d in datasets[1:])
    return merged, len(first.inputs), key
