#!/usr/bin/env bash
# The runtime fronts benchmark (issue 22), both halves one after the other:
#   docker.sh  `docker run --rm --network N bb true`, N a Plexus network (Docker plugin
#              protocol) vs N a Docker bridge network (target: Plexus no slower);
#   podman.sh  `podman run --rm` with plexus-cni vs podman's netavark (target: faster).
# Each half alternates its two sides in one run; see each script. Needs root.
# Usage: bench/fronts/run.sh [--quick] [--reps N]
# Last line: docker_run_plexus_ms= docker_run_bridge_ms= podman_plexus_ms=
#   podman_netavark_ms= targets=PASS|FAIL
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ARGS=("$@")
out_d=$(mktemp); out_p=$(mktemp); trap 'rm -f "$out_d" "$out_p"' EXIT
bash "$HERE/docker.sh" "${ARGS[@]}" | tee "$out_d"
bash "$HERE/podman.sh" "${ARGS[@]}" | tee "$out_p"
python3 - "$out_d" "$out_p" <<'PY'
import sys
def kv(path):
    lines = [l for l in open(path).read().splitlines() if l.count("=") >= 2]
    last = lines[-1] if lines else ""
    return dict(p.split("=", 1) for p in last.split() if "=" in p)
d, p = kv(sys.argv[1]), kv(sys.argv[2])
def num(m, k):
    try:
        return float(m.get(k, "NA"))
    except ValueError:
        return None
dp, db = num(d, "docker_run_plexus_ms"), num(d, "docker_run_bridge_ms")
pp, pn = num(p, "podman_plexus_ms"), num(p, "podman_netavark_ms")
t1 = dp is not None and db is not None and dp <= db
t2 = pp is not None and pn is not None and pp < pn
f = lambda x: "NA" if x is None else f"{x:.1f}"
print("-- targets (issue 22)")
print(f"  {'PASS' if t1 else 'FAIL'}  docker run on a Plexus network no slower than on a Docker bridge: {f(dp)} vs {f(db)} ms")
print(f"  {'PASS' if t2 else 'FAIL'}  podman run with plexus-cni faster than with netavark: {f(pp)} vs {f(pn)} ms")
print(f"docker_run_plexus_ms={f(dp)} docker_run_bridge_ms={f(db)} podman_plexus_ms={f(pp)} "
      f"podman_netavark_ms={f(pn)} targets={'PASS' if t1 and t2 else 'FAIL'}")
PY
