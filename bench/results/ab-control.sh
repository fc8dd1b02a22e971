#!/bin/bash
# Control phase A/B: lbrp from BEFORE_SRC (a checkout, through --app-src) against this
# repository, alternating, both modes, 30 changes at 2,000 services; JSON and logs to OUT.
# Usage: bench/results/ab-control.sh OUT BEFORE_SRC RUN...
cd "$(dirname "$0")/../.." || exit 1
OUT=$1 BEFORE=$2
shift 2
B=".venv/bin/python bench/run.py --phases control --modes learn,conntrack --lab-switches linux"
for i in "$@"; do
  echo "== before-$i $(date +%T)"
  $B --app-src "$BEFORE" --out "$OUT/before-$i.json" > "$OUT/before-$i.log" 2>&1
  grep -E 'REST|p90|max' "$OUT/before-$i.log"
  echo "== after-$i $(date +%T)"
  $B --out "$OUT/after-$i.json" > "$OUT/after-$i.log" 2>&1
  grep -E 'REST|p90|max' "$OUT/after-$i.log"
done
echo "done $(date +%T)"
