#!/usr/bin/env bash
# Fuzzes the embedded DNS's packet path (fuzz target `dns_packet`: queries through
# `answer`, the wire helpers, upstream answers through the cache and the forwarder) for
# SECONDS (default 600) on the committed corpus, coverage-guided (cargo-fuzz on the stable
# toolchain with RUSTC_BOOTSTRAP=1; installed if missing). Fails on any finding.
#
#   bench/dns/fuzz.sh [SECONDS]
#
# Last line: target=dns_packet seconds= execs= execs_per_s= corpus= cov= features=
# new_units= peak_rss_mb= findings=   (see bench/fuzz/run.sh and fuzz/README.md)
set -euo pipefail
exec "$(dirname "$0")/../fuzz/run.sh" "${1:-600}" dns_packet
