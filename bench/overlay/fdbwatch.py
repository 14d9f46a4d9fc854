#!/usr/bin/env python3
"""Watches overlay FDBs for bench/overlay/run.sh.

fdbwatch.py gone|back VTEP TIMEOUT_S NS_PATH...: polls `bridge fdb show dev vxlan0` in each
overlay namespace (NS_PATH, a pinned namespace) until, in every one, no entry (`gone`) or at
least one entry (`back`) sends to VTEP, the underlay address of one host (`<mac> ... dst VTEP`;
the all-zero default entry does not count). Prints one line per namespace, `NS_PATH <unix time>`
when its condition first held (seconds, microseconds), or `NS_PATH timeout`; exits 1 if any
timed out. The namespaces are polled in turn, each about every 5-10 ms (one `bridge` process
per poll), which is the resolution of the times."""
import subprocess, sys, time

mode, vtep, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
paths = sys.argv[4:]
want_gone = mode == "gone"
done = {}
deadline = time.time() + timeout


def has_entry(path):
    out = subprocess.run(["nsenter", f"--net={path}", "bridge", "fdb", "show", "dev", "vxlan0"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        w = line.split()
        if not w or w[0] == "00:00:00:00:00:00":
            continue
        if "dst" in w and w[w.index("dst") + 1:w.index("dst") + 2] == [vtep]:
            return True
    return False


while len(done) < len(paths) and time.time() < deadline:
    for p in paths:
        if p in done:
            continue
        present = has_entry(p)
        t = time.time()
        if present != want_gone:
            done[p] = t
    if len(done) < len(paths):
        time.sleep(0.002)
for p in paths:
    print(f"{p} {done[p]:.6f}" if p in done else f"{p} timeout")
sys.exit(0 if len(done) == len(paths) else 1)
