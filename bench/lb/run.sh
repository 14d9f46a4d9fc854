#!/usr/bin/env bash
# Service VIP data-plane benchmark (plexus-lb), against Docker 20.10's swarm VIP and ingress,
# in ONE run:
#
#   1. connection set-up through a VIP, 1 vs 10,000 services (4 backends each), against
#      connecting to a backend's address directly from the same namespace, and against the
#      kernel's floor for any NAT (one static `dnat` rule in a namespace of its own):
#      crates/plexus-lb/examples/conn_rate.rs, cases interleaved in blocks, the order rotating
#      (p50/p99 µs per connection, rate = 1 / mean; the 10,000-service load timed)
#   2. update latency: crates/plexus-lb/examples/update_latency.rs, one backend added/removed
#      with 1 and 10,000 services, with and without client-ip affinity, and whole services
#      added/removed among 10,000 (p50/p99 ms)
#   3. Docker 20.10 on this machine: a one-node swarm (as ../shared/anchors/05_swarm.sh:
#      advertising eth0's address, listening on 127.0.0.1:2377), an attachable overlay, a
#      2-replica busybox httpd service published with -p 18080:80 (ingress); then its VIP
#      from a container on the overlay (wget, or nc where busybox's wget crashes) and the
#      ingress port on the host's loopback (curl): outcome, time and error text recorded
#   4. the routing mesh: crates/plexus-lb/examples/mesh_rate.rs, connect+close through a
#      published port (client -> host's plexus-mesh table -> ingress namespace's -> one of
#      two backends, replies by the return path) against the backends' addresses reached
#      over the same hops without NAT, and against static DNATs on that path; cases
#      interleaved in blocks, the order rotating (p50/p99 µs, rates: 1 / mean and the median
#      of the blocks' rates; mesh_ratio = mesh's block rate / direct's)
#
# Usage: bench/lb/run.sh [--quick] [--conns N] [--updates N] [--keep-data]
#   default: 20,000 connections per case and phase, 200 updates per case (about 3 minutes)
#   --quick: 3,000 connections, 50 updates (about 1-2 minutes)
# Needs root. Installs docker.io, nftables, busybox-static, curl, python3 from Debian's
# packages if missing; starts dockerd like ../shared/anchors/00_setup.sh if it is not running
# (with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1) and stops it again at the end (removing the docker0
# it made; its iptables chains stay, as ../shared/anchors leave them); imports its own
# busybox image (plxl-bb:latest, removed again) and gives the service that image by its ID, so
# the swarm executor has nothing to pull (no registry lookup). No traffic leaves the machine.
# The examples are built in release into $CARGO_TARGET_DIR (default: the repository's target/).
# Everything made here is named plxl* (namespaces plxl<pid>-*, Docker objects plxl-*) or lives
# under a mktemp dir, and is removed on exit, also on failure. Last line: headline figures as
# key=value pairs, the targets with PASS/FAIL above.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$SECONDS

CONNS=20000; UPDATES=200; KEEP=0
while (($#)); do
  case "$1" in
    --quick) CONNS=3000; UPDATES=50 ;;
    --conns) CONNS=$2; shift ;;
    --updates) UPDATES=$2; shift ;;
    --keep-data) KEEP=1 ;;
    -h|--help) sed -n 2,37p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxl.XXXXXX)
D=$TMP/data; mkdir -p "$D"
PFX=plxl$$                       # conn_rate's namespaces: $PFX-hub, -c1, -c10k, -floor, -be0..3;
                                 # mesh_rate's: $PFX-m-hub, -client, -host, -ingress, -be0, -be1
IMG=plxl-bb:latest
SVC=plxl-web; OV=plxl-ov; PORT=18080
EX=$CARGO_TARGET_DIR/release/examples
log() { echo "[$(date +%T)] $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }

# ---------- cleanup (trap) ----------
EX_PID=""; DOCKERD_STARTED=0; DOCKERD_PID=""; IMG_IMPORTED=0; SWARM_INITED=0; GWBRIDGE_BEFORE=1; DOCKER0_BEFORE=1; DOCKER_UP=0
docker_down() { # everything Docker-side this run made; idempotent
  ((DOCKER_UP)) || return 0
  docker service rm "$SVC" >/dev/null 2>&1
  docker ps -aq --filter label=plxl-bench | xargs -r docker rm -f >/dev/null 2>&1
  sleep 2
  docker network rm "$OV" >/dev/null 2>&1
  if ((SWARM_INITED)); then
    docker swarm leave --force >/dev/null 2>&1 || log "docker swarm leave --force failed"
    sleep 1
    ((GWBRIDGE_BEFORE)) || docker network rm docker_gwbridge >/dev/null 2>&1
    SWARM_INITED=0
  fi
  ((IMG_IMPORTED)) && docker image rm "$IMG" >/dev/null 2>&1 && IMG_IMPORTED=0
  if ((DOCKERD_STARTED)) && [[ -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null; for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    ((DOCKER0_BEFORE)) || ip link del docker0 2>/dev/null
    DOCKERD_STARTED=0
  fi
  DOCKER_UP=0
}
cleanup() {
  set +e
  log "cleanup"
  if [[ -n $EX_PID ]]; then kill "$EX_PID" 2>/dev/null; wait "$EX_PID" 2>/dev/null; fi
  docker_down
  # the examples delete their namespaces themselves; these are what a kill left
  for n in $(ip netns list | awk '{print $1}' | grep "^$PFX-"); do ip netns del "$n"; done
  if ((KEEP)); then log "raw data kept in $D"; find "$TMP" -mindepth 1 -maxdepth 1 ! -name data -exec rm -rf {} +; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- setup ----------
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io nftables busybox-static iproute2 python3 curl; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
log "building the plexus-lb examples (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release -q -p plexus-lb --examples) || die "build failed"

echo "== Plexus service VIP benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release build; connections: $CONNS per case and phase; updates: $UPDATES per case"

# ---------- 1. connection set-up ----------
log "1. connection set-up: $CONNS connect+close per case and phase, interleaved in blocks (namespaces $PFX-*)"
"$EX/conn_rate" --conns "$CONNS" --prefix "$PFX" > "$D/conn.txt" 2> "$D/conn.err" &
EX_PID=$!; wait "$EX_PID"; rc=$?; EX_PID=""
echo "$rc" > "$D/conn_rc.txt"
((rc)) && { cat "$D/conn.err" >&2; log "conn_rate FAILED ($rc)"; }
sed 's/^/  /' "$D/conn.txt" >&2

# ---------- 2. update latency ----------
log "2. update latency: $UPDATES updates per case (update_latency)"
"$EX/update_latency" "$UPDATES" > "$D/update.txt" 2> "$D/update.err" &
EX_PID=$!; wait "$EX_PID"; rc=$?; EX_PID=""
echo "$rc" > "$D/update_rc.txt"
((rc)) && { cat "$D/update.err" >&2; log "update_latency FAILED ($rc)"; }
sed 's/^/  /' "$D/update.txt" >&2

# ---------- 3. Docker's VIP and ingress ----------
log "3. Docker: one-node swarm, service $SVC (2 replicas, -p $PORT:80), its VIP and ingress"
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", (b-a)*1000}'; }
classify() { # RC TEXT -> ok|refused|no-route|timeout|error
  local rc=$1 text=$2
  if ((rc == 0)); then echo ok
  elif grep -qi 'refused' <<<"$text"; then echo refused
  elif grep -qiE 'no route|unreachable' <<<"$text"; then echo no-route
  elif ((rc == 28 || rc == 124)) || grep -qiE 'timed out|timeout' <<<"$text"; then echo timeout
  else echo error
  fi
}
record() { # NAME RC MS TEXT: one line "NAME OUTCOME MS TEXT" in docker.txt
  local o; o=$(classify "$2" "$4")
  local t; t=$(tr '\r\n' '  ' <<<"$4" | tr -s ' ' | cut -c1-220)
  echo "$1 $o $3 $t" >> "$D/docker.txt"
  log "  $1: $o after $3 ms: $t"
}
DOCKER=1
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null; then
  ip link show docker0 >/dev/null 2>&1 || DOCKER0_BEFORE=0
  log "starting dockerd (as ../shared/anchors/00_setup.sh: dockerd --iptables=true; DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1)"
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd --iptables=true >"$TMP/dockerd.log" 2>&1 &
  DOCKERD_PID=$!; DOCKERD_STARTED=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! docker info >/dev/null 2>&1; then
  DOCKER=0; echo "!! dockerd cannot run here: Docker is NOT measured"
else
  DOCKER_UP=1
  state=$(docker info -f '{{.Swarm.LocalNodeState}}')
  if [[ $state != inactive ]]; then
    DOCKER=0; echo "!! this dockerd is in a swarm already ($state), which the bench leaves alone: Docker is NOT measured"
  else
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_BEFORE=0
    if ! docker image inspect "$IMG" >/dev/null 2>&1; then
      r=$(mktemp -d); mkdir -p "$r/bin" "$r/www"; cp /bin/busybox "$r/bin/"
      for c in sh sleep wget nc httpd cat; do ln -s busybox "$r/bin/$c"; done
      echo plxl > "$r/www/index.html"
      tar -C "$r" -c . | docker import - "$IMG" >/dev/null && IMG_IMPORTED=1; rm -rf "$r"
    fi
    IMGID=$(docker image inspect -f '{{.Id}}' "$IMG")
    ADV=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -1)
    log "docker swarm init --advertise-addr $ADV --listen-addr 127.0.0.1:2377 (as 05_swarm.sh)"
    if docker swarm init --advertise-addr "$ADV" --listen-addr 127.0.0.1:2377 >/dev/null 2>"$TMP/swarm.err"; then
      SWARM_INITED=1
    else
      DOCKER=0; echo "!! docker swarm init failed: $(tail -1 "$TMP/swarm.err"): Docker is NOT measured"
    fi
  fi
fi
echo $((DOCKER)) > "$D/docker_measured"
if ((DOCKER)); then
  docker version --format 'server {{.Server.Version}} / CLI {{.Client.Version}}' > "$D/docker_version.txt" 2>/dev/null
  docker network create -d overlay --attachable --subnet 10.233.0.0/24 "$OV" >/dev/null || die "docker network create -d overlay"
  # By image ID (not a name): the executor then pulls nothing (moby's containerAdapter.pullImage
  # skips an ID), and --no-resolve-image keeps the CLI from asking a registry for a digest.
  t0=$EPOCHREALTIME
  docker service create -d --no-resolve-image --name "$SVC" --replicas 2 --network "$OV" -p $PORT:80 \
    "$IMGID" httpd -f -p 80 -h /www >/dev/null 2>"$TMP/svc.err" || die "docker service create: $(tail -1 "$TMP/svc.err")"
  running=0
  for _ in $(seq 120); do
    running=$(docker service ps "$SVC" --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null | grep -c '^Running')
    ((running >= 2)) && break; sleep 0.5
  done
  echo "service_running_ms $(ms "$t0" "$EPOCHREALTIME") $running" >> "$D/docker_service.txt"
  log "  $running of 2 tasks running after $(ms "$t0" "$EPOCHREALTIME") ms"
  VIPADDR=$(docker service inspect -f '{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}' "$SVC" 2>/dev/null)
  echo "vips $VIPADDR" >> "$D/docker_service.txt"
  # the tasks answer directly (a check that a failure below is the VIP's, not the backends')
  docker run -d --label plxl-bench=1 --name plxl-cli --network "$OV" "$IMGID" sleep 100000 >/dev/null || die "docker run on the overlay"
  sleep 1
  task_ip=$(docker exec plxl-cli sh -c "nslookup tasks.$SVC 127.0.0.11 2>/dev/null" | awk '/^Address/{print $NF}' | grep -v 127.0.0.11 | head -1)
  [[ -z $task_ip ]] && task_ip=$(docker network inspect "$OV" -f '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{"\n"}}{{end}}' | awk -v s="$SVC." 'index($1,s)==1{split($2,a,"/"); print a[1]; exit}')
  hget() { # ADDR: an HTTP GET from the client container, wget or (if busybox's wget crashes) nc
    local out rc
    out=$(docker exec plxl-cli wget -T 5 -q -O- "http://$1/" 2>&1); rc=$?
    if ((rc == 139)); then
      echo "(busybox wget crashed, rc 139; nc instead)" > "$TMP/hget.note"
      out=$(docker exec plxl-cli sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $1 80" 2>&1); rc=$?
      [[ $rc == 0 && -z $out ]] && rc=1 && out="no answer"
    fi
    echo "$out"; return $rc
  }
  if [[ -n $task_ip ]]; then
    t0=$EPOCHREALTIME; out=$(hget "$task_ip"); rc=$?; record docker_task_direct $rc "$(ms "$t0" "$EPOCHREALTIME")" "$task_ip: $out"
  fi
  t0=$EPOCHREALTIME; out=$(hget "$SVC"); rc=$?; record docker_vip $rc "$(ms "$t0" "$EPOCHREALTIME")" "$SVC ($VIPADDR): $out"
  t0=$EPOCHREALTIME; out=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/" 2>&1); rc=$?; t1=$EPOCHREALTIME
  if ((rc)); then # curl's "Couldn't connect" does not say why: the connect's own errno
    out+=" / connect(): $(python3 -c 'import socket,sys
try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5); print("connected")
except OSError as e: print(e)' "$PORT" 2>&1)"
  fi
  record docker_ingress $rc "$(ms "$t0" "$t1")" "127.0.0.1:$PORT: $out"
  [[ -f $TMP/hget.note ]] && cat "$TMP/hget.note" >> "$D/docker_service.txt"
  if ((DOCKERD_STARTED)); then
    # what dockerd said about IPVS and the ingress, and whether it looked a registry up
    grep -aiE 'ipvs|ingress|LB endpoint' "$TMP/dockerd.log" | sed -E 's/.*msg="([^"]{0,150}).*/\1/' | sort | uniq -c | sort -rn | head -6 > "$D/dockerd_errors.txt"
    echo "registry_lookups $(grep -aciE 'registry-1.docker.io|pulling image|pull access' "$TMP/dockerd.log")" >> "$D/docker_service.txt"
  fi
  log "docker: removing the service, leaving the swarm"
  docker_down
fi

# ---------- 4. the routing mesh ----------
log "4. routing mesh: $CONNS connect+close per case through a published port and directly (namespaces $PFX-m-*)"
"$EX/mesh_rate" --conns "$CONNS" --prefix "$PFX-m" > "$D/mesh.txt" 2> "$D/mesh.err" &
EX_PID=$!; wait "$EX_PID"; rc=$?; EX_PID=""
echo "$rc" > "$D/mesh_rc.txt"
((rc)) && { cat "$D/mesh.err" >&2; log "mesh_rate FAILED ($rc)"; }
sed 's/^/  /' "$D/mesh.txt" >&2

echo "elapsed: $((SECONDS - T0)) s, load now $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 "$HERE/report.py" "$D"
