"""The run layer: the one owner of "a run on disk" (see docs/ARCHITECTURE.md).

    layout    RunPaths (every path of runs/<name>/), locate() (what a path is)
    config    the config schema (typed sections, TOML in and out), read by everyone
    meta      RevisionMeta (strata.json) and DataCursor, one reader and one writer
    manifest  Manifest (checkpoints/manifest.json), one reader and one writer
    dataset   resolve_dataset (the one rule for data.dataset) and dataset_fingerprint

Uses `strata.model` (the model config inside the run config) and `strata.tokenizer`
(file hashing) only; checkpoints/, study/, train/ and the CLI read runs through it.
"""

from strata.run.dataset import dataset_fingerprint, resolve_dataset
from strata.run.layout import Located, RunPaths, locate
from strata.run.manifest import Manifest, ManifestEntry, update_manifest
from strata.run.meta import DataCursor, RevisionMeta

__all__ = [
    "DataCursor",
    "Located",
    "Manifest",
    "ManifestEntry",
    "RevisionMeta",
    "RunPaths",
    "dataset_fingerprint",
    "locate",
    "resolve_dataset",
    "update_manifest",
]
