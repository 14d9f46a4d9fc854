# Helpers shared by the benchmark scripts that drive a peer runtime. Source it after setting
# TMP (a scratch directory), D (where timings go) and SETTLE (seconds to wait before each
# timed command):  . "$ROOT/bench/lib.sh"

log() { echo "[$(date +%T)] $*" >&2; }

# tm FILE CMD...: waits SETTLE (so the previous command's background work is over), then
# appends CMD's wall-clock milliseconds to $D/FILE; says so and fails if CMD fails.
tm() {
  local f=$1; shift
  sleep "$SETTLE"
  local t0=$EPOCHREALTIME
  "$@" >/dev/null 2>"$TMP/last.err"; local rc=$?
  local t1=$EPOCHREALTIME
  if ((rc)); then log "FAILED ($rc): $* : $(tail -2 "$TMP/last.err")"; return $rc; fi
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n",(b-a)*1000}' >> "$D/$f"
}

# start_dockerd: starts dockerd as ../shared/anchors/00_setup.sh does (--iptables=true) unless
# one answers already; sets DOCKERD_STARTED=1 and DOCKERD_PID when it started one. Fails if
# no dockerd answers after 30 s.
DOCKERD_STARTED=0; DOCKERD_PID=""
start_dockerd() {
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (as ../shared/anchors/00_setup.sh: dockerd --iptables=true)"
    setsid dockerd --iptables=true >"$TMP/dockerd.log" 2>&1 &
    DOCKERD_PID=$!; DOCKERD_STARTED=1
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  docker info >/dev/null 2>&1
}

# stop_dockerd: stops the dockerd start_dockerd started, if it did.
stop_dockerd() {
  if [[ $DOCKERD_STARTED == 1 && -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
}

# busybox_rootfs DIR APPLET...: a root filesystem with /bin/busybox and the applets as links,
# for `docker import` / `podman import`.
busybox_rootfs() {
  local r=$1; shift
  mkdir -p "$r/bin"; cp /bin/busybox "$r/bin/"
  local a; for a in "$@"; do ln -sf busybox "$r/bin/$a"; done
}

# docker_busybox IMG APPLET...: imports a busybox image IMG into dockerd unless it has one;
# sets IMG_IMPORTED=1 when it made it (to remove it at the end).
IMG_IMPORTED=0
docker_busybox() {
  local img=$1; shift
  docker image inspect "$img" >/dev/null 2>&1 && return 0
  local r; r=$(mktemp -d)
  busybox_rootfs "$r" "$@"
  tar -C "$r" -c . | docker import - "$img" >/dev/null && IMG_IMPORTED=1
  rm -rf "$r"
}
