#!/bin/sh
# REST changes under learn's expiries: the code with LEARN's lookup (the installed app)
# against 40587d2 (a worktree at $1), alternating, 4 runs each. Run from the repo root.
set -e
BEFORE=${1:?worktree of 40587d2}
for i in 1 2 3 4; do
  for v in lookup before; do
    extra=""
    [ "$v" = before ] && extra="--app-src $BEFORE"
    .venv/bin/python bench/run.py --phases control --modes learn --lab-switches linux \
      --changes-big 90 --changes 5 --set udp_idle_timeout=12 $extra \
      --out bench/results/rest24/control-expiry-$v-$i.json \
      > bench/results/rest24/control-expiry-$v-$i.log 2>&1
  done
done
