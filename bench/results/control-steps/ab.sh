#!/bin/bash
# Control phase, before (a10943b: per-switch state copied per change, full collection per
# change, counter readings taken in one go) and after (539f361), alternating, both modes,
# 30 changes at 2,000 services. "before" runs from a worktree of a10943b at /tmp/lbrp-before.
cd /work/main
OUT=bench/results/control-steps
B=".venv/bin/python bench/run.py --phases control --modes learn,conntrack --lab-switches linux"
for i in "$@"; do
  echo "== before-$i $(date +%T)"
  $B --app-src /tmp/lbrp-before --out $OUT/before-$i.json > $OUT/before-$i.log 2>&1
  grep -E 'REST|p90|max' $OUT/before-$i.log
  echo "== after-$i $(date +%T)"
  $B --out $OUT/after-$i.json > $OUT/after-$i.log 2>&1
  grep -E 'REST|p90|max' $OUT/after-$i.log
done
echo "done $(date +%T)"
