"""`strata export`, `strata import`, `strata generate`: checkpoints in and out of Strata.

The work is done by `strata.checkpoints` (export/import, loading) and
`strata.model.generate`; this module only declares the options and prints. The sampling
options are checked before the checkpoint is read, by `GenerateOptions` (the library's
typed `Sampling` plus `--seed`, spelled as options): `--top-p 0` is one line,
`strata: error: --top-p = 0.0: expected a number in (0, 1] (1 = off)`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from strata.model.generate import Sampling
from strata.model.typed import setting


@dataclass(frozen=True)
class GenerateOptions(Sampling):
    """The sampling options of `strata generate`; errors name the option (`--top-k`)."""

    seed: int = setting(0, ge=0, lt=2**64, expected="an integer in [0, 2**64)")
    """Seed of the sampling generator (`torch.Generator.manual_seed`)."""

    @classmethod
    def spell(cls, name: str) -> str:
        return "--" + name.replace("_", "-")


def _add_export_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face folder")
    p.add_argument("checkpoint", help="published revision, resume checkpoint, or run folder")
    p.add_argument("--to", choices=["hf"], default="hf", help="target format")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="read a local Hugging Face folder as a Strata checkpoint")
    p.add_argument("hf_dir", help="folder with config.json and safetensors weights")
    p.add_argument("--out", required=True, help="output checkpoint folder (must not exist)")
    p.set_defaults(func=cmd_import)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint", help="published revision, HF folder, resume checkpoint or run")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100, help=">= 0")
    p.add_argument("--temperature", type=float, default=0.8, help=">= 0; 0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help=">= 0; 0 = no top-k filter")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1 = off")
    p.add_argument("--seed", type=int, default=0, help="in [0, 2**64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.set_defaults(func=cmd_generate)


def cmd_export(args: argparse.Namespace) -> None:
    from strata.checkpoints.export import export_hf

    print(f"exported {args.checkpoint} -> {export_hf(args.checkpoint, args.out)}")


def cmd_import(args: argparse.Namespace) -> None:
    from strata.checkpoints.export import import_hf

    print(f"imported {args.hf_dir} -> {import_hf(args.hf_dir, args.out)}")


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from strata.checkpoints.export import load_any
    from strata.model.generate import generate
    from strata.train.dist import pick_device

    opts = GenerateOptions(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                           args.seed)  # fmt: skip
    model, tok = load_any(args.checkpoint)
    if tok is None:
        raise ValueError(f"{args.checkpoint}: no tokenizer files next to the weights")
    device = pick_device(args.device)
    model = model.to(device)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt: expected non-empty text")
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    idx = torch.tensor([ids], device=device)
    out = generate(model, idx, opts.max_new_tokens, opts.temperature, opts.top_k, opts.top_p,
                   gen, eos_id=tok.eos_id)  # fmt: skip
    new = [t for t in out[0, len(ids) :].tolist() if t != tok.eos_id]
    print(args.prompt + tok.decode(new))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_export_import(sub)
    _add_generate(sub)
