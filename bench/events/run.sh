#!/usr/bin/env bash
# Event delivery: 1,000 events per second for 10 s through the real controller on the
# embedded redb store (each a durable transaction: a sandbox recorded or removed, with its
# event), one subscriber measuring from each commit's return to its delivery.
# The last line holds the figures as key=value pairs:
#   events_per_s p50_us p99_us max_us (commit to subscriber) commit_p50_us commit_p99_us.
#
# Extra arguments go to the example (--rate N, --seconds S, --db PATH; the default database
# is a temp file under $TMPDIR, which decides what a durable commit costs).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -q -p plexus-cnm --example events-bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/events-bench"
exec "$bin" "$@"
