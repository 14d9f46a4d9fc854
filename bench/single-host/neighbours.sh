#!/usr/bin/env bash
# Does another tool's load slow the kernel's work for this one? The bare kernel's cost of adding
# one port to a bridge (port_floor.rs, the `port-floor` example of plexus-sys) is timed on a
# bridge like Plexus's (fixed MAC, multicast snooping off) in a namespace of its own: with
# nothing else around, then with N netavark containers (each in its own namespace, one port
# mapping each, netavark's iptables rules in netavark's own namespace), then once they are gone.
# This is why bench/single-host/run.sh ramps Plexus and netavark one after the other.
#
# Usage: bench/single-host/neighbours.sh [N (default 400)] [REPS (default 20)]
# Needs root and netavark (Debian's podman package). Everything made here is named plxn-* and
# is removed on exit, also on failure. Last line: headline figures as key=value pairs.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N=${1:-400}; REPS=${2:-20}
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NETAVARK=/usr/lib/podman/netavark
[[ -x $NETAVARK ]] || { echo "netavark missing: apt-get install -y netavark" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q -p plexus-sys --example port-floor) || { echo "build failed" >&2; exit 1; }
FLOOR=$CARGO_TARGET_DIR/release/examples/port-floor
TMP=$(mktemp -d /tmp/plxn.XXXXXX)
cleanup() {
  set +e
  for n in $(ip netns list | awk '{print $1}' | grep '^plxn-'); do ip netns del "$n"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%T)] $*" >&2; }

ip netns add plxn-host
ip -n plxn-host link set lo up
ip -n plxn-host link add plxn-br0 address 02:42:ac:1e:00:01 type bridge mcast_snooping 0
ip -n plxn-host link set plxn-br0 up
# median of REPS port adds, 100 ms apart
floor() { nsenter --net=/run/netns/plxn-host "$FLOOR" plxn-br0 "$REPS" 100 | sort -n | awk '{a[NR]=$1} END{printf "%.3f\n", a[int((NR+1)/2)]}'; }

ip netns add plxn-nvh; ip -n plxn-nvh link set lo up
mkdir -p "$TMP/cfg"
export NETAVARK_FW=iptables
NV() { nsenter --net=/run/netns/plxn-nvh "$NETAVARK" --config "$TMP/cfg" "$@"; }

echo "== bare kernel port add on a bridge, alone and beside $N netavark containers, $(date -u +%FT%TZ), $(nproc) CPUs =="
a1=$(floor); a2=$(floor)
echo "  alone:                    $a1 ms, $a2 ms (median of $REPS each)"
log "netavark: $N containers"
for i in $(seq 1 "$N"); do
  ip netns add plxn-c$i
  python3 "$HERE/nvopts.py" "$i" plxn-nv plxn-nv0 10.238 1 | NV setup /run/netns/plxn-c$i >/dev/null 2>>"$TMP/nv.err" || { echo "netavark setup $i failed: $(tail -1 "$TMP/nv.err")" >&2; exit 1; }
done
sleep 5
w1=$(floor); w2=$(floor)
echo "  beside $N netavark ones:  $w1 ms, $w2 ms"
log "removing them"
for i in $(seq 1 "$N"); do ip netns del plxn-c$i; done
ip netns del plxn-nvh
sleep 5
g1=$(floor); g2=$(floor)
echo "  once they are gone:       $g1 ms, $g2 ms"
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{printf "%.3f", (a[1]+a[2])/2}'; }
echo "neighbours=$N floor_alone_ms=$(med "$a1" "$a2") floor_beside_netavark_ms=$(med "$w1" "$w2") floor_after_ms=$(med "$g1" "$g2")"
