"""`strata study`: evaluate every published revision of a run and write a report.

    from strata.study import study
    report = study("runs/quickstart")          # -> runs/quickstart/study/report.html

Per revision: validation loss and bits per byte (overall and per source), Pythia-style
memorisation of training sequences split into seen / not yet seen (data-order
contract), parameter norms and their relative change, and MoE routing statistics.
Results are cached per revision, so rerunning evaluates only new revisions. Output:
`metrics.csv`, `sources.csv`, PNG plots, `report.html`, `study.json`. See docs/study.md.

Module map: discover (find revisions), settings, data + sample (what is evaluated; token
bytes come from `strata.tokenizer.tokbytes`), evaluate (loss/bpb), memorise, norms,
routing, cache, tables (CSV), figures + charts + style (matplotlib plots, loaded
lazily), report (HTML), run.
"""

from strata.study.run import study
from strata.study.settings import StudySettings

__all__ = ["StudySettings", "study"]
