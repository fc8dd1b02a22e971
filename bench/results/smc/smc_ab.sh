#!/bin/bash
# A/B: conntrack rate runs with OVS's signature match cache on (other_config:smc-enable=true)
# vs the default (off), alternating; the setting is removed at the end.
# Usage: bench/results/smc/smc_ab.sh RUN...
exec "$(dirname "$0")/../ab-ovs-setting.sh" bench/results/smc smc on smc-enable true "$@"
