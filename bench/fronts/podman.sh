#!/usr/bin/env bash
# podman front benchmark (issue 22): `podman run --rm --network N bb true` with a Plexus
# network through plexus-cni (`--network-backend cni`) against podman's default netavark
# backend on its `podman` network, in ONE run, alternating (Plexus, netavark, netavark,
# Plexus, ...), wall clock around each command, medians. Target: Plexus faster.
#
# Both podmans run inside one namespace made here (plxf-host), with plexusd, so netavark's
# bridge and firewall rules and Plexus's bridge live there: the machine's own interfaces,
# routes and firewall are not touched. Storage (vfs), run dirs and configurations are under
# a temp dir; the image is busybox put in with `podman import`.
#
# Usage: bench/fronts/podman.sh [--quick] [--reps N]   (default 20 reps per side; --quick 5)
# Needs root. Installs podman and busybox-static if missing; builds release binaries with
# ./scripts/build. Everything made here is removed on exit, also on failure.
# Last line: podman_plexus_ms=… podman_netavark_ms=…
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REPS=20
while (($#)); do
  case "$1" in
    --quick) REPS=5 ;;
    --reps) REPS=$2; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
# podman's default backend, the peer measured here
[[ -x /usr/lib/podman/netavark ]] || need+=(netavark)
[[ -x /usr/lib/podman/aardvark-dns ]] || need+=(aardvark-dns)
[[ -x /bin/busybox ]] || need+=(busybox-static)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxf.XXXXXX)
. "$ROOT/bench/lib.sh"
log "building (release)"
"$ROOT/scripts/build" >&2 || { echo "build failed" >&2; exit 1; }
BIN=$CARGO_TARGET_DIR/release
NS=plxf-host

# pm BACKEND ARGS...: podman with this run's storage and the backend's configuration, in $NS.
# nsenter, not `ip netns exec`: that one gives each command a mount namespace of its own, so
# the container namespaces podman bind-mounts under /run/netns would be invisible to plexusd.
pm() {
  local backend=$1; shift
  CONTAINERS_CONF=$TMP/$backend.conf nsenter --net="/run/netns/$NS" podman --root "$TMP/root" \
    --runroot "$TMP/runroot" --tmpdir "$TMP/tmp" --storage-driver vfs "$@"
}
PX() { "$BIN/plexus" -H "unix://$TMP/plexus.sock" "$@"; }

cleanup() {
  set +e
  log "cleanup"
  if [[ -f $TMP/cni.conf ]]; then
    pm cni rm -af -t 0 >/dev/null 2>&1
    pm netavark rm -af -t 0 >/dev/null 2>&1
    pm netavark rmi -af >/dev/null 2>&1
  fi
  stop_plexusd
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$TMP"/{cni-bin,cni-conf,nv-conf,root,runroot,tmp,img/bin}
cp "$BIN/plexus-cni" "$TMP/cni-bin/"
ip netns add "$NS" && ip netns exec "$NS" ip link set lo up
start_plexusd "$NS" || exit 1
PX network create --subnet 10.234.0.0/24 plxf-net >/dev/null || { cat "$TMP/plexusd.log" >&2; exit 1; }

common='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
'
printf '%s\n[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["%s"]\nnetwork_config_dir = "%s"\n' \
  "$common" "$TMP/cni-bin" "$TMP/cni-conf" >"$TMP/cni.conf"
printf '%s\n[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "%s"\n' \
  "$common" "$TMP/nv-conf" >"$TMP/netavark.conf"
cat >"$TMP/cni-conf/plxf-net.conflist" <<JSON
{"cniVersion":"1.0.0","name":"plxf-net","plugins":[{"type":"plexus-cni","plexus":{"socket":"$TMP/plexus.sock"}}]}
JSON

cp /bin/busybox "$TMP/img/bin/busybox"; ln -s busybox "$TMP/img/bin/true"
tar -C "$TMP/img" -cf "$TMP/bb.tar" .
pm netavark import "$TMP/bb.tar" bb >/dev/null || exit 1
# One of each first: caches warm, and both work.
pm cni run --rm --network plxf-net bb /bin/true || { echo "podman with plexus-cni failed" >&2; exit 1; }
pm netavark run --rm --network podman bb /bin/true || { echo "podman with netavark failed" >&2; exit 1; }

# tm FILE BACKEND NETWORK: one `podman run --rm`, its wall-clock ms appended to FILE.
tm() {
  local f=$1 backend=$2 net=$3 t0 t1
  sleep 0.2
  t0=$(date +%s%N)
  pm "$backend" run --rm --network "$net" bb /bin/true || { echo "podman ($backend) failed" >&2; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000)) | awk '{printf "%.1f\n", $1/1000}' >>"$f"
}
median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

log "$REPS runs per side, alternating"
for ((i = 0; i < REPS; i++)); do
  if ((i % 2 == 0)); then
    tm "$TMP/plexus.ms" cni plxf-net; tm "$TMP/netavark.ms" netavark podman
  else
    tm "$TMP/netavark.ms" netavark podman; tm "$TMP/plexus.ms" cni plxf-net
  fi
done
left=$(PX sandbox ls -q | wc -l)
((left == 0)) || { echo "plexus-cni left $left sandbox(es) behind" >&2; exit 1; }
p=$(median "$TMP/plexus.ms"); n=$(median "$TMP/netavark.ms")
echo "plexus-cni: $(tr '\n' ' ' <"$TMP/plexus.ms")" >&2
echo "netavark:   $(tr '\n' ' ' <"$TMP/netavark.ms")" >&2
echo "podman_plexus_ms=$p podman_netavark_ms=$n"
