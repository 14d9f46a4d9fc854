#!/bin/sh
# plexus-ipam benchmark: prints each figure, last line key=value headline figures.
cd "$(dirname "$0")/../.." && exec cargo run --release -q -p plexus-ipam --example ipam-bench
