#!/bin/bash
# A/B: conntrack rate runs with OVS's EMC inserting every miss (emc-insert-inv-prob=1) vs the default (100)
cd /work/main
OUT=bench/results/emc
for i in "$@"; do
  for v in always default; do
    if [ $v = always ]; then ovs-vsctl set Open_vSwitch . other_config:emc-insert-inv-prob=1
    else ovs-vsctl --if-exists remove Open_vSwitch . other_config emc-insert-inv-prob; fi
    echo "== $v-$i $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
    .venv/bin/python bench/run.py --phases rate --modes conntrack --no-select --flush-datapath \
      --lab-switches linux --rate-reps 8 --out $OUT/emc-$v-$i.json > $OUT/emc-$v-$i.log 2>&1
    grep -E 'rate phase|interval|at or above' $OUT/emc-$v-$i.log
  done
done
ovs-vsctl --if-exists remove Open_vSwitch . other_config emc-insert-inv-prob
echo "done $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
