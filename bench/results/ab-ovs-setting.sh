#!/bin/bash
# A/B of one ovs-vswitchd other_config setting for conntrack's rate: per RUN, a rate run
# with KEY=VALUE set (OUT/PREFIX-ON_LABEL-RUN.json), then one with the default
# (OUT/PREFIX-default-RUN.json), alternating; the setting is removed at the end.
# Usage: bench/results/ab-ovs-setting.sh OUT PREFIX ON_LABEL KEY VALUE RUN...
cd "$(dirname "$0")/../.." || exit 1
OUT=$1 PREFIX=$2 ON=$3 KEY=$4 VALUE=$5
shift 5
for i in "$@"; do
  for v in "$ON" default; do
    if [ "$v" = "$ON" ]; then ovs-vsctl set Open_vSwitch . other_config:"$KEY"="$VALUE"
    else ovs-vsctl --if-exists remove Open_vSwitch . other_config "$KEY"; fi
    echo "== $v-$i $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
    .venv/bin/python bench/run.py --phases rate --modes conntrack --no-select --flush-datapath \
      --lab-switches linux --rate-reps 8 --out "$OUT/$PREFIX-$v-$i.json" > "$OUT/$PREFIX-$v-$i.log" 2>&1
    grep -E 'rate phase|interval|at or above|CPU ms per session' "$OUT/$PREFIX-$v-$i.log"
  done
done
ovs-vsctl --if-exists remove Open_vSwitch . other_config "$KEY"
echo "done $(date +%T) other_config: $(ovs-vsctl get Open_vSwitch . other_config)"
