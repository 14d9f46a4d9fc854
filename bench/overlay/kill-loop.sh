#!/usr/bin/env bash
# The overlay's kill loop as a soak: three plexusd hosts (etcd as the cluster store) take
# joins, leaves and `kill -9`/restarts at random, then every host's kernel state must match
# the tables and every host's sandboxes reach every other's. The suite runs 30 kills; this
# runs as many as asked (default 300). Seeded: PLEXUS_SEED replays a run.
#
# Usage: bench/overlay/kill-loop.sh [KILLS]   (root)
# Last line: kills=… seed=… seconds=… result=PASS|FAIL
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
KILLS=${1:-300}
SEED=${PLEXUS_SEED:-$(date +%s%N)}
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
cd "$ROOT" || exit 1
cargo build -q -p plexus -p plexusd -p plexus-cni || exit 1
start=$(date +%s)
PLEXUS_SEED=$SEED PLEXUS_KILLS=$KILLS cargo test -q -p plexusd --test overlay_reliability \
  kernel_state_matches_the_tables_after_a_kill_loop -- --nocapture
rc=$?
echo "kills=$KILLS seed=$SEED seconds=$(($(date +%s) - start)) result=$([[ $rc == 0 ]] && echo PASS || echo FAIL)"
exit $rc
