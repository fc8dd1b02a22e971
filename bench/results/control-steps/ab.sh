#!/bin/bash
# Control phase, before (a10943b: per-switch state copied per change, full collection per
# change, counter readings taken in one go) and after (539f361), alternating, both modes,
# 30 changes at 2,000 services. "before" runs from a worktree of a10943b at /tmp/lbrp-before.
exec "$(dirname "$0")/../ab-control.sh" bench/results/control-steps /tmp/lbrp-before "$@"
