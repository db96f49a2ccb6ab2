"""`strata study RUN_OR_DIR`: the command-line face of `strata.study.study`.

    strata study runs/quickstart                     -> runs/quickstart/study/report.html
    strata study hf_revisions/ --data runs/_data/stdlib/shards --seq-len 256
    strata study runs/a runs/b runs/fork   -> runs/a/study/compare-b-fork/report.html

The measuring options (`--eval-windows`, `--mem-samples`, ...) are generated from the
fields of `StudySettings`: one option per field, its type, default, bounds and help
taken from the field, so the defaults live in one place. docs/study.md describes them.
Errors surface as ValueError / FileNotFoundError, which `strata.cli.main` turns into
one `strata: error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses

from strata.model.typed import field_docs, optional_of, type_hints


def add_settings(p: argparse.ArgumentParser, cls: type) -> None:
    """One `--name-with-dashes` option per field of the typed settings class `cls`."""
    hints, docs = type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        kind, _ = optional_of(hints[f.name])
        p.add_argument(
            cls.spell(f.name),
            dest=f.name,
            type=kind,
            default=f.default,
            choices=f.metadata.get("choices"),
            metavar="N" if kind is int else f.name.upper(),
            help=f"{docs[f.name]} (default: %(default)s)",
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    from strata.study.settings import StudySettings

    p = sub.add_parser(
        "study", help="evaluate every published revision; write CSV, plots and an HTML report"
    )
    p.add_argument(
        "run", metavar="RUN_OR_DIR", nargs="+",
        help="run folder, its checkpoints/, or a folder of stepN; several: one report "
        "comparing them (study/compare.py)",
    )  # fmt: skip
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: RUN/study)")
    p.add_argument(
        "--data", metavar="DIR", default=None, help="prepared dataset (default: the run's)"
    )
    add_settings(p, StudySettings)
    p.add_argument("--force", action="store_true", help="ignore the cache; evaluate all")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> None:
    from strata.study import study
    from strata.study.settings import StudySettings

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(StudySettings)}
    # prints its summary line unless --quiet
    if len(args.run) > 1:
        from strata.study.compare import compare

        compare(args.run, out=args.out, data=args.data, settings=StudySettings(**values),
                force=args.force, quiet=args.quiet)  # fmt: skip
        return
    study(args.run[0], out=args.out, data=args.data, settings=StudySettings(**values),
          force=args.force, quiet=args.quiet)  # fmt: skip
