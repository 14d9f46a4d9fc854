#!/usr/bin/env bash
# macvlan benchmark (issue 21), Plexus against Docker 20.10's macvlan driver and the bare
# kernel, in ONE run:
#
#   1. attach / detach of an existing sandbox to a macvlan network through the CLI:
#      `plexus network connect|disconnect` vs `docker network connect|disconnect`, alternating
#      (Plexus, Docker, Docker, Plexus, ...), wall clock around each command, medians;
#      and `plexus network ls -q` (the CLI's start and one small request) beside them;
#   1b. the kernel's floor for the same device work (`ip -batch`, per device), and the
#       disk's flush (fdatasync) on the state dir's filesystem;
#   2. TCP throughput (iperf3, one stream) between two sandboxes of a Plexus macvlan network
#      in bridge mode against two macvlan devices made by hand (`ip link add … type macvlan
#      mode bridge`) on a parent of the same kind, alternating, medians.
#
# Parents: Plexus's network and the bare pair each get a veth end in a namespace of their
# own as parent (the other end in a "LAN" namespace with a bridge); Docker's parent is a veth
# end in dockerd's namespace (the machine's), named plxm-dp0, deleted at the end. No traffic
# leaves the machine; eth0 is not touched.
#
# Usage: bench/macvlan/run.sh [--quick] [--reps N] [--iperf-secs S]
#   default: 30 attach/detach reps, iperf3 5 s x 6 each side; --quick: 10 reps, 3 s x 2
# Needs root. Installs docker.io, iperf3, busybox-static if missing; starts dockerd like
# ../shared/anchors/00_setup.sh if it is not running (and stops it at the end).
# Everything made here is named plxm-* and removed on exit, also on failure.
# Last line: attach_ms= docker_attach_ms= speedup= detach_ms= docker_detach_ms=
#   detach_speedup= cli_ms= flush_ms= kernel_attach_ms= kernel_delete_ms= tput_gbps=
#   bare_tput_gbps= tput_ratio= targets=PASS|FAIL
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REPS=30; IPERF_SECS=5; IPERF_REPS=6
# Pause before each timed command: the previous command's background work (either side's:
# deferred link deletion, dockerd's clean-up) is over before the next clock starts.
SETTLE=0.3
while (($#)); do
  case "$1" in
    --quick) REPS=10; IPERF_SECS=3; IPERF_REPS=2 ;;
    --reps) REPS=$2; shift ;;
    --iperf-secs) IPERF_SECS=$2; shift ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/plxm.XXXXXX)
D=$TMP/data; mkdir -p "$D"
IMG=plxm-bb:latest
. "$ROOT/bench/lib.sh"
PX() { PLEXUS_HOST="unix://$TMP/plexus.sock" "$CARGO_TARGET_DIR/release/plexus" "$@"; }

SRV=()
cleanup() {
  set +e
  log "cleanup"
  for p in "${SRV[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [[ -n $PLEXUSD_PID ]] && kill -0 "$PLEXUSD_PID" 2>/dev/null; then
    sbs=$(PX sandbox ls -q 2>/dev/null); [[ -n $sbs ]] && PX sandbox rm $sbs >/dev/null 2>&1
    PX network rm plxm-mv >/dev/null 2>&1
  fi
  stop_plexusd
  if docker info >/dev/null 2>&1; then
    docker rm -f plxm-dsb >/dev/null 2>&1
    docker network rm plxm-dmv >/dev/null 2>&1
    [[ $IMG_IMPORTED == 1 ]] && docker image rm "$IMG" >/dev/null 2>&1
  fi
  stop_dockerd
  ip link del plxm-dp0 2>/dev/null
  for n in $(ip netns list | awk '{print $1}' | grep '^plxm-'); do ip netns del "$n"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- setup ----------
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io iperf3 busybox-static; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then log "apt-get install ${need[*]}"; apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
log "building plexusd + plexus (release)"
(cd "$ROOT" && ./scripts/build -q) || { echo "build failed" >&2; exit 1; }

DOCKER=1
if ! start_dockerd; then
  DOCKER=0; echo "!! dockerd cannot run here: Docker is NOT measured (docker=unavailable)"
else
  docker_busybox "$IMG" sleep
fi

# The LAN: a bridge in plxm-lan; each parent is a veth end plugged into it.
ip netns add plxm-lan; ip -n plxm-lan link add br0 type bridge; ip -n plxm-lan link set br0 up
plug() { # NETNS IFNAME PEER: IFNAME (in NETNS, or the machine's namespace for "-") on the LAN
  local ns=$1 ifn=$2 peer=$3
  if [[ $ns == - ]]; then ip link add "$ifn" type veth peer name "$peer"; ip link set "$ifn" up
  else ip -n "$ns" link add "$ifn" type veth peer name "$peer"; ip -n "$ns" link set "$ifn" up; ip -n "$ns" link set "$peer" netns plxm-lan; fi
  [[ $ns == - ]] && ip link set "$peer" netns plxm-lan
  ip -n plxm-lan link set "$peer" master br0 up
}
ip netns add plxm-host; ip -n plxm-host link set lo up
plug plxm-host lan0 l-px
ip netns add plxm-bare; plug plxm-bare lan0 l-bare
((DOCKER)) && plug - plxm-dp0 l-dk

start_plexusd plxm-host --bridge none || exit 1
PX network create -d macvlan -o parent=lan0 --subnet 10.238.0.0/24 --gateway 10.238.0.1 plxm-mv >/dev/null || exit 1
PX sandbox create plxm-sb >/dev/null || exit 1
if ((DOCKER)); then
  docker network create -d macvlan -o parent=plxm-dp0 --subnet 10.237.0.0/24 --gateway 10.237.0.1 plxm-dmv >/dev/null || exit 1
  docker run -d --name plxm-dsb "$IMG" sleep 100000 >/dev/null || exit 1
fi

echo "== macvlan benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) =="
echo "plexus: $(git -C "$ROOT" rev-parse --short HEAD) release; docker: $( ((DOCKER)) && docker version --format '{{.Server.Version}}' || echo unavailable)"

# ---------- 1. attach / detach ----------
log "1. attach/detach x$REPS (alternating)"
pv() { tm cli_plexus.txt PX network ls -q; }
pa() { tm attach_plexus.txt PX network connect plxm-mv plxm-sb; }
pd() { tm detach_plexus.txt PX network disconnect plxm-mv plxm-sb; }
da() { ((DOCKER)) && tm attach_docker.txt docker network connect plxm-dmv plxm-dsb; }
dd() { ((DOCKER)) && tm detach_docker.txt docker network disconnect plxm-dmv plxm-dsb; }
for r in $(seq 1 "$REPS"); do
  if ((r % 2)); then pa; da; pd; dd; else da; pa; dd; pd; fi
  pv
done
# sanity: an attached Plexus sandbox reaches another on the LAN side of the network
PX network connect plxm-mv plxm-sb >/dev/null
PX sandbox create plxm-peer --network plxm-mv >/dev/null
peer_ip=$(PX sandbox inspect plxm-peer | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Endpoints"][0]["IPv4Address"].split("/")[0])')
sb_ns=$(PX sandbox inspect plxm-sb | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["NetNs"])')
peer_ns=$(PX sandbox inspect plxm-peer | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["NetNs"])')
if nsenter --net="$sb_ns" busybox ping -c1 -W2 "$peer_ip" >/dev/null 2>&1; then echo "check: plexus macvlan sandbox -> peer $peer_ip ok"; else echo "check: ping $peer_ip FAILED"; fi

# ---------- 1b. the kernel's floor ----------
# The device work an attach and a detach ask of the kernel, without any program around it:
# REPS macvlan devices made straight into a namespace, addressed and brought up, then taken
# down and deleted, each step one `ip -batch` (one process for all REPS), per device.
log "1b. kernel floor x$REPS: macvlan create+address+up, down, delete"
ip netns add plxm-fl
: >"$TMP/mk.b"; : >"$TMP/up.b"; : >"$TMP/down.b"; : >"$TMP/del.b"
for i in $(seq 1 "$REPS"); do
  echo "link add plxf$i link lan0 netns plxm-fl type macvlan mode bridge" >>"$TMP/mk.b"
  printf 'address add 10.239.%d.%d/16 dev plxf%d\nlink set plxf%d up\n' $((i / 200)) $((i % 200 + 2)) "$i" "$i" >>"$TMP/up.b"
  echo "link set plxf$i down" >>"$TMP/down.b"
  echo "link del plxf$i" >>"$TMP/del.b"
done
batch() { # NETNS FILE: ms per device for the batch
  local t0=$EPOCHREALTIME; ip -n "$1" -batch "$2" || log "FAILED: ip -n $1 -batch $2"; local t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" -v n="$REPS" 'BEGIN{printf "%.3f\n",(b-a)*1000/n}'
}
sleep "$SETTLE"; mk=$(batch plxm-host "$TMP/mk.b"); up=$(batch plxm-fl "$TMP/up.b")
awk -v a="$mk" -v b="$up" 'BEGIN{printf "%.3f\n",a+b}' >"$D/floor_attach.txt"
sleep "$SETTLE"; batch plxm-fl "$TMP/down.b" >"$D/floor_down.txt"
sleep "$SETTLE"; batch plxm-fl "$TMP/del.b" >"$D/floor_delete.txt"
ip netns del plxm-fl
# The disk's flush, on the state dir's filesystem: a connect is on disk before it returns.
python3 - "$TMP" "$REPS" >"$D/floor_flush.txt" <<'PY'
import os, sys, time, statistics as st
path = os.path.join(sys.argv[1], "flush-probe"); fd = os.open(path, os.O_RDWR | os.O_CREAT)
v = []
for i in range(int(sys.argv[2])):
    os.pwrite(fd, b"x" * 49152, (i % 8) * 49152)
    t = time.perf_counter(); os.fdatasync(fd); v.append((time.perf_counter() - t) * 1000)
    time.sleep(0.05)
os.close(fd); os.unlink(path)
print("%.3f" % st.median(v))
PY

# ---------- 2. throughput ----------
log "2. iperf3 ${IPERF_SECS}s x$IPERF_REPS each: Plexus macvlan pair vs bare macvlan pair"
ip netns add plxm-b1; ip netns add plxm-b2
for i in 1 2; do
  ip -n plxm-bare link add mv$i link lan0 type macvlan mode bridge
  ip -n plxm-bare link set mv$i netns plxm-b$i
  ip -n plxm-b$i addr add 10.236.0.1$i/24 dev mv$i; ip -n plxm-b$i link set mv$i up; ip -n plxm-b$i link set lo up
done
nsenter --net="$peer_ns" iperf3 -s -p 5201 >/dev/null 2>&1 & SRV+=($!)
ip netns exec plxm-b2 iperf3 -s -p 5201 >/dev/null 2>&1 & SRV+=($!)
sleep 1
gbps() { python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
for r in $(seq 1 "$IPERF_REPS"); do
  nsenter --net="$sb_ns" iperf3 -c "$peer_ip" -p 5201 -t "$IPERF_SECS" -J 2>/dev/null | gbps >> "$D/tput_plexus.txt"
  ip netns exec plxm-b1 iperf3 -c 10.236.0.12 -p 5201 -t "$IPERF_SECS" -J 2>/dev/null | gbps >> "$D/tput_bare.txt"
done

# ---------- report ----------
python3 - "$D" "$DOCKER" <<'EOF'
import statistics as st, sys, os
d, docker = sys.argv[1], sys.argv[2] == "1"
def vals(f):
    p = os.path.join(d, f)
    return [float(x) for x in open(p).read().split()] if os.path.exists(p) else []
def med(f):
    v = vals(f)
    return st.median(v) if v else None
def fmt(x, n=2):
    return "NA" if x is None else f"{x:.{n}f}"
pa, pd, da, dd = med("attach_plexus.txt"), med("detach_plexus.txt"), med("attach_docker.txt"), med("detach_docker.txt")
tp, tb = med("tput_plexus.txt"), med("tput_bare.txt")
for label, f in [("plexus attach", "attach_plexus.txt"), ("docker attach", "attach_docker.txt"),
                 ("plexus detach", "detach_plexus.txt"), ("docker detach", "detach_docker.txt"),
                 ("plexus network ls -q (CLI + a request)", "cli_plexus.txt"),
                 ("kernel: create+address+up", "floor_attach.txt"), ("kernel: down", "floor_down.txt"),
                 ("kernel: delete (down link)", "floor_delete.txt"),
                 ("disk: fdatasync of 48 KiB", "floor_flush.txt"),
                 ("plexus macvlan tput Gbit/s", "tput_plexus.txt"), ("bare macvlan tput Gbit/s", "tput_bare.txt")]:
    v = sorted(vals(f))
    if v:
        print(f"  {label:<30} median {st.median(v):9.3f}  min {v[0]:9.3f}  max {v[-1]:9.3f}  n={len(v)}")
speed = da / pa if (pa and da) else None
dspeed = dd / pd if (pd and dd) else None
ratio = tp / tb if (tp and tb) else None
t1 = speed is not None and speed >= 10
t2 = ratio is not None and ratio >= 0.95
t3 = dspeed is not None and dspeed >= 10
fa, fdn, fdl = med("floor_attach.txt"), med("floor_down.txt"), med("floor_delete.txt")
fd = fdn + fdl if (fdn is not None and fdl is not None) else None
print("-- the kernel's floor (one ip -batch per step, per device)")
cv, ff = med("cli_plexus.txt"), med("floor_flush.txt")
print(f"  attach: kernel {fmt(fa)} ms of Plexus's {fmt(pa)}, Docker's {fmt(da)}; of Plexus's, "
      f"{fmt(cv)} ms are the CLI's start and a bare request (`plexus network ls -q`), and "
      f"{fmt(ff)} ms the disk's flush (the connect is on disk before it returns)")
print(f"  detach by deleting (down + delete): kernel {fmt(fd)} ms; Docker deletes in its detach "
      f"({fmt(dd)} ms), so 10x Docker ({fmt(dd / 10 if dd else None)} ms) is under that floor; "
      f"Plexus's detach ({fmt(pd)} ms) takes the device out of service running and deletes it afterwards")
print("-- targets (issue 21)")
print(f"  {'PASS' if t1 else 'FAIL'}  macvlan attach >= 10x faster than Docker's: {fmt(pa)} vs {fmt(da)} ms, {fmt(speed, 1)}x")
print(f"  {'PASS' if t3 else 'FAIL'}  macvlan detach >= 10x faster than Docker's: {fmt(pd)} vs {fmt(dd)} ms, {fmt(dspeed, 1)}x")
print(f"  {'PASS' if t2 else 'FAIL'}  throughput >= 0.95 of two bare macvlan devices: {fmt(tp, 3)} vs {fmt(tb, 3)} Gbit/s, {fmt(ratio, 3)}")
print(f"attach_ms={fmt(pa)} docker_attach_ms={fmt(da)} speedup={fmt(speed, 1)} detach_ms={fmt(pd)} "
      f"docker_detach_ms={fmt(dd)} detach_speedup={fmt(dspeed, 1)} cli_ms={fmt(cv)} flush_ms={fmt(ff)} "
      f"kernel_attach_ms={fmt(fa)} "
      f"kernel_delete_ms={fmt(fd)} tput_gbps={fmt(tp, 3)} "
      f"bare_tput_gbps={fmt(tb, 3)} tput_ratio={fmt(ratio, 3)} targets={'PASS' if t1 and t2 and t3 else 'FAIL'}")
EOF
