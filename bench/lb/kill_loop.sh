#!/usr/bin/env bash
# Reliability loop for services (issue 18): kill -9 of plexusd in the middle of a random
# sequence of service create/update/remove and task joins and leaves, N times (default 100),
# and after each restart every sandbox's `ip plexus-lb` table and the published ports of the
# daemon's `ip plexus-mesh` table compared with the store's view.
# It runs the seeded loop of crates/plexusd/tests/services_traffic.rs
# (kill_loop_kernel_equals_store) with PLEXUS_LB_KILLS=N; a failure prints PLEXUS_SEED=… to
# replay it: PLEXUS_SEED=<seed> bench/lb/kill_loop.sh N.
#
# Usage: bench/lb/kill_loop.sh [N]      (needs root; about 1 s per kill)
# Last line: kills= seed= entries_compared= backends_compared= repaired_at_start= seconds= result=
set -uo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
N=${1:-100}
T0=$SECONDS
cargo build -q -p plexus -p plexusd || exit 1
OUT=$(mktemp)
PLEXUS_LB_KILLS=$N cargo test -q -p plexusd --test services_traffic kill_loop_kernel_equals_store \
  -- --nocapture 2>&1 | tee "$OUT" | grep -E "PLEXUS_SEED|kills:|panicked|FAILED" >&2
rc=${PIPESTATUS[0]}
seed=$(grep -o 'PLEXUS_SEED=[0-9]*' "$OUT" | head -1 | cut -d= -f2)
line=$(grep -E "^[0-9]+ kills:" "$OUT" | tail -1)
read -r kills entries backends repaired < <(echo "$line" | sed -E 's/^([0-9]+) kills: ([0-9]+) \(sandbox, VIP\) entries and ([0-9]+) backends.*; ([0-9]+) tables.*/\1 \2 \3 \4/')
rm -f "$OUT"
result=PASS; ((rc == 0)) && [[ -n $line ]] || result=FAIL
echo "kills=${kills:-0} seed=${seed:-NA} entries_compared=${entries:-0} backends_compared=${backends:-0} repaired_at_start=${repaired:-0} seconds=$((SECONDS - T0)) result=$result"
[[ $result == PASS ]]
