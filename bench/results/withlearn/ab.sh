#!/bin/bash
# Does a learn block earlier in the same lab lower conntrack's paired ratio? Alternating runs in one sitting:
#   ct-alone-N: --modes conntrack;  after-learn-N: --modes learn,conntrack --rate-blocks (all learn rounds first)
cd /work/main
OUT=bench/results/withlearn
B=".venv/bin/python bench/run.py --phases rate --no-select --flush-datapath --lab-switches linux --rate-reps 8"
for i in "$@"; do
  echo "== ct-alone-$i $(date +%T)"
  $B --modes conntrack --out $OUT/ct-alone-$i.json > $OUT/ct-alone-$i.log 2>&1
  grep -E 'ratio to the same|interval|at or above|CPU ms' $OUT/ct-alone-$i.log
  echo "== after-learn-$i $(date +%T)"
  $B --modes learn,conntrack --rate-blocks --out $OUT/after-learn-$i.json > $OUT/after-learn-$i.log 2>&1
  grep -E 'ratio to the same|interval|at or above|CPU ms' $OUT/after-learn-$i.log
done
echo "done $(date +%T)"
