#!/bin/bash
# A/B: conntrack rate runs with OVS's EMC inserting every miss (emc-insert-inv-prob=1) vs the default (100)
exec "$(dirname "$0")/../ab-ovs-setting.sh" bench/results/emc emc always emc-insert-inv-prob 1 "$@"
