#!/usr/bin/env bash
# Strata launcher: a thin wrapper around `strata train` and torchrun.
#
#   ./launch.sh                          quickstart: build the default data, train
#                                        configs/quickstart.toml, publish checkpoints
#   ./launch.sh CONFIG.toml [k=v ...]    any recipe, with section.key=value overrides
#
# When the recipe's data.dataset is the embedded default (runs/_data/stdlib/shards), the
# corpus, tokenizer and shards are built first, each step skipped when already done.
# No GPU: one process. GPUs: torchrun over NPROC processes (default: every visible GPU).
# Environment: PYTHON (interpreter, default python3), NPROC, STRATA_VOCAB (default
# tokenizer size, 1024).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
strata() { "$PYTHON" -m train.cli "$@"; }

CONFIG=${1:-configs/quickstart.toml}
[ $# -gt 0 ] && shift

DEFAULT_DATA=runs/_data/stdlib
build_default_data() {
    local corpus=$DEFAULT_DATA/corpus tok=$DEFAULT_DATA/tokenizer shards=$DEFAULT_DATA/shards
    if [ ! -f "$corpus/val.jsonl" ]; then
        echo "== building the default corpus (Python standard library source) =="
        strata corpus stdlib --out "$corpus"
    fi
    if [ ! -f "$tok/tokenizer.json" ]; then
        echo "== training the tokenizer =="
        strata tokenizer train "$corpus/train.jsonl" --out "$tok" --vocab-size "${STRATA_VOCAB:-1024}"
    fi
    if [ ! -f "$shards/index.json" ]; then
        echo "== tokenizing into shards =="
        strata prepare "$corpus/train.jsonl" --val "$corpus/val.jsonl" --tokenizer "$tok" --out "$shards"
    fi
}

DATASET=$(strata config "$CONFIG" "$@" --get data.dataset)
if [ "$DATASET" = "$DEFAULT_DATA/shards" ]; then
    build_default_data
fi

GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
NPROC=${NPROC:-$(( GPUS > 0 ? GPUS : 1 ))}
echo "== training $CONFIG ($NPROC process(es), $GPUS GPU(s)) =="
if [ "$NPROC" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
        -m train.cli train "$CONFIG" "$@"
fi
exec "$PYTHON" -m train.cli train "$CONFIG" "$@"
