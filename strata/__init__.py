"""Strata: LLM pretraining that publishes checkpoints to study.

Everything lives under this one import name:

    strata.model        the network (config + presets, attention, MoE, generation)
    strata.tokenizer    tokenizers, corpora, token shards, the data-order contract
    strata.run          the run folder on disk: layout, config schema, revision metadata,
                        manifest, data cursor, dataset resolution
    strata.checkpoints  resume checkpoints, publication, Hugging Face export/import, verify
    strata.study        evaluating every published revision: CSV, figures, report.html
    strata.train        the training loop under torchrun (FSDP2)
    strata.cli          the `strata` command, the one module that imports all of them

The repository keeps one top-level folder per package (`model/`, `tokenizer/`, ...);
`setup.py` maps each onto `strata.<name>`.
"""

__version__ = "0.1.0"


def _source_checkout_path() -> None:
    """Run from a source checkout without installing (`PYTHONPATH=CHECKOUT`, or `python -m
    strata.cli` in the checkout's root): the package folders sit beside `strata/`, so
    the checkout root joins this package's search path and `strata.model` is
    `CHECKOUT/model`, the same mapping `setup.py` installs. An installed copy has no
    `setup.py` beside it and is left alone."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "setup.py").is_file() and (root / "model" / "__init__.py").is_file():
        __path__.append(str(root))


_source_checkout_path()
