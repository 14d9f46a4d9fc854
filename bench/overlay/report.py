#!/usr/bin/env python3
"""Summaries for bench/overlay/run.sh.

report.py DATA_DIR: reads the raw samples the run wrote and prints a table per phase, the
ratios, the issue's targets with PASS/FAIL and, as the last line, the headline key=value
figures.

Files (ms unless said): create_ov_plexus.txt, create_none_plexus.txt, run_ov_docker.txt,
run_none_docker.txt, connect_*.txt, disconnect_*.txt, noop_*.txt: "REP MS"; reach.txt:
"I HOST_A HOST_B MS_FROM_ATTACH_START MS_FROM_CLI_RETURN ATTACH_CLI_MS DATAGRAMS" (or
"timeout"); tput_plexus.txt, tput_bare.txt: "REP GBIT/S RETRANSMITS"; detect.txt: "I VICTIM
WORST_MS MS_PER_OTHER_HOST... MS_UNTIL_BACK" (or "timeout", or "I VICTIM skipped");
detect_bound_ms.txt; sim.out (the simulator's key=value line), sim_rc.txt.

Percentiles are nearest-rank (p99 of 20 samples is the largest); a sample that never came (a
probe or a watch that timed out) counts as slower than any, so a percentile that lands on one is
"inf", never left out."""
import math, os, statistics as st, sys

D = sys.argv[1]
INF = float("inf")


def path(name):
    return os.path.join(D, name)


def lines(name):
    p = path(name)
    return [l.split() for l in open(p) if l.strip()] if os.path.exists(p) else []


def num(x):
    try:
        return float(x)
    except ValueError:
        return INF if x in ("timeout", "inf") else None


def keyed(name):
    """{rep: ms} from "REP MS" lines"""
    return {f[0]: float(f[1]) for f in lines(name) if len(f) >= 2 and num(f[1]) is not None}


def med(v):
    v = list(v.values()) if isinstance(v, dict) else list(v)
    return st.median(v) if v else None


def pct(v, p):
    v = sorted(v)
    if not v:
        return None
    return v[max(1, math.ceil(p * len(v))) - 1]


def fmt(x, d=1):
    if x is None:
        return "NA"
    if x == INF:
        return "inf"
    return f"{x:.{d}f}"


def row(label, v, unit="ms", d=1):
    v = list(v.values()) if isinstance(v, dict) else list(v)
    if not v:
        print(f"  {label:<58} no data")
        return
    print(f"  {label:<58} median {fmt(med(v), d):>8} {unit}  min {fmt(min(v), d):>8}  p90 {fmt(pct(v, 0.9), d):>8}"
          f"  max {fmt(max(v), d):>8}  n={len(v)}")


def paired_diff(a, b):
    """{rep: a - b} over the reps both have"""
    return {r: a[r] - b[r] for r in a if r in b}


docker = os.path.exists(path("docker_measured")) and open(path("docker_measured")).read().strip() == "1"
print("== Results ==")

# ---------- 1. attach on one host ----------
pc, p0 = keyed("create_ov_plexus.txt"), keyed("create_none_plexus.txt")
dc, d0 = keyed("run_ov_docker.txt"), keyed("run_none_docker.txt")
pdiff, ddiff = paired_diff(pc, p0), paired_diff(dc, d0)
print("-- 1. attach on one host, through the CLI (wall clock around each command)")
row("plexus sandbox create --network ov (overlay)", pc)
row("plexus sandbox create (no network)", p0)
row("  difference, paired per rep: the overlay attach", pdiff)
if docker:
    row("docker run -d --network <attachable overlay>", dc)
    row("docker run -d --network none", d0)
    row("  difference, paired per rep: the overlay attach", ddiff)
ca, cd = keyed("connect_plexus.txt"), keyed("disconnect_plexus.txt")
da, dd = keyed("connect_docker.txt"), keyed("disconnect_docker.txt")
row("plexus network connect ov SB", ca)
row("plexus network disconnect ov SB", cd)
if docker:
    row("docker network connect <overlay> CTR", da)
    row("docker network disconnect <overlay> CTR", dd)
row("idle CLI round trip: plexus network inspect", [float(f[1]) for f in lines("noop_plexus.txt")])
if docker:
    row("idle CLI round trip: docker network inspect", [float(f[1]) for f in lines("noop_docker.txt")])
attach_ms, docker_attach = med(pdiff), med(ddiff)
connect_ms, docker_connect = med(ca), med(da)


def speed(a, b):
    return b / a if a and b and a > 0 else None


speedup = speed(attach_ms, docker_attach)
connect_speedup = speed(connect_ms, docker_connect)
disconnect_speedup = speed(med(cd), med(dd))
if docker:
    print(f"  like for like, the overlay's share of starting a container: docker {fmt(docker_attach)} ms / plexus {fmt(attach_ms, 2)} ms"
          f" = {fmt(speedup)}x (ratio of the medians of the paired differences)")
    print(f"  network connect to the overlay: docker {fmt(docker_connect)} ms / plexus {fmt(connect_ms, 2)} ms = {fmt(connect_speedup)}x;"
          f" disconnect {fmt(disconnect_speedup)}x")
else:
    print("  Docker NOT measured (dockerd or its swarm mode unavailable): no ratio")
print()

# ---------- 2. reachability ----------
reach = lines("reach.txt")
frm = [num(f[3]) for f in reach]
after = [num(f[4]) for f in reach]
att = [num(f[5]) for f in reach if num(f[5]) is not None]
timeouts = sum(1 for v in frm if v == INF)
early = [f for f in reach if num(f[3]) is not None and num(f[3]) < 0]
per_attach = {}
for f in reach:
    per_attach.setdefault(f[0], []).append(num(f[3]))
worst = [max(v) for v in per_attach.values()]
print(f"-- 2. reachability: {len(per_attach)} attaches (plexus sandbox create --network ov --ip, rotating over the hosts),"
      f" each probed from the {len(reach) // max(1, len(per_attach))} other hosts (a datagram every 2 ms)")
row("from the start of the attach until the other host reaches it", frm)
row("  the same from the attach command's return", after)
row("  the attach command itself", att)
row("until every other host reaches it (worst of the probers)", worst)
print(f"  p50 {fmt(pct(frm, 0.5))} ms, p99 {fmt(pct(frm, 0.99))} ms over {len(frm)} (attach, other host) pairs;"
      f" never reached (10 s): {timeouts}; reached before the attach began (invalid): {len(early)}")
reach_p50, reach_p99 = pct(frm, 0.5), pct(frm, 0.99)
print()

# ---------- 3. throughput ----------
tpl = {f[0]: (float(f[1]), f[2]) for f in lines("tput_plexus.txt")}
tba = {f[0]: (float(f[1]), f[2]) for f in lines("tput_bare.txt")}
mtu = lines("tput_mtu.txt")
print("-- 3. iperf3 TCP, 1 stream, between sandboxes on two hosts over VXLAN"
      + (f" (MTU plexus {mtu[0][0]}, bare {mtu[0][1]})" if mtu and len(mtu[0]) == 2 else ""))
row("plexus overlay (hosts 1 -> 2)", {r: v[0] for r, v in tpl.items()}, "Gbit/s", 2)
row("bare VXLAN + bridge + veth, same layout and underlay", {r: v[0] for r, v in tba.items()}, "Gbit/s", 2)
ratios = {r: tpl[r][0] / tba[r][0] for r in tpl if r in tba and tba[r][0] > 0}
tput_ratio = med(ratios)
print(f"  plexus/bare, median of the per-rep ratios: {fmt(tput_ratio, 3)} (reps: {' '.join(f'{ratios[r]:.2f}' for r in sorted(ratios, key=int))})")
print(f"  retransmits per run: plexus {' '.join(v[1] for _, v in sorted(tpl.items(), key=lambda x: int(x[0])))};"
      f" bare {' '.join(v[1] for _, v in sorted(tba.items(), key=lambda x: int(x[0])))}")
print()

# ---------- 4. failure detection ----------
bound = num(open(path("detect_bound_ms.txt")).read().strip()) if os.path.exists(path("detect_bound_ms.txt")) else None
det = [f for f in lines("detect.txt") if len(f) >= 3 and f[2] != "skipped"]
skipped = [f for f in lines("detect.txt") if len(f) >= 3 and f[2] == "skipped"]
dms = [num(f[2]) for f in det]
back = [num(f[-1]) for f in det]
print(f"-- 4. failure detection: kill -9 of a host's plexusd until every other host has dropped its FDB entries ({len(det)} kills"
      + (f", {len(skipped)} skipped: the cluster was not whole before them" if skipped else "") + ")")
row("kill -9 -> entries gone on every other host", dms)
for v in sorted({f[1] for f in det}):
    row(f"  host {v} killed", [num(f[2]) for f in det if f[1] == v])
row("restart -> alive everywhere and its entries back", back)
detect_p50, detect_p99 = pct(dms, 0.5), pct(dms, 0.99)
print(f"  p50 {fmt(detect_p50)} ms, p99 {fmt(detect_p99)} ms; never dropped (watched for 2x the bound + 10 s): {sum(1 for v in dms if v == INF)};"
      f" the SWIM bound (plexus cluster inspect: FailureDetectionMs) {fmt(bound, 0)} ms")
print()

# ---------- 5. the simulator ----------
sim = {}
if os.path.exists(path("sim.out")):
    out = [l for l in open(path("sim.out")) if "=" in l]
    if out:
        sim = dict(kv.split("=", 1) for kv in out[-1].split())
sim_rc = open(path("sim_rc.txt")).read().strip() if os.path.exists(path("sim_rc.txt")) else "NA"
print(f"-- 5. gossip simulator (virtual time, runtime settings): {' '.join(f'{k}={v}' for k, v in sim.items()) or 'no output'}; exit status {sim_rc}")
sim_c99 = num(sim.get("convergence_p99_ms", "NA"))
print()

# ---------- targets ----------
targets = [
    ("overlay attach on one host >= 15x faster than Docker's (paired create/run differences)",
     speedup is not None and speedup >= 15,
     f"{fmt(speedup)}x ({fmt(attach_ms, 2)} ms vs {fmt(docker_attach)} ms)" if docker else "Docker not measured"),
    ("attach on host A until host B reaches it: p99 <= 1 s",
     reach_p99 is not None and reach_p99 <= 1000 and not early, f"p99 {fmt(reach_p99)} ms, p50 {fmt(reach_p50)} ms"),
    ("TCP throughput across hosts >= 0.95 of a bare VXLAN", tput_ratio is not None and tput_ratio >= 0.95,
     f"{fmt(tput_ratio, 3)}"),
    ("kill -9 until every other host dropped its FDB entries: p99 <= the SWIM bound",
     detect_p99 is not None and bound is not None and detect_p99 <= bound and not skipped,
     f"p99 {fmt(detect_p99)} ms, bound {fmt(bound, 0)} ms"),
    (f"simulator at {sim.get('nodes', '?')} nodes: convergence p99 <= 2.5 s, every entry converged, every kill detected",
     sim_rc == "0" and sim_c99 is not None and sim_c99 <= 2500,
     f"p99 {sim.get('convergence_p99_ms', 'NA')} ms, unconverged={sim.get('unconverged', 'NA')} undetected={sim.get('undetected', 'NA')}"),
]
print("-- targets (the multi-host overlay issue)")
for name, ok, val in targets:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {val}")
print()
kv = [
    ("attach_ms", fmt(attach_ms, 2)),
    ("docker_overlay_attach_ms", fmt(docker_attach)),
    ("speedup", fmt(speedup)),
    ("connect_ms", fmt(connect_ms, 2)),
    ("docker_connect_ms", fmt(docker_connect)),
    ("connect_speedup", fmt(connect_speedup)),
    ("reach_p50_ms", fmt(reach_p50)),
    ("reach_p99_ms", fmt(reach_p99)),
    ("tput_ratio", fmt(tput_ratio, 3)),
    ("plexus_gbps", fmt(med([v[0] for v in tpl.values()]), 2)),
    ("bare_gbps", fmt(med([v[0] for v in tba.values()]), 2)),
    ("detect_p50_ms", fmt(detect_p50, 0)),
    ("detect_p99_ms", fmt(detect_p99, 0)),
    ("detect_bound_ms", fmt(bound, 0)),
    ("sim_nodes", sim.get("nodes", "NA")),
    ("sim_convergence_p99_ms", sim.get("convergence_p99_ms", "NA")),
    ("sim_detect_p99_ms", sim.get("detect_p99_ms", "NA")),
    ("sim_unconverged", sim.get("unconverged", "NA")),
    ("sim_undetected", sim.get("undetected", "NA")),
    ("targets", "PASS" if all(ok for _, ok, _ in targets) else "FAIL"),
]
print(" ".join(f"{k}={v}" for k, v in kv))
