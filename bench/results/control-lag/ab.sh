#!/bin/bash
# Control phase, before (bea952e: the first save after a start formats every service
# through yaml; a poll's prune in one go) and after (this session's code), alternating,
# both modes, 30 changes at 2,000 services. "before" runs from a worktree of bea952e at
# /tmp/lbrp-before-bea.
exec "$(dirname "$0")/../ab-control.sh" bench/results/control-lag/ab /tmp/lbrp-before-bea "$@"
