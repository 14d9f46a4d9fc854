#!/usr/bin/env bash
# Multi-host overlay benchmark: three Plexus "hosts" (network namespaces on an underlay bridge,
# each with its own plexusd, sharing a real etcd), against Docker 20.10's swarm-mode overlay
# (one node, as ../shared/anchors/05_swarm.sh drives it) and a bare VXLAN made by hand, in ONE
# run. Measurements of one phase alternate between the sides (the order rotates from rep to
# rep), so the machine's noise hits both alike.
#
#   1. attach on one host, through the CLIs (host 1; the network has endpoints on all three):
#        plexus sandbox create S --network ov  minus  plexus sandbox create S   (paired per rep)
#        docker run -d --network <attachable overlay>  minus  docker run -d --network none
#          (paired per rep: the anchors' "overlay network setup", 283 ms there)
#        plexus network connect ov S / disconnect   vs   docker network connect / disconnect
#   2. reachability: a sandbox is attached on host A (plexus sandbox create --network ov --ip),
#      and a prober in a sandbox on each of the two other hosts (reach_probe.rs: a UDP datagram
#      every 2 ms, answered by the new sandbox's kernel) times from the start of the attach
#      command until it gets an answer; A rotates over the three hosts
#   3. TCP throughput (iperf3, 1 stream) between sandboxes on hosts 1 and 2 against a bare
#      VXLAN made by hand beside them on the same underlay, laid out as Plexus lays out its
#      own: a host namespace with the underlay address, the VXLAN device born there and moved
#      into a namespace of its own with a bridge (learning off, proxy on, UDP checksums,
#      static FDB and neighbour entries), a veth pair to a "container" namespace, same MTU
#   4. failure detection: kill -9 of one host's plexusd (rotating), then the time until every
#      other host has dropped the FDB entries that send to it (fdbwatch.py), against the SWIM
#      bound `plexus cluster inspect` gives (FailureDetectionMs); the host is restarted and
#      the next kill waits until it is alive everywhere and its entries are back
#   5. the gossip simulator (crates/plexus-gossip/examples/simulate.rs) at --sim-nodes nodes
#      with the runtime's settings: convergence and detection percentiles in virtual time
#
# Usage: bench/overlay/run.sh [--quick] [--reps N] [--attaches N] [--iperf-reps N] [--iperf-secs S]
#                             [--kills N] [--sim-nodes N] [--pause S] [--keep-data]
#   default: 30 reps, 100 attaches, iperf3 5 s x 8, 20 kills, simulator at 10,000 nodes
#            (about 15-20 min)
#   --quick: 8 reps, 20 attaches, iperf3 3 s x 2, 4 kills, simulator at 1,000 nodes (about 4 min)
#   --pause: quiet time before each measured command of phase 1 (default 0.1 s; dockerd goes
#            on working after its CLI returns)
# Needs root. Installs the tools from Debian's packages if missing (docker.io, etcd-server,
# iperf3, busybox-static); starts dockerd like ../shared/anchors/00_setup.sh if it is not
# running (and stops it again at the end), imports a busybox image as bb:latest if there is
# none (removed again), and initialises a one-node swarm the way 05_swarm.sh does (advertising
# eth0's address, listening on 127.0.0.1:2377) if the node is in none; it leaves the swarm
# and removes docker_gwbridge (if it made it) as soon as phase 1 is done, and on any exit.
# etcd runs inside the underlay namespace at 10.99.0.254:2379, its data under a temp dir.
# No traffic leaves the machine: every address used is inside namespaces made here (Docker's
# overlay has one node; its VXLAN has no remote).
# plexusd runs from $CARGO_TARGET_DIR (default: the repository's own target/), built here.
# Everything made here is named plxo-* (not plxb-*: the other benchmarks' clean-ups remove
# every plxb-* namespace) or lives under a mktemp dir, and is removed on exit, also on
# failure. Last line: headline figures as key=value pairs, the targets with PASS/FAIL above.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$SECONDS

REPS=30; ATTACHES=100; IPERF_REPS=8; IPERF_SECS=5; KILLS=20; SIM_NODES=10000; PAUSE=0.1; KEEP=0
while (($#)); do
  case "$1" in
    --quick) REPS=8; ATTACHES=20; IPERF_REPS=2; IPERF_SECS=3; KILLS=4; SIM_NODES=1000 ;;
    --reps) REPS=$2; shift ;;
    --attaches) ATTACHES=$2; shift ;;
    --iperf-reps) IPERF_REPS=$2; shift ;;
    --iperf-secs) IPERF_SECS=$2; shift ;;
    --kills) KILLS=$2; shift ;;
    --sim-nodes) SIM_NODES=$2; shift ;;
    --pause) PAUSE=$2; shift ;;
    --keep-data) KEEP=1 ;;
    -h|--help) sed -n 2,48p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
((ATTACHES <= 150)) || { echo "--attaches: at most 150 (each takes a new address of a /24)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxo.XXXXXX)
D=$TMP/data; mkdir -p "$D"
IMG=bb:latest
NHOSTS=3
SUBNET=10.251.0.0/24; NET=10.251.0    # the Plexus overlay
DSUBNET=10.250.0.0/24                 # Docker's overlay
BNET=10.252.0                         # the bare VXLAN's "containers"
BVNI=4242
ETCD_ADDR=10.99.0.254
PLEXUSD=$CARGO_TARGET_DIR/release/plexusd
PLEXUS=$CARGO_TARGET_DIR/release/plexus
log() { echo "[$(date +%T)] $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }

# ---------- cleanup (trap) ----------
declare -a PXPID=()
ETCD_PID=""; DOCKERD_STARTED=0; DOCKERD_PID=""; IMG_IMPORTED=0; SWARM_INITED=0; GWBRIDGE_BEFORE=1; DOCKER_UP=0
SRV_PIDS=()
PXn() { local n=$1; shift; PLEXUS_HOST="unix://$TMP/h$n/plexus.sock" "$PLEXUS" "$@"; }
docker_down() { # everything Docker-side this run made; idempotent
  ((DOCKER_UP)) || return 0
  docker ps -aq --filter label=plxo-bench | xargs -r docker rm -f >/dev/null 2>&1
  for n in $(docker network ls --format '{{.Name}}' 2>/dev/null | grep '^plxo-'); do docker network rm "$n" >/dev/null 2>&1; done
  if ((SWARM_INITED)); then
    sleep 1
    docker swarm leave --force >/dev/null 2>&1 || log "docker swarm leave --force failed"
    sleep 1
    ((GWBRIDGE_BEFORE)) || docker network rm docker_gwbridge >/dev/null 2>&1
    SWARM_INITED=0
  fi
  ((IMG_IMPORTED)) && docker image rm "$IMG" >/dev/null 2>&1 && IMG_IMPORTED=0
  if ((DOCKERD_STARTED)) && [[ -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null; for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    DOCKERD_STARTED=0
  fi
  DOCKER_UP=0
}
stop_pid() { # PID: TERM, up to 10 s, then KILL
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null
}
cleanup() {
  set +e
  log "cleanup"
  for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${SRV_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  docker_down
  for n in "${!PXPID[@]}"; do [[ -n ${PXPID[$n]} ]] && stop_pid "${PXPID[$n]}"; done
  for n in $(seq 1 $NHOSTS); do # the resolver outlives plexusd by design
    f=$TMP/h$n/run/dns/resolver.pid
    [[ -f $f ]] || continue
    r=$(cat "$f")
    grep -q -- "$TMP/h$n/run" "/proc/$r/cmdline" 2>/dev/null && stop_pid "$r"
  done
  [[ -n $ETCD_PID ]] && stop_pid "$ETCD_PID"
  # namespaces plexusd made (bind mounts under its run dirs)
  for m in $(awk -v p="$TMP/" 'index($5,p)==1{print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
  for n in $(ip netns list | awk '{print $1}' | grep '^plxo-'); do ip netns del "$n"; done
  if ((KEEP)); then log "raw data kept in $D"; rm -rf "$TMP"/h* "$TMP/etcd"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ms between two $EPOCHREALTIME-style times
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b-a)*1000}'; }
# tm FILE CMD...: runs CMD after $PAUSE of quiet, appends "$REP MS" to $D/FILE; fails if CMD fails
REP=0
tm() {
  local f=$1; shift
  sleep "$PAUSE"
  local t0=$EPOCHREALTIME
  "$@" >/dev/null 2>"$TMP/last.err"; local rc=$?
  local t1=$EPOCHREALTIME
  if ((rc)); then log "FAILED ($rc): $* : $(tail -2 "$TMP/last.err")"; return $rc; fi
  echo "$REP $(ms "$t0" "$t1")" >> "$D/$f"
}

# ---------- setup ----------
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io etcd-server iperf3 busybox-static iproute2 python3 curl; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
command -v rustc >/dev/null || die "rustc is needed to build bench/overlay/reach_probe.rs"

log "building plexusd + plexus and the gossip simulator (release) into $CARGO_TARGET_DIR, and the prober"
(cd "$ROOT" && ./scripts/build -q && cargo build --release -q -p plexus-gossip --example simulate) || die "build failed"
SIM=$CARGO_TARGET_DIR/release/examples/simulate
PROBE=$TMP/reach-probe
rustc -O --edition 2021 -o "$PROBE" "$HERE/reach_probe.rs" || die "building reach_probe.rs failed"

# ---------- Docker: dockerd, image, one-node swarm ----------
DOCKER=1
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null; then
  log "starting dockerd (as ../shared/anchors/00_setup.sh: dockerd --iptables=true)"
  setsid dockerd --iptables=true >"$TMP/dockerd.log" 2>&1 &
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
      r=$(mktemp -d); mkdir -p "$r/bin"; cp /bin/busybox "$r/bin/"; for c in sh sleep ping ip; do ln -s busybox "$r/bin/$c"; done
      tar -C "$r" -c . | docker import - "$IMG" >/dev/null && IMG_IMPORTED=1; rm -rf "$r"
    fi
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

# ---------- the underlay, etcd, three Plexus hosts ----------
echo "nameserver 127.0.0.1" > "$TMP/resolv.conf"   # the sandboxes' upstreams: nothing listens there
ip netns add plxo-u; ip -n plxo-u link set lo up
ip -n plxo-u link add br0 type bridge; ip -n plxo-u link set br0 up
ip -n plxo-u addr add $ETCD_ADDR/24 dev br0
plug() { # NS N: plugs namespace NS into the underlay as 10.99.0.N on its u0
  ip -n plxo-u link add plxo-u$2 type veth peer name u0 netns "$1"
  ip -n plxo-u link set plxo-u$2 master br0 up
  ip -n "$1" addr add 10.99.0.$2/24 dev u0; ip -n "$1" link set u0 up
}
mkdir -p "$TMP/etcd"
log "etcd in the underlay namespace at $ETCD_ADDR:2379 (data: $TMP/etcd)"
ip netns exec plxo-u etcd --name plxo --data-dir "$TMP/etcd/data" \
  --listen-client-urls http://$ETCD_ADDR:2379 --advertise-client-urls http://$ETCD_ADDR:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster plxo=http://127.0.0.1:2380 --initial-cluster-state new \
  --logger zap --log-outputs stderr --log-level warn </dev/null >/dev/null 2>"$TMP/etcd/etcd.log" &
ETCD_PID=$!
for _ in $(seq 100); do ip netns exec plxo-u curl -sf http://$ETCD_ADDR:2379/health >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec plxo-u curl -sf http://$ETCD_ADDR:2379/health >/dev/null 2>&1 || { tail -5 "$TMP/etcd/etcd.log" >&2; die "etcd did not start"; }

start_host() { # N: starts host N's plexusd (again) and waits for its socket
  local n=$1; local h=$TMP/h$n
  local args=(--state-dir "$h/state" --run-dir "$h/run" -H "unix://$h/plexus.sock" --bridge none
    --cluster-store "etcd://$ETCD_ADDR:2379/plxo" --cluster-advertise 10.99.0.$n --dns-resolv-conf "$TMP/resolv.conf")
  ((n > 1)) && args+=(--cluster-join 10.99.0.1)
  rm -f "$h/plexus.sock"
  nsenter --net=/run/netns/plxo-h$n "$PLEXUSD" "${args[@]}" </dev/null >/dev/null 2>>"$h/plexusd.log" &
  PXPID[$n]=$!
  for _ in $(seq 300); do PXn "$n" network ls >/dev/null 2>&1 && return 0; kill -0 "${PXPID[$n]}" 2>/dev/null || break; sleep 0.05; done
  tail -5 "$h/plexusd.log" >&2; die "plexusd of host $n did not start"
}
alive_all() { # every running host sees NHOSTS hosts, all alive
  local n
  for n in $(seq 1 $NHOSTS); do
    [[ $(PXn "$n" cluster ls --format json 2>/dev/null | grep -c '"State":"alive"') == "$NHOSTS" ]] || return 1
    [[ $(PXn "$n" cluster ls --format json 2>/dev/null | grep -c .) == "$NHOSTS" ]] || return 1
  done
}
wait_until() { # SECONDS CMD...: polls CMD every 0.1 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.1; done
}
for n in $(seq 1 $NHOSTS); do
  ip netns add plxo-h$n; ip -n plxo-h$n link set lo up; plug plxo-h$n "$n"
  mkdir -p "$TMP/h$n"
done
log "starting $NHOSTS plexusd hosts (10.99.0.1-$NHOSTS, host 1 the seed)"
for n in $(seq 1 $NHOSTS); do start_host "$n"; done
wait_until 60 alive_all || die "the hosts do not all see each other alive: $(PXn 1 cluster ls 2>&1)"
PXn 1 network create -d overlay --subnet $SUBNET --attachable plxo-ov >/dev/null || die "plexus network create -d overlay"
NETID=$(PXn 1 network inspect plxo-ov | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Id"])')
ovns() { echo "$TMP/h$1/run/overlay/1-${NETID:0:11}"; }
sbns() { echo "$TMP/h$1/run/netns/$2"; }
# One prober sandbox per host: it keeps the host's segment up all along, and probes in phase 2.
for n in $(seq 1 $NHOSTS); do
  PXn "$n" sandbox create plxo-p$n --network plxo-ov --ip $NET.1$n >/dev/null || die "sandbox plxo-p$n on host $n"
done
[[ -e $(ovns 1) ]] || die "no overlay namespace at $(ovns 1)"
# checks: every prober reaches the others over the overlay; the FDBs hold the other hosts
CHECKS=0
for a in $(seq 1 $NHOSTS); do for b in $(seq 1 $NHOSTS); do
  ((a == b)) && continue
  if wait_until 20 nsenter --net="$(sbns "$a" plxo-p$a)" ping -c1 -W1 -q $NET.1$b >/dev/null 2>&1; then :; else echo "check: host $a -> plxo-p$b ($NET.1$b) PING FAILED"; CHECKS=1; fi
done; done
((CHECKS)) || echo "check: the three prober sandboxes ping each other over the overlay ok"
echo "check: host 1's vxlan0 FDB: $(nsenter --net="$(ovns 1)" bridge fdb show dev vxlan0 | grep -v '^00:00:00:00:00:00' | grep -o 'dst [0-9.]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
((CHECKS)) && die "a check failed: nothing measured"

echo "== Plexus multi-host overlay benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release build, $NHOSTS hosts (netns on an underlay bridge), etcd $(etcd --version 2>/dev/null | awk '/etcd Version/{print $3}') in the underlay namespace; docker: $( ((DOCKER)) && docker version --format 'server {{.Server.Version}} / CLI {{.Client.Version}}, swarm mode, one node' || echo 'NOT measured')"
echo "reps=$REPS attaches=$ATTACHES iperf=${IPERF_SECS}s x$IPERF_REPS kills=$KILLS sim_nodes=$SIM_NODES pause=${PAUSE}s"
echo "timing: wall clock around each CLI command (bash \$EPOCHREALTIME), so every figure includes its CLI round trip"

# ---------- 1. attach on one host ----------
log "1. attach on host 1 x$REPS: sandbox create with/without the overlay, docker run overlay/none; connect/disconnect (rotating order)"
if ((DOCKER)); then
  docker network create -d overlay --attachable --subnet $DSUBNET plxo-ov >/dev/null || die "docker network create -d overlay"
  # keeps the overlay's sandbox up on this node (Docker makes it lazily, at the first container)
  docker run -d --label plxo-bench=1 --name plxo-dkeep --network plxo-ov "$IMG" sleep 1000000 >/dev/null || die "docker run on the overlay"
  docker run -d --label plxo-bench=1 --name plxo-dsb "$IMG" sleep 1000000 >/dev/null || die "docker run (the container to connect)"
fi
PXn 1 sandbox create plxo-sb >/dev/null || die "plexus sandbox create plxo-sb"
pc() { tm create_ov_plexus.txt PXn 1 sandbox create plxo-c$REP --network plxo-ov; }
p0() { tm create_none_plexus.txt PXn 1 sandbox create plxo-n$REP; }
dc() { ((DOCKER)) && tm run_ov_docker.txt docker run -d --label plxo-bench=1 --name plxo-dc$REP --network plxo-ov "$IMG" sleep 1000000; }
d0() { ((DOCKER)) && tm run_none_docker.txt docker run -d --label plxo-bench=1 --name plxo-dn$REP --network none "$IMG" sleep 1000000; }
pa() { tm connect_plexus.txt PXn 1 network connect plxo-ov plxo-sb; }
pd() { tm disconnect_plexus.txt PXn 1 network disconnect plxo-ov plxo-sb; }
da() { ((DOCKER)) && tm connect_docker.txt docker network connect plxo-ov plxo-dsb; }
dd() { ((DOCKER)) && tm disconnect_docker.txt docker network disconnect plxo-ov plxo-dsb; }
for r in $(seq 1 "$REPS"); do
  REP=$r
  case $((r % 4)) in
    1) pc; p0; dc; d0 ;;
    2) d0; dc; p0; pc ;;
    3) p0; pc; d0; dc ;;
    0) dc; d0; pc; p0 ;;
  esac
  case $((r % 4)) in
    1) pa; da; pd; dd ;;
    2) da; pa; dd; pd ;;
    3) pa; da; dd; pd ;;
    0) da; pa; pd; dd ;;
  esac
  # untimed: what this rep made goes, then quiet for Docker's tail
  PXn 1 sandbox rm plxo-c$r plxo-n$r >/dev/null 2>&1
  ((DOCKER)) && docker rm -f plxo-dc$r plxo-dn$r >/dev/null 2>&1
  sleep 0.5
done
REP=0
for _ in $(seq 1 10); do
  tm noop_plexus.txt PXn 1 network inspect plxo-ov
  ((DOCKER)) && tm noop_docker.txt docker network inspect plxo-ov
done
PXn 1 sandbox rm plxo-sb >/dev/null
if ((DOCKER)); then
  [[ $(docker inspect -f '{{.State.Running}}' plxo-dkeep 2>/dev/null) == true ]] || echo "check: docker's keep container is not running"
  log "docker: leaving the swarm, removing what phase 1 made"
  docker_down
fi

# ---------- 2. reachability across hosts ----------
log "2. reachability: $ATTACHES attaches rotating over the hosts, probed from the two others"
# The probers' sandboxes resolve neighbours every 5 ms instead of every second (retrans_time):
# an unanswered ARP otherwise waits a whole second before the next, and the figure would be the
# kernel's retry timer, not the time the peer's entries took to arrive.
for n in $(seq 1 $NHOSTS); do
  ns=$(sbns "$n" plxo-p$n)
  for ifc in $(nsenter --net="$ns" ip -o link show | awk -F': ' '$2!="lo"{sub(/@.*/,"",$2); print $2}'); do
    nsenter --net="$ns" sysctl -qw net.ipv4.neigh.$ifc.retrans_time_ms=5
  done
done
for i in $(seq 1 "$ATTACHES"); do
  a=$(( (i - 1) % NHOSTS + 1 ))
  ip=$NET.$((100 + i))            # a new address each time: no entry left from an earlier one
  pids=(); others=()
  for b in $(seq 1 $NHOSTS); do
    ((b == a)) && continue
    others+=("$b")
    nsenter --net="$(sbns "$b" plxo-p$b)" "$PROBE" "$ip" 9 2000 10000 > "$TMP/probe_$b.out" 2>&1 &
    pids+=($!)
  done
  sleep 0.1
  t0=$EPOCHREALTIME
  PXn "$a" sandbox create plxo-r$i --network plxo-ov --ip "$ip" >/dev/null 2>"$TMP/last.err"; rc=$?
  t1=$EPOCHREALTIME
  ((rc)) && log "attach $i on host $a FAILED: $(tail -1 "$TMP/last.err")"
  for k in "${!pids[@]}"; do
    b=${others[$k]}
    wait "${pids[$k]}"
    read -r tr sent < "$TMP/probe_$b.out"
    if [[ $tr == timeout || $rc != 0 ]]; then
      echo "$i $a $b timeout timeout $(ms "$t0" "$t1") ${sent:-0}" >> "$D/reach.txt"
    else
      echo "$i $a $b $(ms "$t0" "$tr") $(ms "$t1" "$tr") $(ms "$t0" "$t1") $sent" >> "$D/reach.txt"
    fi
  done
  PXn "$a" sandbox rm plxo-r$i >/dev/null 2>&1
  sleep 0.3
done
awk '{printf "  %s", $4} END{print ""}' "$D/reach.txt" | fold -w 150 | head -3 | sed 's/^/  reach ms (first):/' >&2

# ---------- 3. throughput ----------
log "3. iperf3 TCP ${IPERF_SECS}s x $IPERF_REPS: sandboxes on hosts 1 and 2 vs a bare VXLAN beside them (rotating order)"
PXn 1 sandbox create plxo-t1 --network plxo-ov --ip $NET.21 >/dev/null || die "plxo-t1"
PXn 2 sandbox create plxo-t2 --network plxo-ov --ip $NET.22 >/dev/null || die "plxo-t2"
MTU=$(nsenter --net="$(sbns 1 plxo-t1)" ip -o link show | awk '$2!="lo:"{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}' | head -1)
# the bare VXLAN: host namespaces 10.99.0.101/102 on the same underlay, the VXLAN device born in
# the host namespace and moved into an "overlay" namespace with a bridge, a veth pair from there
# to a "container" namespace; static FDB and neighbour entries for the remote end, as Plexus's
mac() { printf '02:42:0a:fc:00:%02x' "$1"; }
for s in 1 2; do
  for k in bh bo bc; do ip netns add plxo-$k$s; ip -n plxo-$k$s link set lo up; done
  plug plxo-bh$s $((100 + s))
  ip -n plxo-bh$s link add vxlan0 type vxlan id $BVNI dstport 4789 local 10.99.0.$((100 + s)) nolearning proxy udpcsum
  ip -n plxo-bh$s link set vxlan0 netns plxo-bo$s
  ip -n plxo-bo$s link add br0 mtu "$MTU" type bridge mcast_snooping 0
  ip -n plxo-bo$s link set vxlan0 mtu "$MTU" master br0
  ip -n plxo-bo$s link add plxo-bv$s mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns plxo-bc$s
  ip -n plxo-bo$s link set plxo-bv$s master br0
  for l in vxlan0 br0 plxo-bv$s; do ip -n plxo-bo$s link set $l up; done
  ip -n plxo-bc$s link set eth0 address "$(mac $s)"
  ip -n plxo-bc$s addr add $BNET.$s/24 dev eth0; ip -n plxo-bc$s link set eth0 up
done
for s in 1 2; do
  o=$((3 - s))
  ip netns exec plxo-bo$s bridge fdb add "$(mac $o)" dev vxlan0 dst 10.99.0.$((100 + o)) self permanent
  ip -n plxo-bo$s neigh add $BNET.$o lladdr "$(mac $o)" dev vxlan0 nud permanent
done
nsenter --net="$(sbns 1 plxo-t1)" iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
ip netns exec plxo-bc1 iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
sleep 1
nsenter --net="$(sbns 2 plxo-t2)" ping -c1 -W2 -q $NET.21 >/dev/null 2>&1 && echo "check: plexus t2 (host 2) -> t1 (host 1) ping ok" || { echo "check: plexus t2 -> t1 PING FAILED"; CHECKS=1; }
ip netns exec plxo-bc2 ping -c1 -W2 -q $BNET.1 >/dev/null 2>&1 && echo "check: bare c2 -> c1 ping ok" || { echo "check: bare c2 -> c1 PING FAILED"; CHECKS=1; }
bmtu=$(ip -n plxo-bc2 -o link show eth0 | awk '{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}')
echo "mtu: plexus sandbox $MTU, plexus vxlan0 $(nsenter --net="$(ovns 2)" ip -o link show vxlan0 | awk '{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}'); bare container $bmtu, bare vxlan0 $(ip -n plxo-bo2 -o link show vxlan0 | awk '{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}'); underlay 1500"
echo "vxlan0: plexus: $(nsenter --net="$(ovns 2)" ip -d -o link show vxlan0 | grep -o 'vxlan id.*' | cut -c1-110)"
echo "vxlan0: bare:   $(ip -n plxo-bo2 -d -o link show vxlan0 | grep -o 'vxlan id.*' | cut -c1-110)"
echo "$MTU $bmtu" > "$D/tput_mtu.txt"
ip3() { # NSENTER-ARG DST FILE: one iperf3 run, "REP GBIT/S RETRANSMITS"
  local out; out=$(nsenter "$1" iperf3 -c "$2" -p 5201 -t "$IPERF_SECS" -J 2>/dev/null) || { log "iperf3 to $2 failed"; return; }
  python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print("%s %.3f %d" % (sys.argv[1], e["sum_received"]["bits_per_second"]/1e9, e["sum_sent"].get("retransmits", -1)))' "$REP" <<<"$out" >> "$D/$3"
}
tp() { ip3 --net="$(sbns 2 plxo-t2)" $NET.21 tput_plexus.txt; }
tb() { ip3 --net=/run/netns/plxo-bc2 $BNET.1 tput_bare.txt; }
last() { awk -v r="$REP" '$1==r{print $2}' "$D/$1" 2>/dev/null; }
for r in $(seq 1 "$IPERF_REPS"); do
  REP=$r
  if ((r % 2)); then tp; tb; else tb; tp; fi
  log "  rep $r: plexus $(last tput_plexus.txt) bare $(last tput_bare.txt) Gbit/s"
done
REP=0
for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; SRV_PIDS=()
PXn 1 sandbox rm plxo-t1 >/dev/null; PXn 2 sandbox rm plxo-t2 >/dev/null
for s in 1 2; do for k in bc bo bh; do ip netns del plxo-$k$s; done; ip -n plxo-u link del plxo-u$((100 + s)) 2>/dev/null; done

# ---------- 4. failure detection ----------
BOUND=$(PXn 1 cluster inspect | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["FailureDetectionMs"])')
echo "$BOUND" > "$D/detect_bound_ms.txt"
WATCH_S=$(( BOUND * 2 / 1000 + 10 ))
log "4. failure detection: $KILLS kills (rotating over the hosts), SWIM bound $BOUND ms; watching up to ${WATCH_S}s"
entries_back() { # VICTIM: every other host's FDB sends to it again
  local paths=() n
  for n in $(seq 1 $NHOSTS); do ((n == $1)) || paths+=("$(ovns "$n")"); done
  python3 "$HERE/fdbwatch.py" back 10.99.0.$1 0.05 "${paths[@]}" >/dev/null
}
missed=0
for i in $(seq 1 "$KILLS"); do
  if ((missed >= 2)); then log "two kills in a row were never detected everywhere: no more kills"; break; fi
  v=$(( (i - 1) % NHOSTS + 1 ))
  paths=()
  for n in $(seq 1 $NHOSTS); do ((n == v)) || paths+=("$(ovns "$n")"); done
  wait_until 60 alive_all || { log "kill $i: not every host alive before it; skipped"; echo "$i $v skipped" >> "$D/detect.txt"; continue; }
  wait_until 60 entries_back "$v" || { log "kill $i: host $v's entries are not on every other host; skipped"; echo "$i $v skipped" >> "$D/detect.txt"; continue; }
  sleep 1
  t0=$EPOCHREALTIME
  kill -9 "${PXPID[$v]}"; wait "${PXPID[$v]}" 2>/dev/null; PXPID[$v]=""
  python3 "$HERE/fdbwatch.py" gone 10.99.0.$v "$WATCH_S" "${paths[@]}" > "$TMP/watch.out"
  per=(); worst=0
  while read -r p t; do
    if [[ $t == timeout ]]; then per+=(timeout); worst=timeout
    else d=$(ms "$t0" "$t"); per+=("$d"); [[ $worst != timeout ]] && worst=$(awk -v a="$worst" -v b="$d" 'BEGIN{print (b>a?b:a)}'); fi
  done < "$TMP/watch.out"
  # the restart: until it is alive everywhere and its entries are back on every other host
  t2=$EPOCHREALTIME
  start_host "$v"
  if wait_until 60 alive_all && wait_until 60 entries_back "$v"; then back=$(ms "$t2" "$EPOCHREALTIME"); else back=timeout; fi
  echo "$i $v $worst ${per[*]} $back" >> "$D/detect.txt"
  if [[ $worst == timeout ]]; then missed=$((missed + 1)); else missed=0; fi
  log "  kill $i (host $v): entries gone everywhere after $worst ms (per host: ${per[*]}); back $back ms after the restart"
done

# ---------- 5. the gossip simulator ----------
log "5. gossip simulator: $SIM_NODES nodes (virtual time; the wall time is the simulation's cost)"
ts=$SECONDS
"$SIM" --nodes "$SIM_NODES" > "$D/sim.out" 2> "$D/sim.err"; echo $? > "$D/sim_rc.txt"
grep -E '^# (settings|bootstrap|convergence|detection|FAILED|!!)' "$D/sim.err" | sed 's/^# /  sim: /' | cut -c1-220
echo "  sim: exit status $(cat "$D/sim_rc.txt"), $((SECONDS - ts)) s wall"

echo "elapsed: $((SECONDS - T0)) s, load now $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 "$HERE/report.py" "$D"
