#!/usr/bin/env bash
# Everything that needs a GPU, in two halves of under 10 minutes each (one device call
# each): `run` = the GPU-only tests, a short bf16 training run through launch.sh on the
# default data, plain against fused cross-entropy at a 50k vocabulary and checkpoint
# writes of a 1B model; `speed` = the training step against
# transformers (eager and compiled, 124M-class and 1B shapes, with MFU), attention
# backends and MoE. Each part has its own time limit and a failure does not stop the
# others; the log goes to $OUT/gpu_check-HALF.log (or runs/) for BENCHMARKS.md.
#
#   benchmarks/gpu_check.sh run        # PYTHON=python3 by default
#   benchmarks/gpu_check.sh speed
#   benchmarks/gpu_check.sh quick      # one call of under 9 minutes, for a short device
#                                      # lease: GPU tests, 124M and 1B step with MFU,
#                                      # fused loss, attention
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
HALF=${1:?usage: benchmarks/gpu_check.sh run|speed|quick}
LOG=${OUT:-runs}/gpu_check-$HALF.log
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
part() {  # part SECONDS command...: run one part under a time limit, report its status
    local limit=$1; shift
    echo; echo "+ $*"
    timeout "$limit" "$@"; echo "= exit $? after ${SECONDS}s in all"
}

echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

if [ "$HALF" = quick ]; then  # one device call of under 9 minutes: what issue 7 measures
    part 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/model/test_attention_backend.py \
        tests/train/test_no_sync.py tests/train/test_devices.py
    part 110 "$PYTHON" benchmarks/train_step.py --preset llama-130m --device cuda \
        --dtype bf16 --batch 16 --seq-len 1024 --threads 8 --rounds 3 --steps 5
    part 150 "$PYTHON" benchmarks/train_step.py --preset llama-1b --device cuda \
        --dtype bf16 --batch 4 --seq-len 2048 --threads 8 --rounds 3 --steps 3
    part 40 "$PYTHON" benchmarks/loss.py --device cuda --dtype bf16 --vocab 50304 \
        --positions 16384 --d-model 2048 --chunks 0,4096,1024
    part 60 "$PYTHON" benchmarks/attention.py --device cuda --dtype bf16 --seq-len 2048 --batch 8
elif [ "$HALF" = run ]; then
    part 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/model/test_attention_backend.py \
        tests/train/test_no_sync.py tests/train/test_devices.py
    part 200 env PYTHON="$PYTHON" STUDY=0 ./launch.sh configs/debug.toml run.name=gpu-check \
        train.max_steps=100 log.every=20
    part 40 "$PYTHON" benchmarks/loss.py --device cuda --dtype bf16 --vocab 50304 \
        --positions 16384 --d-model 2048 --chunks 0,4096,1024
    part 180 "$PYTHON" benchmarks/checkpoint.py --preset pythia-1b --device cuda --repeat 2
else
    part 110 "$PYTHON" benchmarks/train_step.py --preset llama-130m --device cuda \
        --dtype bf16 --batch 16 --seq-len 1024 --threads 8 --rounds 3 --steps 5
    part 150 "$PYTHON" benchmarks/train_step.py --preset llama-130m --device cuda \
        --dtype bf16 --batch 16 --seq-len 1024 --threads 8 --rounds 3 --steps 5 --compile
    part 150 "$PYTHON" benchmarks/train_step.py --preset llama-1b --device cuda \
        --dtype bf16 --batch 4 --seq-len 2048 --threads 8 --rounds 3 --steps 3
    part 60 "$PYTHON" benchmarks/attention.py --device cuda --dtype bf16 --seq-len 2048 --batch 8
    part 90 "$PYTHON" benchmarks/moe.py --device cuda --dtype bf16 --batch 16 --seq-len 1024
fi
