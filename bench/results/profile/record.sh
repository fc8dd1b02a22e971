#!/bin/sh
# How this directory was made: perf's CPU profile (call graphs) of ovs-vswitchd, 4 s,
# during the saturated and the paced session runs of one benchmark round (plain, then
# lbrp learn), then bench/oncpu.py on the four captures.
# The Debian ovs-vswitchd has no symbols: run an OVS 3.1.0 built from source with
# CFLAGS="-g -O2 -fno-omit-frame-pointer" in its place first (see README.md here).
# Usage (root): [MODE=conntrack] bench/results/profile/record.sh [OUT_DIR [extra bench/run.py options]]
# (MODE: the lbrp session pinning to profile, learn by default)
set -e
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${1:-/tmp/lbrp-profile}
[ $# -gt 0 ] && shift
mkdir -p "$OUT"
LOG=$OUT/bench.log
"$REPO/.venv/bin/python" "$REPO/bench/run.py" --phases traffic --rounds 1 --modes "${MODE:-learn}" \
    --no-select --flush-datapath --iperf-s 2 --out "$OUT/bench-run.json" "$@" > "$LOG" 2>&1 &
BENCH=$!
for s in plain "lbrp-${MODE:-learn}"; do
  for phase in "sessions 10 s" "paced sessions"; do
    until grep -q "$s: $phase" "$LOG"; do
      kill -0 "$BENCH" 2>/dev/null || { echo "bench ended early: $LOG" >&2; exit 1; }
      sleep 0.2
    done
    sleep 3
    tag=$s-$(echo "$phase" | cut -d' ' -f1)
    perf record -q -F 999 -g -a -o "$OUT/cpu-$tag.data" -- sleep 4 > /dev/null 2>&1 || true
  done
done
wait "$BENCH"
"$REPO/.venv/bin/python" "$REPO/bench/oncpu.py" "$OUT/cpu-plain-sessions.data" \
    "$OUT/cpu-lbrp-${MODE:-learn}-sessions.data" "$OUT/cpu-plain-paced.data" \
    "$OUT/cpu-lbrp-${MODE:-learn}-paced.data" > "$OUT/profile.json"
echo "$OUT/profile.json"
