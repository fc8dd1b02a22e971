#!/bin/sh
# perf captures of one benchmark round (plain, then lbrp), summarized as JSON.
# Usage (root): [MODE=conntrack] bench/record.sh oncpu|iperf|offcpu [OUT_DIR [bench/run.py options]]
#   oncpu:  perf's CPU profile with call graphs, 4 s in the saturated and in the paced
#           session run of each setup -> OUT_DIR/profile.json (bench/oncpu.py). The
#           Debian ovs-vswitchd has no symbols: see bench/results/profile/README.md.
#   iperf:  the same, 6 s in the middle of each setup's 10 s iperf3 run (TCP throughput)
#           -> OUT_DIR/profile.json.
#   offcpu: perf's scheduler events, 3 s in the paced run of each setup ->
#           OUT_DIR/offcpu-<setup>.json for ovs-vswitchd's main thread and, with PMD
#           ports (--lb-ports afxdp), OUT_DIR/offcpu-pmd-<setup>.json (bench/offcpu.py).
#           Without bench options it passes --hops.
# MODE: the lbrp session pinning to capture (learn by default).
set -e
KIND=${1:-}
case "$KIND" in
  oncpu) PHASES="sessions paced" ;;
  iperf) PHASES="iperf" ;;
  offcpu) PHASES="paced" ;;
  *) echo "usage: $0 oncpu|iperf|offcpu [OUT_DIR [bench/run.py options]]" >&2; exit 2 ;;
esac
IPERF_S=2
[ "$KIND" = iperf ] && IPERF_S=10
shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$REPO/.venv/bin/python
OUT=${1:-/tmp/lbrp-$KIND}
[ $# -gt 0 ] && shift
[ "$KIND" = offcpu ] && [ $# -eq 0 ] && set -- --hops
MODE=${MODE:-learn}
mkdir -p "$OUT"
LOG=$OUT/bench.log
"$PY" "$REPO/bench/run.py" --phases traffic --rounds 1 --modes "$MODE" --no-select \
    --flush-datapath --iperf-s "$IPERF_S" --out "$OUT/bench-run.json" "$@" > "$LOG" 2>&1 &
BENCH=$!
for s in plain "lbrp-$MODE"; do
  for phase in $PHASES; do
    case $phase in
      sessions) mark="sessions 10 s"; secs=4 ;;
      iperf) mark="iperf3 10 s"; secs=6 ;;
      *) mark="paced sessions"; secs=4 ;;
    esac
    until grep -q "$s: $mark" "$LOG"; do
      kill -0 "$BENCH" 2>/dev/null || { echo "bench ended early: $LOG" >&2; exit 1; }
      sleep 0.2
    done
    sleep 3
    if [ "$KIND" != offcpu ]; then
      perf record -q -F 999 -g -a -o "$OUT/cpu-$s-$phase.data" -- sleep "$secs" > /dev/null 2>&1 || true
    else
      perf record -q -e sched:sched_switch -e sched:sched_waking -g -a \
          -o "$OUT/sched-$s.data" -- sleep 3 > /dev/null 2>&1 || true
    fi
  done
done
wait "$BENCH"
if [ "$KIND" != offcpu ]; then
  captures=""
  for phase in $PHASES; do
    captures="$captures $OUT/cpu-plain-$phase.data $OUT/cpu-lbrp-$MODE-$phase.data"
  done
  # shellcheck disable=SC2086
  "$PY" "$REPO/bench/oncpu.py" $captures > "$OUT/profile.json"
  echo "$OUT/profile.json"
  exit 0
fi
for s in plain "lbrp-$MODE"; do
  "$PY" "$REPO/bench/offcpu.py" "$OUT/sched-$s.data" > "$OUT/offcpu-$s.json"
  echo "$OUT/offcpu-$s.json"
  if "$PY" "$REPO/bench/offcpu.py" --comm 'pmd*' "$OUT/sched-$s.data" \
      > "$OUT/offcpu-pmd-$s.json" 2> /dev/null; then
    echo "$OUT/offcpu-pmd-$s.json"
  else
    rm -f "$OUT/offcpu-pmd-$s.json"
  fi
done
