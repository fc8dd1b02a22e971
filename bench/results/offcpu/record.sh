#!/bin/sh
# How this directory was made: perf's scheduler events, 3 s, during the paced runs of
# one benchmark round (plain, then lbrp learn), then bench/offcpu.py on each capture.
# Usage (root): bench/results/offcpu/record.sh [OUT_DIR]
set -e
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${1:-/tmp/lbrp-offcpu}
mkdir -p "$OUT"
LOG=$OUT/bench.log
"$REPO/.venv/bin/python" "$REPO/bench/run.py" --phases traffic --rounds 1 --modes learn \
    --no-select --flush-datapath --iperf-s 2 --hops --out "$OUT/bench-run.json" > "$LOG" 2>&1 &
BENCH=$!
for s in plain lbrp-learn; do
  until grep -q "$s: paced sessions" "$LOG"; do
    kill -0 "$BENCH" 2>/dev/null || { echo "bench ended early: $LOG" >&2; exit 1; }
    sleep 0.5
  done
  sleep 3
  perf record -q -e sched:sched_switch -e sched:sched_waking -g -a -o "$OUT/sched-$s.data" \
      -- sleep 3 > /dev/null 2>&1
done
wait "$BENCH"
for s in plain lbrp-learn; do
  "$REPO/.venv/bin/python" "$REPO/bench/offcpu.py" "$OUT/sched-$s.data" > "$OUT/offcpu-$s.json"
done
echo "$OUT/offcpu-plain.json $OUT/offcpu-lbrp-learn.json"
