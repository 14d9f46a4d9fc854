#!/usr/bin/env bash
# What a `/proc/sys/net/ipv6/conf/...` lookup costs a namespace once other namespaces have
# looked the same names up after it (the containers of any runtime started since): by path,
# as `sysctl::write` opens it, and relative to the namespace's own `conf` directory, as
# `plexus_sys::sysctl::SysctlDir` (used for every veth's `disable_ipv6`) does.
#
# Usage: bench/single-host/sysctl_lookup.sh [N (default 700)]
# Needs root and python3. Everything made here is named plxs-* and is removed on exit.
# Last line: headline figures as key=value pairs.
set -uo pipefail
N=${1:-700}
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
cleanup() { for n in $(ip netns list | awk '{print $1}' | grep '^plxs-'); do ip netns del "$n"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
PROBE='
import os, sys, time
conf = os.open("/proc/sys/net/ipv6/conf", os.O_RDONLY | os.O_DIRECTORY)
def median(fn):
    ts = []
    for _ in range(2000):
        t = time.perf_counter(); fd = fn(); ts.append(time.perf_counter() - t); os.close(fd)
    ts.sort(); return ts[len(ts) // 2] * 1e6
print("%.1f %.1f" % (median(lambda: os.open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", os.O_RDONLY)),
                     median(lambda: os.open("lo/disable_ipv6", os.O_RDONLY, dir_fd=conf))))
'
ip netns add plxs-probe
read -r path0 dir0 < <(ip netns exec plxs-probe python3 -c "$PROBE")
echo "== /proc/sys lookup from one namespace, before and after $N others look the same names up =="
echo "  alone:           by path ${path0} us, relative to its conf directory ${dir0} us (median of 2000)"
for i in $(seq 1 "$N"); do echo "netns add plxs-n$i"; done | ip -batch -
for i in $(seq 1 "$N"); do ip netns exec plxs-n$i cat /proc/sys/net/ipv6/conf/lo/disable_ipv6 >/dev/null; done
read -r path1 dir1 < <(ip netns exec plxs-probe python3 -c "$PROBE")
echo "  after $N others: by path ${path1} us, relative to its conf directory ${dir1} us"
echo "namespaces=$N by_path_alone_us=$path0 by_path_after_us=$path1 by_dir_alone_us=$dir0 by_dir_after_us=$dir1"
