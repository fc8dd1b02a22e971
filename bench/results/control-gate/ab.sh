#!/bin/bash
# Control phase, before (842e5e5: polls never wait, whole file dumped per save) and after
# (ChangeGate, per-service YAML texts), alternating, both modes, 30 changes at 2,000 services.
# "before" runs from a worktree of 842e5e5 at /tmp/lbrp-before.
exec "$(dirname "$0")/../ab-control.sh" bench/results/control-gate /tmp/lbrp-before "$@"
