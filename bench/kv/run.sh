#!/usr/bin/env bash
# plexus-kv benchmark: put / get / atomic_put ops/s and p50/p99 with 1 and 64 concurrent clients
# for each backend (memory, redb, etcd, zk), etcd also straight through etcd-client for comparison.
# Starts its own etcd and ZooKeeper (temporary data dirs on disk, free loopback ports) and stops
# them on exit.
# The last line holds the headline figures as key=value pairs.
#
# Extra arguments go to the benchmark binary (e.g. --seconds 3, --only etcd).
# Another backend: start its server below and pass --url NAME=URL (see kv-bench.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -q -p plexus-kv --example kv-bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/kv-bench"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/plexus-kv-bench.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# A free loopback TCP port.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    while :; do
      p=$(shuf -i 20000-60000 -n 1)
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  fi
}

args=()

# etcd: a single member with default settings, data on disk (every write is fsynced).
if command -v etcd >/dev/null 2>&1; then
  client_port=$(free_port)
  peer_port=$(free_port)
  etcd --name kv-bench --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "kv-bench=http://127.0.0.1:$peer_port" \
    --logger zap --log-level error >"$tmp/etcd.log" 2>&1 &
  pids+=($!)
  args+=(--etcd "127.0.0.1:$client_port")
else
  echo "etcd not installed (apt-get install etcd-server): skipping the etcd backend" >&2
fi

# ZooKeeper: Debian's 3.8 standalone, default settings (data on disk, every write fsynced),
# TTL znodes enabled; run from its jars in the foreground like the test harness does.
if command -v java >/dev/null 2>&1 && [ -f /usr/share/java/zookeeper.jar ]; then
  zk_port=$(free_port)
  mkdir -p "$tmp/zk"
  printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n' \
    "$tmp/zk" "$zk_port" >"$tmp/zoo.cfg"
  zk_cp=""
  for jar in zookeeper zookeeper-jute slf4j-api slf4j-nop metrics-core commons-cli snappy-java \
    netty-handler netty-common netty-buffer netty-transport netty-codec netty-resolver \
    netty-transport-native-epoll netty-transport-native-unix-common; do
    zk_cp="$zk_cp${zk_cp:+:}/usr/share/java/$jar.jar"
  done
  java -Xmx512m -Dzookeeper.extendedTypesEnabled=true -cp "$zk_cp" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$tmp/zoo.cfg" >"$tmp/zk.log" 2>&1 &
  pids+=($!)
  args+=(--url "zk=zk://127.0.0.1:$zk_port/kv-bench")
else
  echo "ZooKeeper not installed (apt-get install zookeeper): skipping the zk backend" >&2
fi

"$bin" "${args[@]}" "$@"
