#!/usr/bin/env bash
# Embedded DNS benchmark: Plexus's resolver (127.0.0.11 in a sandbox) against Docker 20.10's
# embedded DNS (127.0.0.11 in a container on a user network, served by dockerd) and
# aardvark-dns 1.4 (started by netavark on the gateway of a dns_enabled bridge), in ONE run.
# dnsperf runs inside the asking sandbox/container/namespace; each server is measured alone,
# the three one after the other within each rep (the order rotates from rep to rep).
#
#   fixed  dnsperf -Q 20000 for S s, A records of the 9 other sandboxes' names: the server's
#          CPU (utime+stime of its process, all threads) per completed query, p99 latency
#          (from dnsperf -v, one line per answer with its latency; a lost query counts as
#          slower than any answer), lost queries. Beside them the kernel floor: udp_floor.rs,
#          a std-only UDP server answering every datagram with a fixed 60-byte response, in
#          a namespace behind the same nftables DNAT of 127.0.0.11:53 as Plexus's sandboxes.
#   sat    dnsperf -q 100 for S s, the same names: queries per second.
#   fwd    dnsperf -q 100 for S s, names an upstream dnsmasq answers (N.rREP.fwd.test, TTL
#          600), from a sandbox/container whose --dns is that dnsmasq: Plexus through its cache
#          (each name's first query misses, the rest hit; new names each rep), Docker
#          forwarding every query (it has no cache). The upstream runs in a namespace of its
#          own on the same network (a Plexus sandbox, a Docker container): reachable from
#          Plexus's resolver (in plexusd's namespace) and from dockerd's forwarder (which
#          dials from the asking container's namespace) with no route or rule added.
#
# Usage: bench/dns/run.sh [--quick] [--reps N] [--secs S] [--qps Q] [--profile] [--keep-data]
#   default: 3 reps of 10 s runs (about 6 min); --quick: 1 rep of 5 s runs (about 1.5 min)
#   --profile: after the reps, where the resolver's time goes at the fixed rate: context
#   switches per query (resolver and floor, from /proc), syscalls per query (perf stat)
#   and the hottest symbols (perf record), from extra Plexus runs that the figures leave out
# Needs root. Installs the peers and tools from Debian's packages if missing; starts dockerd
# like ../shared/anchors/00_setup.sh does if it is not running (and stops it at the end), and
# imports a busybox image as bb:latest if there is none (removed again at the end).
# plexusd runs from $CARGO_TARGET_DIR (default: the repository's own target/), built here, with
# temp state/run dirs, its own socket, -b none and --dns-resolv-conf pointing at a file that
# names nothing reachable, inside a network namespace the bench makes; netavark (and so
# aardvark-dns) runs inside another. No traffic leaves the machine: every address queried is
# in a namespace made here or by dockerd.
# Everything made here is named plxb-* (or lives under a mktemp dir) and is removed on exit,
# also on failure; the resolver process, which outlives plexusd by design, is killed too.
# Last line: headline figures as key=value pairs.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$SECONDS

REPS=3; SECS=10; QPS=20000; KEEP=0; NFWD=1000; PROFILE=0
while (($#)); do
  case "$1" in
    --quick) REPS=1; SECS=5 ;;
    --reps) REPS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --qps) QPS=$2; shift ;;
    --keep-data) KEEP=1 ;;
    --profile) PROFILE=1 ;;
    -h|--help) sed -n 2,37p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxb-dns.XXXXXX)
D=$TMP/data; mkdir -p "$D"
NETAVARK=/usr/lib/podman/netavark
AARDVARK=/usr/lib/podman/aardvark-dns
IMG=bb:latest
NSB=10                       # sandboxes/containers/namespaces per server
PNET=10.241.0; DNET=10.240.0; ANET=10.242.0   # the three networks (/24 each)
UPIP=250                     # the upstream dnsmasq's host number on the Plexus and Docker networks
FWD_ANSWER=198.51.100.7      # what dnsmasq answers for *.fwd.test (never contacted)
HZ=$(getconf CLK_TCK)
log() { echo "[$(date +%T)] $*" >&2; }

# ---------- cleanup (trap) ----------
PLEXUSD_PID=""; RESOLVER_PID=""; DOCKERD_STARTED=0; DOCKERD_PID=""; IMG_IMPORTED=0; KILL_PIDS=()
NV_SET=()
PX() { PLEXUS_HOST="unix://$TMP/plexus.sock" "$CARGO_TARGET_DIR/release/plexus" "$@"; }
NV() { nsenter --net=/run/netns/plxb-nvh "$NETAVARK" --config "$TMP/nvcfg" -a "$AARDVARK" "$@"; }
cleanup() {
  set +e
  log "cleanup"
  for p in "${KILL_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${KILL_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n $PLEXUSD_PID ]] && kill -0 "$PLEXUSD_PID" 2>/dev/null; then
    sbs=$(PX sandbox ls -q 2>/dev/null)
    [[ -n $sbs ]] && PX sandbox rm $sbs >/dev/null 2>&1
    nets=$(PX network ls --format '{{.Name}}' 2>/dev/null | grep '^plxb-')
    [[ -n $nets ]] && PX network rm $nets >/dev/null 2>&1
    kill "$PLEXUSD_PID"; for _ in $(seq 100); do kill -0 "$PLEXUSD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PLEXUSD_PID" 2>/dev/null; wait "$PLEXUSD_PID" 2>/dev/null
  fi
  # the resolver outlives plexusd by design: its pid file, or the one noted at start
  [[ -f $TMP/run/dns/resolver.pid ]] && RESOLVER_PID=$(cat "$TMP/run/dns/resolver.pid")
  if [[ -n $RESOLVER_PID ]] && grep -q -- "$TMP/run" "/proc/$RESOLVER_PID/cmdline" 2>/dev/null; then
    kill "$RESOLVER_PID"; for _ in $(seq 50); do kill -0 "$RESOLVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$RESOLVER_PID" 2>/dev/null
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
  for i in "${NV_SET[@]}"; do NV teardown "/run/netns/plxb-nv$i" < "$TMP/nvopts/$i.json" >/dev/null 2>&1; done
  if [[ -f $TMP/nvcfg/aardvark-dns/aardvark.pid ]]; then
    a=$(cat "$TMP/nvcfg/aardvark-dns/aardvark.pid")
    [[ $(cat "/proc/$a/comm" 2>/dev/null) == aardvark-dns ]] && kill "$a" 2>/dev/null
  fi
  # every namespace the bench made (plexus host, netavark host and its containers, floor)
  for n in $(ip netns list | awk '{print $1}' | grep '^plxb-'); do ip netns del "$n"; done
  if [[ $KEEP == 1 ]]; then log "raw data kept in $D"; rm -rf "$TMP/state" "$TMP/run" "$TMP/nvcfg"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "!! $*" >&2; exit 1; }

# ---------- setup ----------
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io netavark aardvark-dns iptables dnsperf dnsmasq-base busybox-static nftables python3; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
command -v rustc >/dev/null || die "rustc is needed to build bench/dns/udp_floor.rs"

log "building plexusd + plexus (release) into $CARGO_TARGET_DIR, and the UDP floor server"
(cd "$ROOT" && ./scripts/build -q) || die "build failed"
FLOOR_BIN=$TMP/udp-floor
rustc -O --edition 2021 -o "$FLOOR_BIN" "$HERE/udp_floor.rs" || die "building udp_floor.rs failed"

if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null; then
  log "starting dockerd (as ../shared/anchors/00_setup.sh: dockerd --iptables=true)"
  setsid dockerd --iptables=true >"$TMP/dockerd.log" 2>&1 &
  DOCKERD_PID=$!; DOCKERD_STARTED=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker info >/dev/null 2>&1 || { [[ -f $TMP/dockerd.log ]] && tail -5 "$TMP/dockerd.log" >&2; die "dockerd is not running and could not be started"; }
DOCKERD_PID=$(pgrep -xo dockerd) || die "no dockerd process"
if ! docker image inspect "$IMG" >/dev/null 2>&1; then
  r=$(mktemp -d); mkdir -p "$r/bin"; cp /bin/busybox "$r/bin/"
  for c in sh sleep nslookup; do ln -s busybox "$r/bin/$c"; done
  tar -C "$r" -c . | docker import - "$IMG" >/dev/null && IMG_IMPORTED=1; rm -rf "$r"
fi

# ---------- Plexus: its own "host" namespace, temp dirs, own socket ----------
echo "nameserver 127.0.0.1" > "$TMP/resolv.conf"   # the host's upstreams for Plexus: nothing listens there
ip netns add plxb-host; ip -n plxb-host link set lo up
log "starting plexusd (state $TMP/state, run $TMP/run, socket $TMP/plexus.sock, in netns plxb-host)"
nsenter --net=/run/netns/plxb-host "$CARGO_TARGET_DIR/release/plexusd" --state-dir "$TMP/state" --run-dir "$TMP/run" \
  -H "unix://$TMP/plexus.sock" -b none --dns-resolv-conf "$TMP/resolv.conf" </dev/null >/dev/null 2>"$TMP/plexusd.log" &
PLEXUSD_PID=$!
for _ in $(seq 200); do PX network ls >/dev/null 2>&1 && break; sleep 0.1; done
PX network ls >/dev/null 2>&1 || { tail "$TMP/plexusd.log" >&2; die "plexusd did not start"; }
RESOLVER_PID=$(cat "$TMP/run/dns/resolver.pid" 2>/dev/null) || die "no $TMP/run/dns/resolver.pid"
PX network create --subnet $PNET.0/24 plxb-dns >/dev/null || die "plexus network create"
for i in $(seq 1 $NSB); do PX sandbox create plxb-p$i --network plxb-dns >/dev/null || die "plexus sandbox create plxb-p$i"; done
PX sandbox create plxb-pup --network plxb-dns --ip $PNET.$UPIP >/dev/null || die "plexus upstream sandbox"
PX sandbox create plxb-pfwd --network plxb-dns --dns $PNET.$UPIP >/dev/null || die "plexus forwarding sandbox"
pns() { echo "$TMP/run/netns/$1"; }
[[ -e $(pns plxb-p1) ]] || die "no namespace at $(pns plxb-p1)"
# the resolver's counters, over its control socket
rstats() {
  python3 - "$TMP/run/dns/control.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b'{"op":"stats"}\n'); buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(65536)
    if not c: break
    buf += c
st = json.loads(buf).get("stats") or {}
print(" ".join(f"{k}={v}" for k, v in sorted(st.items())))
EOF
}
rstat() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k{print $2}'; }

# ---------- Docker: a user network and containers ----------
log "docker: network plxb-dns ($DNET.0/24) + $NSB containers, an upstream and a forwarding one"
docker network create --subnet $DNET.0/24 plxb-dns >/dev/null || die "docker network create"
for i in $(seq 1 $NSB); do
  docker run -d --label plxb-bench=1 --name plxb-d$i --network plxb-dns "$IMG" sleep 1000000 >/dev/null || die "docker run plxb-d$i"
done
docker run -d --label plxb-bench=1 --name plxb-dup --network plxb-dns --ip $DNET.$UPIP "$IMG" sleep 1000000 >/dev/null || die "docker upstream"
docker run -d --label plxb-bench=1 --name plxb-dfwd --network plxb-dns --dns $DNET.$UPIP "$IMG" sleep 1000000 >/dev/null || die "docker forwarding container"
dpid() { docker inspect -f '{{.State.Pid}}' "$1"; }

# ---------- netavark + aardvark-dns: their own "host" namespace ----------
log "netavark: network plxb-dns ($ANET.0/24, dns_enabled) + $NSB namespaces"
ip netns add plxb-nvh; ip -n plxb-nvh link set lo up
mkdir -p "$TMP/nvcfg" "$TMP/nvopts"
export NETAVARK_FW=iptables
for i in $(seq 1 $NSB); do
  python3 "$HERE/nvopts.py" "$i" plxb-dns plxb-nv0 $ANET > "$TMP/nvopts/$i.json"
  ip netns add plxb-nv$i
  NV setup /run/netns/plxb-nv$i < "$TMP/nvopts/$i.json" >/dev/null 2>"$TMP/nv.err" || { cat "$TMP/nv.err" >&2; die "netavark setup $i"; }
  NV_SET+=("$i")
done
for _ in $(seq 50); do [[ -s $TMP/nvcfg/aardvark-dns/aardvark.pid ]] && break; sleep 0.1; done
AARDVARK_PID=$(cat "$TMP/nvcfg/aardvark-dns/aardvark.pid" 2>/dev/null)
[[ $(cat "/proc/$AARDVARK_PID/comm" 2>/dev/null) == aardvark-dns ]] || die "aardvark-dns is not running"
KILL_PIDS+=("$AARDVARK_PID")

# ---------- the upstream dnsmasq (one per side, in its own namespace on that side's network) ----------
dnsmasq_in() { # NAME ADDR NSENTER-ARGS...: dnsmasq answering *.fwd.test, nothing else, in the foreground
  local name=$1 addr=$2; shift 2
  nsenter "$@" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
    --bind-interfaces --listen-address="$addr" --port=53 --address=/fwd.test/$FWD_ANSWER --address=/fwd.test/2001:db8::7 --local-ttl=600 \
    --cache-size=0 --pid-file="$TMP/dnsmasq-$name.pid" --log-facility="$TMP/dnsmasq-$name.log" \
    </dev/null >/dev/null 2>&1 &
  KILL_PIDS+=($!)
}
dnsmasq_in plexus $PNET.$UPIP --net="$(pns plxb-pup)"
dnsmasq_in docker $DNET.$UPIP -t "$(dpid plxb-dup)" -n

# ---------- the kernel floor: a namespace with the same DNAT as a Plexus sandbox ----------
ip netns add plxb-floor; ip -n plxb-floor link set lo up
ip netns exec plxb-floor nft -f - <<'EOF' || die "floor nftables table"
table ip plxb-floor {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:5353
  }
}
EOF
ip netns exec plxb-floor "$FLOOR_BIN" 127.0.0.11:5353 & FLOOR_PID=$!
KILL_PIDS+=("$FLOOR_PID")

# ---------- query files ----------
for i in $(seq 2 $NSB); do echo "plxb-p$i A"; done > "$TMP/q_plexus.txt"
for i in $(seq 2 $NSB); do echo "plxb-d$i A"; done > "$TMP/q_docker.txt"
for i in $(seq 2 $NSB); do echo "plxb-a$i A"; done > "$TMP/q_aardvark.txt"
cp "$TMP/q_plexus.txt" "$TMP/q_floor.txt"
fwdq() { for i in $(seq 1 $NFWD); do echo "n$i.r$1.fwd.test A"; done > "$TMP/q_fwd_r$1.txt"; }

# Where each server is asked from, at which address, and whose CPU is counted.
sleep 1
DPID1=$(dpid plxb-d1); DFWDPID=$(dpid plxb-dfwd)
declare -A NSX SRV QF CPUPID
NSX[plexus]="nsenter --net=$(pns plxb-p1)";       SRV[plexus]=127.0.0.11;  CPUPID[plexus]=$RESOLVER_PID
NSX[docker]="nsenter -t $DPID1 -n";                SRV[docker]=127.0.0.11;  CPUPID[docker]=$DOCKERD_PID
NSX[aardvark]="nsenter --net=/run/netns/plxb-nv1"; SRV[aardvark]=$ANET.1;   CPUPID[aardvark]=$AARDVARK_PID
NSX[floor]="nsenter --net=/run/netns/plxb-floor";  SRV[floor]=127.0.0.11;   CPUPID[floor]=$FLOOR_PID
NSX[plexus_fwd]="nsenter --net=$(pns plxb-pfwd)"; SRV[plexus_fwd]=127.0.0.11; CPUPID[plexus_fwd]=$RESOLVER_PID
NSX[docker_fwd]="nsenter -t $DFWDPID -n";          SRV[docker_fwd]=127.0.0.11; CPUPID[docker_fwd]=$DOCKERD_PID

# ---------- checks: every server answers what it is asked, and the forward path works ----------
lookup() { # KIND NAME: the IPv4 address busybox nslookup gets for NAME from the server
  ${NSX[$1]} busybox nslookup -type=a "$2" "${SRV[$1]}" 2>&1 | awk '/^Name:/ {n = 1} n && /^Address/ {print $NF; exit}'
}
fwdq 0
check() { # KIND NAME EXPECTED
  local got; got=$(lookup "$1" "$2")
  if [[ $got == "$3" ]]; then echo "check: $1: $2 -> $got ok"; else echo "check: $1: $2 -> '${got}' (expected $3) FAILED"; CHECKS_FAILED=1; fi
}
CHECKS_FAILED=0
P2=$(nsenter --net="$(pns plxb-p2)" ip -4 -o addr show | awk '$2!="lo"{print $4}' | cut -d/ -f1 | head -1)
check plexus plxb-p2 "$P2"
check docker plxb-d2 "$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' plxb-d2)"
check aardvark plxb-a2 "$ANET.12"
check plexus_fwd n1.r0.fwd.test $FWD_ANSWER
check docker_fwd n1.r0.fwd.test $FWD_ANSWER
# the floor: dnsperf gets its 60-byte answers through the DNAT
${NSX[floor]} dnsperf -s 127.0.0.11 -d "$TMP/q_floor.txt" -n 1 -t 1 > "$TMP/floor_check.txt" 2>&1
if grep -q 'Queries completed: *9 ' "$TMP/floor_check.txt"; then echo "check: floor: answers through the 127.0.0.11 DNAT ok"
else echo "check: floor: FAILED: $(grep -E 'completed|lost' "$TMP/floor_check.txt" | tr -s ' ' | tr '\n' ' ')"; CHECKS_FAILED=1; fi
((CHECKS_FAILED)) && die "a check failed: nothing measured"

echo "== Plexus DNS benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release build; docker: $(docker version --format 'server {{.Server.Version}}'); aardvark-dns: $($AARDVARK --version 2>/dev/null | awk '{print $2}'); netavark: $($NETAVARK --version 2>/dev/null | awk '{print $2}'); $(dnsperf -h 2>&1 | grep -m1 Version | sed 's/Version/dnsperf/')"
echo "reps=$REPS secs=$SECS fixed_rate=$QPS qps; $((NSB - 1)) local names per server; $NFWD forwarded names per rep; CPU: utime+stime of resolver pid $RESOLVER_PID, dockerd pid $DOCKERD_PID, aardvark-dns pid $AARDVARK_PID, floor pid $FLOOR_PID (USER_HZ=$HZ)"
echo "resolver before: $(rstats)"

# ---------- measuring ----------
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }   # utime stime, all threads, dead ones included
# run KIND MODE REP QFILE: one dnsperf run; appends to $D/res.txt:
#   kind mode rep qps completed lost sent utime_ticks stime_ticks cpu_us_per_q user_us_per_q p50_ms p99_ms rcodes
run() {
  local kind=$1 mode=$2 rep=$3 qf=$4 pid=${CPUPID[$1]} out="$D/dnsperf_$1_$2_$3.txt" opts
  case $mode in
    fixed) opts="-Q $QPS -q 100 -v" ;;
    *) opts="-q 100" ;;
  esac
  sleep 1   # quiet: the previous server's tail is not on the machine during this one
  kill -0 "$pid" 2>/dev/null || { log "$kind: server pid $pid is gone"; return 1; }
  local u0 s0 u1 s1; read -r u0 s0 < <(ticks "$pid")
  ${NSX[$kind]} dnsperf -s "${SRV[$kind]}" -d "$qf" -l "$SECS" -t 2 $opts > "$out" 2>&1
  read -r u1 s1 < <(ticks "$pid")
  local lat=""
  if [[ $mode == fixed ]]; then
    # "> NOERROR name A 0.000123" per answer; "> T ..." for a query that timed out
    awk '$1==">" && NF==5 && $2!="T" {print $5*1000}' "$out" | sort -g > "$TMP/lat.txt"
    lat=$(awk -v lost="$(awk '/Queries lost/{print $3}' "$out")" '{v[NR]=$1} END{
      n=NR+lost; if (n==0) {print "NA NA"; exit}
      i50=int(0.50*n+0.999999); i99=int(0.99*n+0.999999)
      printf "%s %s\n", (i50<=NR ? sprintf("%.3f",v[i50]) : "inf"), (i99<=NR ? sprintf("%.3f",v[i99]) : "inf")}' "$TMP/lat.txt")
    # keep the summary, not the 100k+ answer lines
    grep -v '^> ' "$out" > "$out.tmp" && mv "$out.tmp" "$out"
  fi
  awk -v kind="$kind" -v mode="$mode" -v rep="$rep" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$HZ" -v lat="${lat:-NA NA}" '
    /Queries sent:/ {sent=$3} /Queries completed:/ {c=$3} /Queries lost:/ {l=$3} /Queries per second:/ {q=$4}
    /Response codes:/ {sub(/.*Response codes: */, ""); gsub(/ \([0-9.]+%\)/, ""); gsub(/, /, ","); gsub(/ /, "="); rc=$0}
    END {printf "%s %s %s %.0f %d %d %d %d %d %s %s %s %s\n", kind, mode, rep, q, c, l, sent, u, s,
         (c > 0 ? sprintf("%.2f", (u + s) * 1e6 / hz / c) : "NA"), (c > 0 ? sprintf("%.2f", u * 1e6 / hz / c) : "NA"),
         lat, (rc == "" ? "none" : rc)}' "$out" >> "$D/res.txt"
  log "  $(tail -1 "$D/res.txt")"
}

rot() { # REP WORDS...: WORDS rotated left by REP-1
  local r=$1; shift; local a=("$@") n=$#; local i
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(( (i + r - 1) % n ))]}"; done
}
echo "kind mode rep qps completed lost sent utime_ticks stime_ticks cpu_us_per_q user_us_per_q p50_ms p99_ms rcodes" > "$D/res.txt"
for rep in $(seq 1 "$REPS"); do
  log "rep $rep/$REPS: fixed rate $QPS qps"
  for k in $(rot "$rep" plexus docker aardvark floor); do run "$k" fixed "$rep" "$TMP/q_$k.txt"; done
  log "rep $rep/$REPS: saturating (-q 100)"
  for k in $(rot "$rep" plexus docker aardvark); do run "$k" sat "$rep" "$TMP/q_$k.txt"; done
  log "rep $rep/$REPS: forwarded names (-q 100): plexus through its cache, docker forwarding"
  fwdq "$rep"
  for k in $(rot "$rep" plexus_fwd docker_fwd); do
    [[ $k == plexus_fwd ]] && st0=$(rstats)
    run "$k" fwd "$rep" "$TMP/q_fwd_r$rep.txt"
    # what went upstream and what came from the cache (the resolver's own counters)
    [[ $k == plexus_fwd ]] && st1=$(rstats) &&
      echo "$rep $(($(rstat "$st1" forwarded) - $(rstat "$st0" forwarded))) $(($(rstat "$st1" cache_hits) - $(rstat "$st0" cache_hits)))" >> "$D/plexus_fwd_cache.txt"
  done
done
echo "resolver after:  $(rstats)"

# ---------- --profile: where the resolver's time goes (extra runs, not in the figures) ----------
csw() { # PID: voluntary and involuntary context switches of all its live threads
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v+0, n+0}'
}
if ((PROFILE)); then
  log "profile: context switches and syscalls per query at $QPS qps (plexus, floor)"
  echo "-- profile (extra runs at $QPS qps for ${SECS}s each; not in the figures)"
  have_perf=0; command -v perf >/dev/null && have_perf=1
  EV=context-switches,cpu-migrations
  for sc in recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg epoll_wait epoll_pwait futex read write sched_yield; do
    EV+=",syscalls:sys_enter_$sc"
  done
  for k in plexus floor; do
    pre=(); ((have_perf)) && pre=(perf stat -x, -o "$D/profile_stat_$k.txt" -e "$EV" -p "${CPUPID[$k]}" --)
    read -r v0 n0 < <(csw "${CPUPID[$k]}"); read -r u0 s0 < <(ticks "${CPUPID[$k]}")
    "${pre[@]}" ${NSX[$k]} dnsperf -s "${SRV[$k]}" -d "$TMP/q_$k.txt" -l "$SECS" -t 2 -Q "$QPS" > "$D/profile_$k.txt" 2>&1
    read -r v1 n1 < <(csw "${CPUPID[$k]}"); read -r u1 s1 < <(ticks "${CPUPID[$k]}")
    c=$(awk '/Queries completed:/{print $3}' "$D/profile_$k.txt")
    awk -v k="$k" -v c="$c" -v v=$((v1 - v0)) -v n=$((n1 - n0)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$HZ" 'BEGIN{
      printf "  %-7s %d queries: %.2f voluntary + %.2f involuntary context switches per query; CPU %.2f us/query (user %.2f, system %.2f)\n",
        k, c, v / c, n / c, (u + s) * 1e6 / hz / c, u * 1e6 / hz / c, s * 1e6 / hz / c}'
    # perf stat -x,: count,unit,event,...
    ((have_perf)) && awk -F, -v c="$c" '$1 ~ /^[0-9]+$/ && $1 >= c / 100 {e = $3; sub(/^syscalls:sys_enter_/, "", e); printf "%s %.2f, ", e, $1 / c}' \
      "$D/profile_stat_$k.txt" | sed 's/, $//; s/^/          per query (perf stat): /; s/$/\n/'
  done
  if ((have_perf)); then
    log "profile: hottest symbols (perf record on the resolver)"
    ${NSX[plexus]} dnsperf -s 127.0.0.11 -d "$TMP/q_plexus.txt" -l "$SECS" -t 2 -Q "$QPS" > "$D/profile_record_dnsperf.txt" 2>&1 & dp=$!
    sleep 1
    timeout -s INT $((SECS > 4 ? SECS - 3 : 2)) perf record -F 999 -p "$RESOLVER_PID" -o "$TMP/perf.data" >/dev/null 2>&1
    wait "$dp"
    echo "  share of the resolver's samples by object, then the 15 hottest symbols:"
    perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null | awk '/^ +[0-9.]+%/{printf "    %s %s\n", $1, $2}' | head -5
    perf report -i "$TMP/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | awk '/^ +[0-9.]+%/' | head -15 | cut -c1-150 | sed 's/^ */    /'
  else
    echo "  (perf is not installed: no syscall counts or symbols)"
  fi
fi
if grep -qiE 'warn|error' "$TMP/run/dns/resolver.log" 2>/dev/null; then
  echo "resolver log: $(grep -ciE 'warn|error' "$TMP/run/dns/resolver.log") warning/error lines, last: $(grep -iE 'warn|error' "$TMP/run/dns/resolver.log" | tail -1 | cut -c1-200)"
fi
echo "elapsed: $((SECONDS - T0)) s, load now $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 "$HERE/report.py" "$D" "$QPS"
