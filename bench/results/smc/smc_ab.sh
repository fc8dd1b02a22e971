#!/bin/bash
# A/B: conntrack rate runs with OVS's signature match cache on (other_config:smc-enable=true)
# vs the default (off), alternating; the setting is removed at the end.
# Usage: bench/results/smc/smc_ab.sh RUN...
cd "$(dirname "$0")/../../.." || exit 1
OUT=bench/results/smc
for i in "$@"; do
  for v in on default; do
    if [ $v = on ]; then ovs-vsctl set Open_vSwitch . other_config:smc-enable=true
    else ovs-vsctl --if-exists remove Open_vSwitch . other_config smc-enable; fi
    echo "== $v-$i $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
    .venv/bin/python bench/run.py --phases rate --modes conntrack --no-select --flush-datapath \
      --lab-switches linux --rate-reps 8 --out $OUT/smc-$v-$i.json > $OUT/smc-$v-$i.log 2>&1
    grep -E 'rate phase|interval|at or above|CPU ms per session' $OUT/smc-$v-$i.log
  done
done
ovs-vsctl --if-exists remove Open_vSwitch . other_config smc-enable
echo "done $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
