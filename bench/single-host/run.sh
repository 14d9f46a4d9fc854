#!/usr/bin/env bash
# Single-host benchmark: Plexus (plexusd + plexus CLI, release build) against Docker 20.10
# (dockerd's embedded libnetwork, through the docker CLI) and netavark 1.4, in ONE run, with
# the measurements of phases 1, 2 and 4 interleaved (Plexus, peer, Plexus, peer...) so that the
# machine's noise hits both sides alike. In phase 3 each tool ramps its N alone, one after the
# other, so that neither tool's containers weigh on the other's figures at one N only.
#
#   1. network create / rm                      plexus vs docker
#   2. attach / detach of an existing sandbox   plexus network connect/disconnect vs
#                                               docker network connect/disconnect vs netavark setup/teardown
#   3. the same with one published port, with N = 1, 100, 1000 sandboxes (each with a port) on the
#      network: plexus sandbox create --netns PATH --network NET -p ... / sandbox rm
#      (Plexus ramps first, probed on the way up and again on the way down: N = 1, 100, 1000,
#      100, 1), then netavark setup/teardown with a port_mappings entry (up to --nv-max),
#      and beside Plexus at every N the bare kernel: one port added to the same bridge by
#      port_floor.rs (the `port-floor` example of plexus-sys), timed inside that process
#   4. iperf3 TCP between two sandboxes, like with like: a Plexus bridge (default `auto`: IPv4
#      BIG TCP here) vs a bare veth+bridge pair made by hand and given the same IPv4 GSO/GRO
#      limit as Plexus's veths (gso4.py, through rtnetlink), and a Plexus bridge with BIG TCP off
#      (plexus.bridge.gso_ipv4_max_size=65536) vs a bare pair at the kernel's 64 KiB
#
# Usage: bench/single-host/run.sh [--quick] [--reps N] [--nv-max N] [--nv-budget S] [--iperf-secs S] [--pause S] [--keep-data]
#   --quick: 10 reps, 8 probes per N, netavark ramp to 100, iperf3 5 s x 2 (about 4 min)
#   default: 30 reps, 20 probes per N, netavark ramp to 1000 but at most --nv-budget (330) s of
#   its fill; netavark is then probed at the N its ramp reached (about 9 min)
#   --pause: quiet time before each measured command (default 0.1 s), so that one tool's
#   asynchronous tail (dockerd keeps working after its CLI returns; Plexus deletes links in the
#   background) is not billed to the next tool measured; fills are not paused
# Needs root. Installs the peers from Debian's packages if missing; starts dockerd like
# ../shared/anchors/00_setup.sh does if it is not running (and stops it again at the end).
# plexusd runs from $CARGO_TARGET_DIR (default: the repository's own target/) with temp
# state/run dirs and its own socket, inside a network namespace the bench makes; netavark runs
# inside another one.
# Everything made here is named plxb-* and is removed on exit, also on failure.
# Samples of phases 1, 2 and 4 are written with their rep number ("REP MS"): the report pairs
# two tools' samples only within one rep. Last line: headline figures as key=value pairs,
# the issue's targets with PASS/FAIL just above it.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$SECONDS

REPS=30; NV_MAX=1000; IPERF_SECS=5; IPERF_REPS=8; PORT_REPS=20; NLIST="1 100 1000"
NV_BUDGET=330   # seconds the netavark fill may take before the ramp stops (its cost grows with N)
KEEP=0
PAUSE=0.1       # seconds of quiet before each measured command (see "timing" below)
while (($#)); do
  case "$1" in
    --quick) REPS=10; NV_MAX=100; IPERF_SECS=5; IPERF_REPS=2; PORT_REPS=8 ;;
    --reps) REPS=$2; PORT_REPS=$2; shift ;;
    --nv-max) NV_MAX=$2; shift ;;
    --iperf-secs) IPERF_SECS=$2; shift ;;
    --nv-budget) NV_BUDGET=$2; shift ;;
    --pause) PAUSE=$2; shift ;;
    --keep-data) KEEP=1 ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxb.XXXXXX)
D=$TMP/data; mkdir -p "$D"
NETAVARK=/usr/lib/podman/netavark
IMG=plxb-bb:latest
log() { echo "[$(date +%T)] $*" >&2; }

# ---------- cleanup (trap) ----------
PLEXUSD_PID=""; DOCKERD_STARTED=0; DOCKERD_PID=""; IMG_IMPORTED=0; SRV_PIDS=()
PX() { PLEXUS_HOST="unix://$TMP/plexus.sock" "$CARGO_TARGET_DIR/release/plexus" "$@"; }
cleanup() {
  set +e
  log "cleanup"
  for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [[ -n $PLEXUSD_PID ]] && kill -0 "$PLEXUSD_PID" 2>/dev/null; then
    sbs=$(PX sandbox ls -q 2>/dev/null)
    [[ -n $sbs ]] && PX sandbox rm $sbs >/dev/null 2>&1
    nets=$(PX network ls --format '{{.Name}}' 2>/dev/null | grep '^plxb-')
    [[ -n $nets ]] && PX network rm $nets >/dev/null 2>&1
    kill "$PLEXUSD_PID"; for _ in $(seq 100); do kill -0 "$PLEXUSD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PLEXUSD_PID" 2>/dev/null; wait "$PLEXUSD_PID" 2>/dev/null
  fi
  # namespaces plexusd made (bind mounts under its run dir)
  if [[ -d $TMP/run ]]; then
    for m in $(awk -v p="$TMP/" 'index($5,p)==1{print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
  fi
  if docker info >/dev/null 2>&1; then
    docker ps -aq --filter label=plxb-bench | xargs -r docker rm -f >/dev/null 2>&1
    for n in $(docker network ls --format '{{.Name}}' | grep '^plxb-'); do docker network rm "$n" >/dev/null 2>&1; done
    [[ $IMG_IMPORTED == 1 ]] && docker image rm "$IMG" >/dev/null 2>&1
  fi
  if [[ $DOCKERD_STARTED == 1 && -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null; for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  # every namespace the bench made (plexus host, netavark host, sandboxes, iperf)
  for n in $(ip netns list | awk '{print $1}' | grep '^plxb-'); do ip netns del "$n"; done
  if [[ $KEEP == 1 ]]; then log "raw data kept in $D"; rm -rf "$TMP/state" "$TMP/run" "$TMP/nvcfg"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ms since $1 (an $EPOCHREALTIME), printed with 3 decimals
el() { local t1=$EPOCHREALTIME; awk -v a="$1" -v b="$t1" 'BEGIN{printf "%.3f\n",(b-a)*1000}'; }
# tm FILE CMD...: runs CMD, appends its wall-clock ms to FILE ("$REP MS" while REP is set: the
# rep the sample belongs to, so that the report pairs samples of one rep only); fails if CMD fails
REP=""
tm() {
  local f=$1; shift
  [[ $f == fill_* ]] || sleep "$PAUSE"
  local t0=$EPOCHREALTIME
  "$@" >/dev/null 2>"$TMP/last.err"; local rc=$?
  local t1=$EPOCHREALTIME
  if ((rc)); then log "FAILED ($rc): $* : $(tail -2 "$TMP/last.err")"; return $rc; fi
  awk -v r="$REP" -v a="$t0" -v b="$t1" 'BEGIN{printf "%s%.3f\n",(r==""?"":r" "),(b-a)*1000}' >> "$D/$f"
}

# ---------- setup ----------
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io netavark aardvark-dns iperf3 busybox-static iptables; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi

log "building plexusd + plexus (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && ./scripts/build -q && cargo build --release -q -p plexus-sys --example port-floor) || { echo "build failed" >&2; exit 1; }
FLOOR=$CARGO_TARGET_DIR/release/examples/port-floor
PAUSE_MS=$(awk -v p="$PAUSE" 'BEGIN{printf "%d", p*1000}')

DOCKER=1
if ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null; then
    log "starting dockerd (as ../shared/anchors/00_setup.sh: dockerd --iptables=true)"
    setsid dockerd --iptables=true >"$TMP/dockerd.log" 2>&1 &
    DOCKERD_PID=$!; DOCKERD_STARTED=1
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  fi
fi
if ! docker info >/dev/null 2>&1; then
  DOCKER=0
  echo "!! dockerd cannot run on this machine: Docker is NOT measured (docker=unavailable)"
  [[ -f $TMP/dockerd.log ]] && tail -5 "$TMP/dockerd.log" | sed 's/^/!!   /'
  echo unavailable > "$D/docker_status"
else
  echo ok > "$D/docker_status"
  if ! docker image inspect "$IMG" >/dev/null 2>&1; then
    r=$(mktemp -d); mkdir -p "$r/bin"; cp /bin/busybox "$r/bin/"; ln -s busybox "$r/bin/sleep"; ln -s busybox "$r/bin/sh"
    tar -C "$r" -c . | docker import - "$IMG" >/dev/null && IMG_IMPORTED=1; rm -rf "$r"
  fi
fi

# Plexus: its own "host" namespace, temp dirs, own socket
ip netns add plxb-host; ip -n plxb-host link set lo up
log "starting plexusd (state $TMP/state, run $TMP/run, socket $TMP/plexus.sock, in netns plxb-host)"
nsenter --net=/run/netns/plxb-host "$CARGO_TARGET_DIR/release/plexusd" --state-dir "$TMP/state" --run-dir "$TMP/run" \
  -H "unix://$TMP/plexus.sock" </dev/null >/dev/null 2>"$TMP/plexusd.log" &
PLEXUSD_PID=$!
for _ in $(seq 200); do PX network ls >/dev/null 2>&1 && break; sleep 0.1; done
PX network ls >/dev/null 2>&1 || { echo "plexusd did not start:"; tail "$TMP/plexusd.log"; exit 1; }

# netavark: its own "host" namespace (its bridge + iptables rules live there, not in the machine's)
ip netns add plxb-nvh; ip -n plxb-nvh link set lo up
mkdir -p "$TMP/nvcfg" "$TMP/nvopts"
export NETAVARK_FW=iptables
NV() { nsenter --net=/run/netns/plxb-nvh "$NETAVARK" --config "$TMP/nvcfg" "$@"; }
nvopts() { python3 "$HERE/nvopts.py" "$@"; }   # I NET BRIDGE SUBNET_BASE PORT(0|1)

echo "== Plexus single-host benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release build; docker: $( ((DOCKER)) && docker version --format 'server {{.Server.Version}} / CLI {{.Client.Version}}' || echo unavailable); netavark: $($NETAVARK --version 2>/dev/null | awk '{print $2}')"
echo "reps=$REPS port_reps=$PORT_REPS N=[$NLIST] netavark_max_N=$NV_MAX iperf=${IPERF_SECS}s x$IPERF_REPS"
echo "timing: wall clock around each CLI command (bash \$EPOCHREALTIME), so every figure includes its CLI/exec round trip; ${PAUSE}s of quiet before each measured command"

# ---------- 1. network create / rm ----------
log "1. network create/rm x$REPS (alternating)"
for r in $(seq 1 "$REPS"); do
  REP=$r
  if ((r % 2)) || ((!DOCKER)); then
    tm net_create_plexus.txt PX network create plxb-n$r
    ((DOCKER)) && tm net_create_docker.txt docker network create plxb-n$r
    tm net_rm_plexus.txt PX network rm plxb-n$r
    ((DOCKER)) && tm net_rm_docker.txt docker network rm plxb-n$r
  else
    tm net_create_docker.txt docker network create plxb-n$r
    tm net_create_plexus.txt PX network create plxb-n$r
    tm net_rm_docker.txt docker network rm plxb-n$r
    tm net_rm_plexus.txt PX network rm plxb-n$r
  fi
done
REP=""

# ---------- 2. attach / detach, no port ----------
log "2. attach/detach of an existing sandbox x$REPS (rotating order)"
PX network create --subnet 10.231.0.0/16 plxb-att >/dev/null
PX sandbox create plxb-keep --network plxb-att >/dev/null      # keeps the network in use
ip netns add plxb-sb; PX sandbox create plxb-sb --netns /run/netns/plxb-sb >/dev/null   # the existing sandbox
if ((DOCKER)); then
  docker network create plxb-att >/dev/null
  docker run -d --label plxb-bench=1 --name plxb-dkeep --network plxb-att "$IMG" sleep 100000 >/dev/null
  docker run -d --label plxb-bench=1 --name plxb-dsb "$IMG" sleep 100000 >/dev/null
fi
nvopts 1 plxb-nva plxb-nva0 10.232 0 > "$TMP/nvopts/a1.json"; nvopts 2 plxb-nva plxb-nva0 10.232 0 > "$TMP/nvopts/a2.json"
ip netns add plxb-nva1; NV setup /run/netns/plxb-nva1 < "$TMP/nvopts/a1.json" >/dev/null   # keeps the bridge up
ip netns add plxb-nva2
pa() { tm attach_plexus.txt PX network connect plxb-att plxb-sb; }
pd() { tm detach_plexus.txt PX network disconnect plxb-att plxb-sb; }
da() { ((DOCKER)) && tm attach_docker.txt docker network connect plxb-att plxb-dsb; }
dd() { ((DOCKER)) && tm detach_docker.txt docker network disconnect plxb-att plxb-dsb; }
na() { sleep "$PAUSE"; t0=$EPOCHREALTIME; NV setup /run/netns/plxb-nva2 < "$TMP/nvopts/a2.json" >/dev/null && echo "$REP $(el "$t0")" >> "$D/attach_netavark.txt"; }
nd() { sleep "$PAUSE"; t0=$EPOCHREALTIME; NV teardown /run/netns/plxb-nva2 < "$TMP/nvopts/a2.json" >/dev/null && echo "$REP $(el "$t0")" >> "$D/detach_netavark.txt"; }
for r in $(seq 1 "$REPS"); do
  REP=$r
  case $((r % 3)) in
    1) pa; da; na; pd; dd; nd ;;
    2) da; na; pa; dd; nd; pd ;;
    0) na; pa; da; nd; pd; dd ;;
  esac
done
REP=""
for _ in $(seq 1 10); do
  tm noop_plexus.txt PX network inspect plxb-att
  ((DOCKER)) && tm noop_docker.txt docker network inspect plxb-att
  tm noop_netavark.txt "$NETAVARK" version
done
# sanity: the Plexus sandbox really gets a working interface
PX network connect plxb-att plxb-sb >/dev/null
ip=$(PX sandbox exec plxb-keep -- ip -4 -o addr show 2>/dev/null | awk '$2!="lo"{print $4}' | cut -d/ -f1 | head -1)
if ip netns exec plxb-sb busybox ping -c1 -W2 "$ip" >/dev/null 2>&1; then echo "check: plexus sandbox -> other sandbox ($ip) ping ok"; else echo "check: plexus sandbox -> $ip PING FAILED"; fi
PX network disconnect plxb-att plxb-sb >/dev/null
# free what phase 2 made
PX sandbox rm plxb-keep plxb-sb >/dev/null; PX network rm plxb-att >/dev/null
NV teardown /run/netns/plxb-nva1 < "$TMP/nvopts/a1.json" >/dev/null 2>&1
ip netns del plxb-nva1; ip netns del plxb-nva2; ip netns del plxb-sb
if ((DOCKER)); then docker rm -f plxb-dkeep plxb-dsb >/dev/null; docker network rm plxb-att >/dev/null; fi

# ---------- 3. published port, N = 1, 100, 1000 ----------
# Each tool ramps alone: Plexus (up, then down), then netavark. Interleaved, the other tool's
# N-1 containers would sit in the kernel during one tool's high-N probes and not during its
# N=1 probes, and they cost it: beside 400 netavark containers (in their own namespaces, with
# netavark's iptables rules) the bare kernel's port add on a bridge takes 1.6 ms instead of
# 1.1 ms here (bench/single-host/neighbours.sh). That would read as growth with the tool's N.
log "3a. Plexus: attach/detach with one published port at N in [$NLIST], up then down"
PX network create --subnet 10.233.0.0/16 -o com.docker.network.bridge.name=plxb-port0 plxb-port >/dev/null
# The bare kernel beside Plexus at every N: one port added to the same bridge with the fewest
# requests (bench/single-host/port_floor.rs), timed inside that process, PORT_REPS times.
floor() { nsenter --net=/run/netns/plxb-host "$FLOOR" plxb-port0 "$PORT_REPS" "$PAUSE_MS" >> "$D/$1" 2>>"$TMP/floor.err" || log "port-floor failed: $(tail -1 "$TMP/floor.err")"; }
ip netns add plxb-probe
pprobe() { # N SUFFIX: one attach and one detach of the probe sandbox
  tm port_attach_plexus$2_n$1.txt PX sandbox create plxb-probe --netns /run/netns/plxb-probe --network plxb-port -p 127.0.0.1:30000:80
  tm port_detach_plexus$2_n$1.txt PX sandbox rm plxb-probe
}
pfill=0
for N in $NLIST; do
  # fill up to N-1 others (the probe is the N-th)
  while ((pfill < N - 1)); do
    pfill=$((pfill + 1))
    tm fill_plexus.txt PX sandbox create plxb-f$pfill --network plxb-port -p 127.0.0.1:$((20000 + pfill)):80 || break
  done
  log "  N=$N: plexus has $pfill others; probing x$PORT_REPS"
  # Quiet after the fill: the kernel finishes its deferred work (RCU callbacks, link watch
  # events) before the probes.
  sleep 3
  for r in $(seq 1 "$PORT_REPS"); do pprobe "$N" ""; done
  floor port_floor_n$N.txt
done
# Plexus again on the way down (N = 100, then 1): the machine drifts over minutes, and probing
# the low N both before and after the peak centres them on the peak in time, so a slow drift
# does not read as growth (or hide it).
settle_links() { # until the host's links and the kernel's live namespaces (struct net
  # objects: the sandboxes' namespaces are torn down in the background) hold still for 1 s
  count() { echo "$(ip -n plxb-host -o link show | wc -l) $(awk '/^net_namespace /{print $2}' /proc/slabinfo 2>/dev/null)"; }
  local a b; a=$(count)
  while sleep 1; b=$(count); [[ $a != "$b" ]]; do a=$b; done
}
for N in $(tr ' ' '\n' <<<"$NLIST" | sort -rn | tail -n +2); do
  ((pfill > N - 1)) && PX sandbox rm $(seq -f 'plxb-f%g' "$N" "$pfill") >/dev/null
  pfill=$((N - 1))
  settle_links; sleep 3
  log "  N=$N (down): plexus has $pfill others; probing x$PORT_REPS"
  for r in $(seq 1 "$PORT_REPS"); do pprobe "$N" down; done
  floor port_floor_down_n$N.txt
done
# sanity: the probe's published port answers from the Plexus host namespace
PX sandbox create plxb-probe --netns /run/netns/plxb-probe --network plxb-port -p 127.0.0.1:30000:80 >/dev/null
ip netns exec plxb-probe busybox nc -l -p 80 -e echo plxb-hello >/dev/null 2>&1 & SRV_PIDS+=($!)
sleep 0.3
if ip netns exec plxb-host busybox nc -w 2 127.0.0.1 30000 </dev/null 2>/dev/null | grep -q plxb-hello; then
  echo "check: plexus published port 127.0.0.1:30000 -> probe sandbox:80 ok (with $pfill other ports published)"
else echo "check: plexus published port 127.0.0.1:30000 FAILED"; fi
echo "kernel objects (after the way down): plexus host netns has $(ip -n plxb-host -o link show | wc -l) links, nft $(ip netns exec plxb-host nft list ruleset 2>/dev/null | grep -c .) lines"
sbs=$(PX sandbox ls -q); [[ -n $sbs ]] && PX sandbox rm $sbs >/dev/null
PX network rm plxb-port >/dev/null
ip netns del plxb-probe
settle_links

log "3b. netavark: setup/teardown with one port mapping at N in [$NLIST] (up to $NV_MAX, fill budget ${NV_BUDGET}s)"
nvopts 9999 plxb-nvp plxb-nvp0 10.234 1 | sed 's/"host_port": 29999/"host_port": 30000/' > "$TMP/nvopts/probe.json"
ip netns add plxb-nvprobe
nvfill=0; last_nv_n=0; nv_t0=$SECONDS
for N in $NLIST; do
  ((N <= NV_MAX)) || break
  while ((nvfill < N - 1)); do
    if ((SECONDS - nv_t0 > NV_BUDGET)); then log "  netavark fill stopped at $nvfill (time budget ${NV_BUDGET}s)"; break; fi
    nvfill=$((nvfill + 1))
    [[ -f $TMP/nvopts/p$nvfill.json ]] || nvopts $nvfill plxb-nvp plxb-nvp0 10.234 1 > "$TMP/nvopts/p$nvfill.json"
    ip netns add plxb-nvp$nvfill
    t0=$EPOCHREALTIME; NV setup /run/netns/plxb-nvp$nvfill < "$TMP/nvopts/p$nvfill.json" >/dev/null 2>>"$TMP/nv.err" && el "$t0" >> "$D/fill_netavark.txt"
  done
  NV_N=$((nvfill + 1))   # the probe is the (nvfill+1)-th container (< N if the fill ran out of time)
  ((NV_N == last_nv_n)) && break   # the fill got no further: probed there already
  last_nv_n=$NV_N
  log "  N=$N: netavark has $nvfill others (probe at N=$NV_N); probing x$PORT_REPS"
  sleep 3
  for r in $(seq 1 "$PORT_REPS"); do
    sleep "$PAUSE"; t0=$EPOCHREALTIME; NV setup /run/netns/plxb-nvprobe < "$TMP/nvopts/probe.json" >/dev/null && el "$t0" >> "$D/port_attach_netavark_n$NV_N.txt"
    sleep "$PAUSE"; t0=$EPOCHREALTIME; NV teardown /run/netns/plxb-nvprobe < "$TMP/nvopts/probe.json" >/dev/null && el "$t0" >> "$D/port_detach_netavark_n$NV_N.txt"
  done
  ((NV_N < N)) && break   # out of time: probed once where it stopped
done
echo "kernel objects (at netavark's peak): netavark host netns iptables rules: $(ip netns exec plxb-nvh iptables-save 2>/dev/null | grep -c '^-A')"
for n in $(ip netns list | awk '{print $1}' | grep -E '^plxb-(nvp[0-9]+|nvprobe)$'); do ip netns del "$n"; done

# ---------- 4. throughput ----------
log "4. iperf3 TCP, ${IPERF_SECS}s x $IPERF_REPS, plexus bridge vs bare veth+bridge, with BIG TCP and at 64 KiB (rotating order)"
PX network create --subnet 10.235.0.0/24 plxb-tput >/dev/null
for s in 1 2; do ip netns add plxb-t$s; PX sandbox create plxb-t$s --netns /run/netns/plxb-t$s --network plxb-tput --ip 10.235.0.1$s >/dev/null; done
# The same with BIG TCP off (veth GSO/GRO at the kernel's 64 KiB), to show what it adds.
PX network create --subnet 10.237.0.0/24 -o plexus.bridge.gso_ipv4_max_size=65536 plxb-tput64 >/dev/null
for s in 3 4; do ip netns add plxb-t$s; PX sandbox create plxb-t$s --netns /run/netns/plxb-t$s --network plxb-tput64 --ip 10.237.0.1$s >/dev/null; done
gso() { ip netns exec "$1" python3 "$HERE/gso4.py" "$2" ${3:+"$3"} 2>>"$TMP/gso.err" || echo n/a; }
# The IPv4 GSO/GRO limit `auto` gave Plexus's veths (n/a on a kernel before 6.3); the bare pair
# beside it gets the same on all four ends, as Plexus sets both ends of its pairs.
PX_GSO=$(gso plxb-t2 eth0)
echo "$PX_GSO" > "$D/tput_gso_ipv4_max_size.txt"
# bare: bridges in their own netns (no rules), one veth to each of two netns per bridge:
# br0 with a/b at Plexus's limit, br1 with c/d at the kernel's default (64 KiB)
for n in plxb-bh plxb-ba plxb-bb plxb-bc plxb-bd; do ip netns add $n; ip -n $n link set lo up; done
for br in br0 br1; do ip -n plxb-bh link add $br type bridge; ip -n plxb-bh link set $br up; done
i=0
for s in a b c d; do
  i=$((i + 1)); br=br0; net=10.236.0; [[ $s == [cd] ]] && { br=br1; net=10.238.0; }
  ip link add plxb-b$s type veth peer name plxb-bh$s
  ip link set plxb-b$s netns plxb-b$s; ip link set plxb-bh$s netns plxb-bh
  if [[ $br == br0 && $PX_GSO =~ ^[0-9]+$ && $PX_GSO != 65536 ]]; then
    gso plxb-b$s plxb-b$s "$PX_GSO" >/dev/null; gso plxb-bh plxb-bh$s "$PX_GSO" >/dev/null
  fi
  ip -n plxb-bh link set plxb-bh$s master $br; ip -n plxb-bh link set plxb-bh$s up
  ip -n plxb-b$s addr add $net.$(( (i - 1) % 2 + 1 ))/24 dev plxb-b$s; ip -n plxb-b$s link set plxb-b$s up
done
ip netns exec plxb-t1 iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
ip netns exec plxb-t3 iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
ip netns exec plxb-ba iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
ip netns exec plxb-bc iperf3 -s -p 5201 >/dev/null 2>&1 & SRV_PIDS+=($!)
sleep 1
ip netns exec plxb-t2 busybox ping -c1 -W2 10.235.0.11 >/dev/null 2>&1 && echo "check: plexus t2 -> t1 ping ok" || echo "check: plexus t2 -> t1 PING FAILED"
ip netns exec plxb-t4 busybox ping -c1 -W2 10.237.0.13 >/dev/null 2>&1 && echo "check: plexus t4 -> t3 ping ok" || echo "check: plexus t4 -> t3 PING FAILED"
ip netns exec plxb-bb busybox ping -c1 -W2 10.236.0.1 >/dev/null 2>&1 && echo "check: bare b -> a ping ok" || echo "check: bare b -> a PING FAILED"
ip netns exec plxb-bd busybox ping -c1 -W2 10.238.0.1 >/dev/null 2>&1 && echo "check: bare d -> c ping ok" || echo "check: bare d -> c PING FAILED"
echo "mtu: plexus $(ip -n plxb-t2 -o link show | awk '$2!="lo:"{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}' | head -1), bare $(ip -n plxb-bb -o link show plxb-bb | awk '{for(i=1;i<=NF;i++) if($i=="mtu") print $(i+1)}'); bridge-nf-call-iptables: plexus host ns $(ip netns exec plxb-host sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null || echo n/a), bare bridge ns $(ip netns exec plxb-bh sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null || echo n/a)"
echo "veth gso_ipv4_max_size: plexus (auto: this host namespace has no uplink) $PX_GSO, the bare pair beside it $(gso plxb-bb plxb-bb) (bridge end $(gso plxb-bh plxb-bha)); plexus with gso_ipv4_max_size=65536 $(gso plxb-t4 eth0), the bare pair beside it $(gso plxb-bd plxb-bd) (bridge end $(gso plxb-bh plxb-bhd))"
[[ -s $TMP/gso.err ]] && log "gso4.py: $(tail -1 "$TMP/gso.err")"
ip3() { # NS DST FILE: one iperf3 run, written as "REP GBIT/S"
  local out; out=$(ip netns exec "$1" iperf3 -c "$2" -p 5201 -t "$IPERF_SECS" -J 2>/dev/null) || { log "iperf3 $1 failed"; return; }
  python3 -c 'import json,sys; print("%s %.3f" % (sys.argv[1], json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' "$REP" <<<"$out" >> "$D/$3"
}
tp() { ip3 plxb-t2 10.235.0.11 tput_plexus.txt; }
tb() { ip3 plxb-bb 10.236.0.1 tput_bare.txt; }
t6() { ip3 plxb-t4 10.237.0.13 tput_plexus64k.txt; }
b6() { ip3 plxb-bd 10.238.0.1 tput_bare64k.txt; }
# Each like-with-like pair (tp tb, t6 b6) runs back to back; which pair and which side goes
# first rotates, so neither side always follows the other.
last() { awk -v r="$REP" '$1==r{print $2}' "$D/$1" 2>/dev/null; }
for r in $(seq 1 "$IPERF_REPS"); do
  REP=$r
  case $((r % 4)) in
    1) tp; tb; t6; b6 ;;
    2) b6; t6; tb; tp ;;
    3) tb; tp; b6; t6 ;;
    0) t6; b6; tp; tb ;;
  esac
  log "  rep $r: plexus $(last tput_plexus.txt) bare $(last tput_bare.txt), plexus-64k $(last tput_plexus64k.txt) bare-64k $(last tput_bare64k.txt) Gbit/s"
done
REP=""

echo "elapsed: $((SECONDS - T0)) s, load now $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 "$HERE/report.py" "$D"
