#!/usr/bin/env bash
# Strata launcher: a thin wrapper around `strata train` and torchrun.
#
#   ./launch.sh                          quickstart: build the default data, train
#                                        configs/quickstart.toml, publish checkpoints,
#                                        write the study report
#   ./launch.sh CONFIG.toml [k=v ...]    any recipe, with section.key=value overrides
#
# When the recipe's data.dataset is the embedded default (runs/_data/stdlib/shards), the
# corpus, tokenizer and shards are built first, each step skipped when already done.
# No GPU: one process (NPROC=n for n gloo processes). GPUs: torchrun over NPROC processes
# per node (default: every visible GPU). Many nodes: set NNODES (and MASTER_ADDR,
# MASTER_PORT) on every node, or start it with `srun` inside an sbatch job, where the
# SLURM variables give the node count and the first node of the job is the rendezvous
# host (docs/slurm.sbatch).
# Preemption: SIGTERM or SIGUSR1 (to launch.sh, or to every process as SLURM does) makes
# the trainer finish its step, write a resume checkpoint and exit 0; rerunning resumes.
# Under torchrun, torchrun itself ignores both signals (otherwise it would kill the
# workers 30 s later and exit non-zero) and launch.sh forwards them to the workers.
# After the quickstart (or with STUDY=1) `strata study` writes RUN/study/report.html.
# Environment: PYTHON (interpreter, default python3), NPROC, NNODES, MASTER_ADDR,
# MASTER_PORT (default 29500), STRATA_VOCAB (default tokenizer size, 1024), STUDY (0/1),
# DRY_RUN=1 (build the data if needed, print the training command, run nothing).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
strata() { "$PYTHON" -m strata.cli "$@"; }

QUICKSTART=$(( $# == 0 ))
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

NNODES=${NNODES:-${SLURM_NNODES:-1}}
DATASET=$(strata config "$CONFIG" "$@" --get data.dataset)
if [ "$DATASET" = "$DEFAULT_DATA/shards" ]; then
    if [ "$NNODES" -gt 1 ] && [ ! -f "$DATASET/index.json" ]; then
        echo "launch.sh: build the default data on one node first (./launch.sh configs/debug.toml)" >&2
        exit 2
    fi
    build_default_data
fi

GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
NPROC=${NPROC:-$(( GPUS > 0 ? GPUS : 1 ))}
TRAIN=(-m strata.cli train "$CONFIG" "$@")
IGNORE_SIGNALS=0  # start the command with SIGTERM/SIGUSR1 ignored (torchrun, below)
if [ "$NNODES" -le 1 ] && [ "$NPROC" -le 1 ]; then
    CMD=("$PYTHON" "${TRAIN[@]}")  # the trainer itself handles SIGTERM/SIGUSR1
    echo "== training $CONFIG (1 process, $GPUS GPU(s)) =="
else
    # torchrun must not act on SIGTERM/SIGUSR1 itself (it would kill the workers 30 s
    # later and exit non-zero): it is told not to handle them and starts with both
    # ignored; launch.sh forwards them to the workers. An older torchrun without
    # --signals-to-handle handles SIGTERM itself and forwards it.
    TORCHRUN=("$PYTHON" -m torch.distributed.run)
    HELP=$("${TORCHRUN[@]}" --help 2>/dev/null || true)
    if [[ $HELP == *--signals-to-handle* ]]; then
        TORCHRUN+=(--signals-to-handle=SIGINT,SIGHUP,SIGQUIT)
        IGNORE_SIGNALS=1
    fi
    if [ "$NNODES" -gt 1 ]; then
        if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
            # The whole list, then its first line: `| head -n 1` would close the pipe
            # early and, under pipefail, fail the script with scontrol's SIGPIPE (141).
            HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
            MASTER_ADDR=${HOSTS%%$'\n'*}
        fi
        : "${MASTER_ADDR:?launch.sh: set MASTER_ADDR (the rendezvous host) for NNODES=$NNODES}"
        CMD=("${TORCHRUN[@]}" --nnodes="$NNODES" --nproc_per_node="$NPROC"
             --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}"
             --rdzv_id="${SLURM_JOB_ID:-strata}" "${TRAIN[@]}")
        echo "== training $CONFIG ($NNODES nodes x $NPROC processes, rendezvous $MASTER_ADDR) =="
    else
        CMD=("${TORCHRUN[@]}" --standalone --nproc_per_node="$NPROC" "${TRAIN[@]}")
        echo "== training $CONFIG ($NPROC processes, $GPUS GPU(s)) =="
    fi
fi
echo "+ ${CMD[*]}"
[ "${DRY_RUN:-0}" = 1 ] && exit 0  # print the command only

# Run it as a child and wait, forwarding SIGTERM/SIGUSR1: to the trainer itself (one
# process) or to torchrun's workers.
if [ "$IGNORE_SIGNALS" = 1 ]; then
    ( trap '' TERM USR1; exec "${CMD[@]}" ) &
else
    "${CMD[@]}" &
fi
PID=$!
SIGNALLED=0
forward() {
    SIGNALLED=1
    if [ "$IGNORE_SIGNALS" = 1 ]; then pkill "-$1" -P "$PID" 2>/dev/null || true
    else kill "-$1" "$PID" 2>/dev/null || true; fi
}
trap 'forward TERM' TERM
trap 'forward USR1' USR1
STATUS=0
while kill -0 "$PID" 2>/dev/null; do
    STATUS=0
    wait "$PID" || STATUS=$?  # > 128 when a trapped signal interrupted the wait
done
if [ "$STATUS" -gt 128 ]; then  # it ended while a trap ran: collect its own status
    wait "$PID" 2>/dev/null && STATUS=0 || { S=$?; [ "$S" -eq 127 ] || STATUS=$S; }
fi
trap - TERM USR1

# The study report: by default after the quickstart (no CONFIG argument), or STUDY=1.
if [ "$STATUS" = 0 ] && [ "$SIGNALLED" = 0 ] && [ "${STUDY:-$QUICKSTART}" = 1 ] \
        && [ "${NODE_RANK:-${SLURM_NODEID:-0}}" = 0 ]; then
    RUN_DIR=$(strata config "$CONFIG" "$@" --get run.dir)
    echo "== studying the published checkpoints of $RUN_DIR =="
    echo "+ strata study $RUN_DIR"
    strata study "$RUN_DIR"
fi
exit "$STATUS"
