#!/bin/bash
# poll pmd stats every 0.5 s with timestamps
while true; do
  echo "T $(date +%s.%N)"
  ovs-appctl dpif-netdev/pmd-stats-show | grep -E "megaflow hits|avg. subtable|emc hits|simple match|packets received|recirc|miss with success"
  echo "F $(ovs-appctl dpctl/dump-flows 2>/dev/null | wc -l)"
  sleep 0.5
done
