"""Strata: a from-scratch LLM pretraining codebase that publishes checkpoints to study."""

from setuptools import find_packages, setup

setup(
    name="strata",
    version="0.1.0",
    description="LLM pretraining with Pythia-style published checkpoints, built to be studied",
    python_requires=">=3.10",
    packages=find_packages(include=["model*", "tokenizer*", "train*", "checkpoints*"]),
    install_requires=[
        "torch>=2.7",  # FSDP2 fully_shard, DTensor, distribute_tensor(src_data_rank)
        "numpy",
        "tokenizers>=0.19",
        "sentencepiece",
        "safetensors",
        "tqdm",
        "wandb",
        "tomli; python_version < '3.11'",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "transformers>=4.45", "ruff", "pyarrow", "zstandard"],
        "flash": ["flash-attn"],
        "data": ["pyarrow", "zstandard"],
    },
    entry_points={"console_scripts": ["strata=train.cli:main"]},
)
