#!/usr/bin/env bash
# Every benchmark, CPU set first (under 10 minutes on 2 cores), then the GPU set when a
# GPU is visible (skipped otherwise). Results go to stdout; copy them to BENCHMARKS.md
# with the machine and the date.
#
#   benchmarks/run_all.sh               # PYTHON=python3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
run() { echo; echo "+ $*"; "$@"; }

echo "== $(date -u +%F) $(uname -m), $(nproc) cores, torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
# the default data (corpus, tokenizer, shards), built once as launch.sh does
DATA=runs/_data/stdlib
if [ ! -f "$DATA/shards/index.json" ]; then
    "$PYTHON" -m strata.cli corpus stdlib --out "$DATA/corpus"
    "$PYTHON" -m strata.cli tokenizer train "$DATA/corpus/train.jsonl" --out "$DATA/tokenizer" --vocab-size 1024
    "$PYTHON" -m strata.cli prepare "$DATA/corpus/train.jsonl" --val "$DATA/corpus/val.jsonl" \
        --tokenizer "$DATA/tokenizer" --out "$DATA/shards"
fi

echo; echo "== CPU"
run "$PYTHON" benchmarks/train_step.py --rounds 5 --steps 3
run "$PYTHON" benchmarks/moe.py --rounds 3 --steps 2
run "$PYTHON" benchmarks/data.py --steps 300
run "$PYTHON" benchmarks/checkpoint.py --preset llama-60m --repeat 2
run "$PYTHON" benchmarks/checkpoint.py --preset llama-60m --only state --repeat 2
run "$PYTHON" benchmarks/attention.py
run "$PYTHON" benchmarks/loss.py

if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo; echo "== GPU"
    run "$PYTHON" benchmarks/train_step.py --preset llama-130m --device cuda --dtype bf16 \
        --batch 16 --seq-len 1024 --threads 8
    run "$PYTHON" benchmarks/train_step.py --preset llama-1b --device cuda --dtype bf16 \
        --batch 4 --seq-len 2048 --threads 8
    run "$PYTHON" benchmarks/moe.py --device cuda --dtype bf16 --batch 16 --seq-len 1024
    run "$PYTHON" benchmarks/checkpoint.py --preset llama-1b --device cuda
    run "$PYTHON" benchmarks/attention.py --device cuda --dtype bf16 --seq-len 2048 --batch 8
    run "$PYTHON" benchmarks/loss.py --device cuda --dtype bf16 --vocab 50304 \
        --positions 16384 --d-model 2048
else
    echo; echo "== GPU: none visible, GPU cases skipped"
fi
