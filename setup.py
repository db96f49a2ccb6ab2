"""Strata: a from-scratch LLM pretraining codebase that publishes checkpoints to study.

One import name, `strata`. The repository keeps one top-level folder per package
(`model/`, `tokenizer/`, `run/`, `checkpoints/`, `study/`, `train/`) and `strata/` holds
the namespace root and the CLI; `package_dir` maps each folder to `strata.<name>`, so an
install puts exactly one package, `strata`, on `sys.path` and a user's own `model.py` or
`train.py` can never shadow ours.
"""

from setuptools import find_packages, setup

PACKAGES = ("model", "tokenizer", "run", "checkpoints", "study", "train")


def _packages() -> tuple[list[str], dict[str, str]]:
    names = ["strata", "strata.cli"]
    package_dir = {"strata": "strata"}
    for folder in PACKAGES:
        package_dir[f"strata.{folder}"] = folder
        names.append(f"strata.{folder}")
        names += [f"strata.{folder}.{sub}" for sub in find_packages(where=folder)]
    return names, package_dir


packages, package_dir = _packages()

setup(
    name="strata",
    version="0.1.0",
    description="LLM pretraining with Pythia-style published checkpoints, built to be studied",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    install_requires=[
        "torch>=2.7",  # FSDP2 fully_shard, DTensor, distribute_tensor(src_data_rank)
        "numpy",
        "tokenizers>=0.19",
        "sentencepiece",
        "safetensors",
        "tqdm",
        "wandb",
        "matplotlib>=3.7",  # the study's figures (Agg backend, no display needed)
        "tomli-w",  # writing the resolved config.toml
        "tomli; python_version < '3.11'",
    ],
    extras_require={
        "test": [
            "pytest",
            "hypothesis",
            "transformers>=4.45",
            "ruff",
            "pyarrow",
            "zstandard",
            "lm_eval>=0.4.13",
            "accelerate",  # lm_eval's own HF model, the reference of tests/study/test_tasks.py
        ],
        "eval": ["lm_eval>=0.4.13"],
        "flash": ["flash-attn"],
        "data": ["pyarrow", "zstandard"],
    },
    entry_points={"console_scripts": ["strata=strata.cli:main"]},
)
