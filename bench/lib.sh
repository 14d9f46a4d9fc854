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

# start_dockerd_in NETNS: a dockerd of its own inside network namespace NETNS (entered with
# nsenter, so it shares this mount namespace), data and exec roots under $TMP/docker, its
# socket exported as DOCKER_HOST for the docker commands that follow. For runs where a
# network plugin must share dockerd's namespace (a plugin hands dockerd interfaces there).
# stop_dockerd stops it.
start_dockerd_in() {
  local ns=$1 r=$TMP/docker
  mkdir -p "$r"
  log "starting a dockerd of its own in netns $ns"
  setsid nsenter --net="/run/netns/$ns" dockerd --data-root "$r/data" --exec-root "$r/exec" \
    --pidfile "$r/dockerd.pid" -H "unix://$r/docker.sock" --iptables=true \
    >"$TMP/dockerd.log" 2>&1 &
  DOCKERD_PID=$!; DOCKERD_STARTED=1
  export DOCKER_HOST=unix://$r/docker.sock
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
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

# start_plexusd NETNS ARGS...: the release plexusd in network namespace NETNS (entered with
# nsenter, so it shares this mount namespace and sees the runtimes' namespace mounts), state
# and run dirs and socket under $TMP, ARGS added; sets PLEXUSD_PID and waits until it answers
# on $TMP/plexus.sock. Fails, showing its log, if it does not within 20 s.
PLEXUSD_PID=""
start_plexusd() {
  local ns=$1; shift
  log "starting plexusd in netns $ns"
  nsenter --net="/run/netns/$ns" "$CARGO_TARGET_DIR/release/plexusd" --state-dir "$TMP/state" \
    --run-dir "$TMP/run" -H "unix://$TMP/plexus.sock" "$@" </dev/null >/dev/null 2>"$TMP/plexusd.log" &
  PLEXUSD_PID=$!
  local px="$CARGO_TARGET_DIR/release/plexus"
  for _ in $(seq 200); do "$px" -H "unix://$TMP/plexus.sock" network ls >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "plexusd did not start:" >&2; tail "$TMP/plexusd.log" >&2; return 1
}

# stop_plexusd: stops the plexusd start_plexusd started (SIGTERM, then SIGKILL after 10 s)
# and its DNS resolver (which outlives plexusd by design), and lazily unmounts what they
# left mounted under $TMP (sandbox namespaces).
stop_plexusd() {
  if [[ -n $PLEXUSD_PID ]] && kill -0 "$PLEXUSD_PID" 2>/dev/null; then
    kill "$PLEXUSD_PID"
    for _ in $(seq 100); do kill -0 "$PLEXUSD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PLEXUSD_PID" 2>/dev/null; wait "$PLEXUSD_PID" 2>/dev/null
  fi
  if [[ -f $TMP/run/dns/resolver.pid ]]; then kill "$(cat "$TMP/run/dns/resolver.pid")" 2>/dev/null; fi
  local m
  for m in $(awk -v p="$TMP/" 'index($5,p)==1{print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
}
