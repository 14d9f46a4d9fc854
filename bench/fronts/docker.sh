#!/usr/bin/env bash
# Docker's front (issue 22): `docker run --rm --network N bb true` with N a Plexus network
# (dockerd's network handed to plexusd through Docker's plugin protocol) against N a Docker
# bridge network, in ONE run, alternating (Plexus, Docker, Docker, Plexus, ...), wall clock
# around each command, medians.
#
# plexusd runs in a namespace of its own (its bridges and nftables stay there), with a
# dockerd of the run's own beside it in that namespace (data and exec roots under the run's
# temporary directory, iptables on as by default): plexusd hands dockerd each container's
# interface in the namespace they share, as any network plugin does. The plugin socket is
# /run/docker/plugins/plxf-bench.sock, where dockerd looks. Both networks are that dockerd's.
# Everything made here is named plxf-* and removed on exit.
#
# Usage: bench/fronts/docker.sh [--quick] [--reps N]   (default 20; --quick 5; root)
# Last line: docker_run_plexus_ms= docker_run_bridge_ms= ratio= target=PASS|FAIL
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REPS=20
SETTLE=0.3
while (($#)); do
  case "$1" in
    --quick) REPS=5 ;;
    --reps) REPS=$2; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxf.XXXXXX)
D=$TMP/data; mkdir -p "$D"
IMG=plxf-bb:latest
PLUGIN=plxf-bench
SOCK=/run/docker/plugins/$PLUGIN.sock
. "$ROOT/bench/lib.sh"
PX() { PLEXUS_HOST="unix://$TMP/plexus.sock" "$CARGO_TARGET_DIR/release/plexus" "$@"; }

cleanup() {
  set +e
  log "cleanup"
  if docker info >/dev/null 2>&1; then
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
    docker network rm plxf-px plxf-br >/dev/null 2>&1
  fi
  stop_plexusd
  stop_dockerd
  rm -f "$SOCK"
  ip netns del plxf-host 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io busybox-static; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
log "building plexusd + plexus (release)"
(cd "$ROOT" && ./scripts/build -q) || { echo "build failed" >&2; exit 1; }

ip netns add plxf-host; ip -n plxf-host link set lo up
start_dockerd_in plxf-host || { echo "!! dockerd cannot run here: nothing measured"; tail -20 "$TMP/dockerd.log"; exit 1; }
docker_busybox "$IMG" true

mkdir -p /run/docker/plugins
start_plexusd plxf-host --bridge none --docker-plugin-socket "$SOCK" || exit 1
docker network create -d "$PLUGIN" --ipam-driver "$PLUGIN" --subnet 10.243.0.0/24 plxf-px >/dev/null || exit 1
docker network create --subnet 10.244.0.0/24 plxf-br >/dev/null || exit 1

echo "== docker front benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release; docker: $(docker version --format '{{.Server.Version}}')"
log "docker run --rm x$REPS each (alternating)"
px() { tm run_plexus.txt docker run --rm --network plxf-px "$IMG" /bin/true; }
br() { tm run_bridge.txt docker run --rm --network plxf-br "$IMG" /bin/true; }
for r in $(seq 1 "$REPS"); do
  if ((r % 2)); then px; br; else br; px; fi
done
# sanity: a container on the Plexus network has its address from Plexus
got=$(docker run --rm --network plxf-px "$IMG" /bin/busybox ip -4 -o addr show eth0 2>/dev/null | awk '{print $4}')
echo "check: a container on plxf-px has ${got:-NO ADDRESS}"

python3 - "$D" <<'EOF'
import statistics as st, sys, os
d = sys.argv[1]
def vals(f):
    p = os.path.join(d, f)
    return sorted(float(x) for x in open(p).read().split()) if os.path.exists(p) else []
def fmt(x, n=1):
    return "NA" if x is None else f"{x:.{n}f}"
px, br = vals("run_plexus.txt"), vals("run_bridge.txt")
for label, v in [("docker run, Plexus network", px), ("docker run, Docker bridge", br)]:
    if v:
        print(f"  {label:<28} median {st.median(v):8.1f}  min {v[0]:8.1f}  max {v[-1]:8.1f}  n={len(v)}")
mp = st.median(px) if px else None
mb = st.median(br) if br else None
ratio = mp / mb if (mp and mb) else None
ok = ratio is not None and ratio <= 1.0
print(f"  {'PASS' if ok else 'FAIL'}  docker run on a Plexus network no slower than on a Docker bridge: "
      f"{fmt(mp)} vs {fmt(mb)} ms, ratio {fmt(ratio, 3)}")
print(f"docker_run_plexus_ms={fmt(mp)} docker_run_bridge_ms={fmt(mb)} ratio={fmt(ratio, 3)} "
      f"target={'PASS' if ok else 'FAIL'}")
EOF
