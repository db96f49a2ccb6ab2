#!/usr/bin/env bash
# Time the whole quickstart (`./launch.sh` with no argument) from nothing: corpus,
# tokenizer, shards, training, publication, study report. Runs in a temporary copy of
# the committed tree so existing runs/ are untouched. Prints wall time, the
# validation-loss ratio between the last published revision and step 0 (the target is
# <= 0.5) and the study's last row; KEEP=DIR copies the study folder there.
#
#   benchmarks/quickstart.sh            # uses python3 from PATH (torch installed)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$ROOT" archive HEAD | tar -x -C "$WORK"
cd "$WORK"
start=$(date +%s.%N)
PYTHONPATH="$WORK" ./launch.sh > "$WORK/launch.log" 2>&1 || { tail -20 "$WORK/launch.log"; exit 1; }
end=$(date +%s.%N)
python3 - "$start" "$end" <<'PY'
import json, sys
start, end = map(float, sys.argv[1:])
revs = json.load(open("runs/quickstart/checkpoints/manifest.json"))["revisions"]
first, last = revs[0], revs[-1]
print(f"quickstart wall time: {end - start:.0f} s")
print(f"revisions published: {len(revs)} (steps {[r['step'] for r in revs]})")
print(f"val loss: step 0 {first['val_loss']:.4f} -> step {last['step']} {last['val_loss']:.4f} "
      f"(ratio {last['val_loss'] / first['val_loss']:.3f})")
import csv
rows = list(csv.DictReader(open("runs/quickstart/study/metrics.csv")))
keys = ("revision", "val_loss", "val_bpb", "mem_seen", "mem_unseen", "n_seen", "n_unseen")
print(f"study: {len(rows)} rows; last: " + ", ".join(f"{k} {rows[-1][k]}" for k in keys))
PY
grep -E "^== |study" "$WORK/launch.log" | grep -v "^step" | tail -6
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r runs/quickstart/study/. "$KEEP/"; fi
