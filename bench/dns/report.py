#!/usr/bin/env python3
"""Summaries for bench/dns/run.sh.

report.py DATA_DIR QPS: reads DATA_DIR/res.txt (one line per dnsperf run, named by its header
line: kind mode rep qps ... cpu_us_per_q user_us_per_q p50_ms p99_ms rcodes) and plexus_fwd_cache.txt
(rep forwarded cache_hits), prints a table per mode (median and min-max over reps), the ratios
of Plexus to each peer within the same rep, the issue's targets with PASS/FAIL and, as the last
line, the headline key=value figures."""
import os, statistics as st, sys

D, QPS = sys.argv[1], sys.argv[2]
rows = []
with open(os.path.join(D, "res.txt")) as f:
    head = f.readline().split()
    for line in f:
        v = line.split()
        if len(v) == len(head):
            rows.append(dict(zip(head, v)))


def num(x):
    try:
        v = float(x)
        return v
    except ValueError:
        return float("inf") if x == "inf" else None


def series(kind, mode, col):
    """{rep: value} of one column"""
    out = {}
    for r in rows:
        if r["kind"] == kind and r["mode"] == mode:
            v = num(r[col])
            if v is not None:
                out[r["rep"]] = v
    return out


def med(d):
    v = list(d.values()) if isinstance(d, dict) else list(d)
    return st.median(v) if v else None


def fmt(x, d=1):
    if x is None:
        return "NA"
    if x == float("inf"):
        return "inf"
    return f"{x:.{d}f}"


def cell(d, dec=1):
    v = sorted(d.values())
    if not v:
        return "NA"
    if len(v) == 1:
        return fmt(v[0], dec)
    return f"{fmt(med(v), dec)} ({fmt(v[0], dec)}-{fmt(v[-1], dec)})"


def per_rep_ratio(a, b):
    """{rep: a/b} for the reps both have"""
    return {r: a[r] / b[r] for r in a if r in b and b[r] not in (0, None) and a[r] != float("inf")}


def ratio_text(a, b):
    r = per_rep_ratio(a, b)
    if not r:
        return "NA"
    return f"{med(r):.2f} (reps: {' '.join(f'{r[k]:.2f}' for k in sorted(r, key=int))})"


def table(title, kinds, mode, cols):
    print(f"-- {title}")
    print(f"  {'':<12}" + "".join(f"{h:>26}" for h, _, _ in cols))
    for k in kinds:
        print(f"  {k:<12}" + "".join(f"{cell(series(k, mode, c), d):>26}" for _, c, d in cols))


reps = sorted({r["rep"] for r in rows}, key=int)
print(f"== Results: median (min-max) over {len(reps)} rep(s); ratios pair runs of the same rep, median of the per-rep ratios ==")
table(f"fixed rate: dnsperf -Q {QPS}, local names",
      ["plexus", "docker", "aardvark", "floor"], "fixed",
      [("server CPU us/query", "cpu_us_per_q", 2), ("of which user", "user_us_per_q", 2),
       ("p50 ms", "p50_ms", 3), ("p99 ms", "p99_ms", 3),
       ("achieved qps", "qps", 0), ("lost", "lost", 0)])
cpu = {k: series(k, "fixed", "cpu_us_per_q") for k in ("plexus", "docker", "aardvark", "floor")}
p99 = {k: series(k, "fixed", "p99_ms") for k in ("plexus", "docker", "aardvark")}
print(f"  CPU per query, plexus/docker:   {ratio_text(cpu['plexus'], cpu['docker'])}   (docker/plexus {fmt(med(per_rep_ratio(cpu['docker'], cpu['plexus'])), 1)}x)")
print(f"  CPU per query, plexus/aardvark: {ratio_text(cpu['plexus'], cpu['aardvark'])}   (aardvark/plexus {fmt(med(per_rep_ratio(cpu['aardvark'], cpu['plexus'])), 1)}x)")
own = {r: cpu["plexus"][r] - cpu["floor"][r] for r in cpu["plexus"] if r in cpu["floor"]}
if own:
    share = {r: own[r] / cpu["plexus"][r] for r in own if cpu["plexus"][r] > 0}
    print(f"  kernel floor (one datagram in, one out, same DNAT): {fmt(med(cpu['floor']), 2)} us/query; "
          f"Plexus's own part: {fmt(med(own), 2)} us/query, {fmt(100 * med(share), 0)}% of its CPU per query")
print(f"  p99, plexus/docker: {ratio_text(p99['plexus'], p99['docker'])}; plexus/aardvark: {ratio_text(p99['plexus'], p99['aardvark'])}")
print()
table("saturating: dnsperf -q 100, local names", ["plexus", "docker", "aardvark"], "sat",
      [("qps", "qps", 0), ("server CPU us/query", "cpu_us_per_q", 2), ("lost", "lost", 0)])
qps = {k: series(k, "sat", "qps") for k in ("plexus", "docker", "aardvark")}
print(f"  qps, plexus/docker:   {ratio_text(qps['plexus'], qps['docker'])}")
print(f"  qps, plexus/aardvark: {ratio_text(qps['plexus'], qps['aardvark'])}")
best_peer = {r: max(qps["docker"][r], qps["aardvark"][r]) for r in qps["docker"] if r in qps["aardvark"]}
print()
table("forwarded names: dnsperf -q 100, names an upstream dnsmasq answers",
      ["plexus_fwd", "docker_fwd"], "fwd",
      [("qps", "qps", 0), ("server CPU us/query", "cpu_us_per_q", 2), ("lost", "lost", 0)])
fwd = {k: series(k, "fwd", "qps") for k in ("plexus_fwd", "docker_fwd")}
print(f"  qps, plexus (cached)/docker (forwarding): {ratio_text(fwd['plexus_fwd'], fwd['docker_fwd'])}")
cache_path = os.path.join(D, "plexus_fwd_cache.txt")
if os.path.exists(cache_path):
    for line in open(cache_path):
        rep, fw, hits = line.split()
        print(f"  plexus rep {rep}: {fw} queries went upstream, {hits} answered from the cache")
print()
print("-- response codes, losses, the fixed rate kept")
bad = False
for r in rows:
    if r["rcodes"] not in ("none",) and set(x.split("=")[0] for x in r["rcodes"].split(",")) == {"NOERROR"} and r["lost"] == "0":
        continue
    bad = True
    print(f"  !! {r['kind']} {r['mode']} rep {r['rep']}: lost {r['lost']} of {r['sent']}, rcodes {r['rcodes']}")
for r in rows:
    q = num(r["qps"])
    if r["mode"] == "fixed" and q is not None and q < 0.98 * float(QPS):
        bad = True
        print(f"  !! {r['kind']} fixed rep {r['rep']}: reached {r['qps']} qps, short of {QPS}: "
              "it could not keep up, and its CPU per query is at that rate")
if not bad:
    print("  every answer NOERROR, no query lost, every server kept the fixed rate")
print()

# targets
m_cpu = med(cpu["plexus"])
m_qps_ratio = med(per_rep_ratio(qps["plexus"], best_peer))
m_fwd_ratio = med(per_rep_ratio(fwd["plexus_fwd"], fwd["docker_fwd"]))
targets = [
    ("server CPU per query at the fixed rate <= 10 us", m_cpu is not None and m_cpu <= 10,
     f"{fmt(m_cpu, 2)} us"),
    ("saturated qps > max(docker, aardvark) in the same rep", m_qps_ratio is not None and m_qps_ratio > 1,
     f"plexus/best peer {fmt(m_qps_ratio, 2)}"),
    ("forwarded names through the cache >= 4x docker's forwarding", m_fwd_ratio is not None and m_fwd_ratio >= 4,
     f"{fmt(m_fwd_ratio, 2)}x"),
]
print("-- targets (issue 16)")
for name, ok, val in targets:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {val}")
ok_all = all(ok for _, ok, _ in targets)
print()
kv = [
    ("plexus_cpu_us_per_q", fmt(med(cpu["plexus"]), 2)),
    ("docker_cpu_us_per_q", fmt(med(cpu["docker"]), 2)),
    ("aardvark_cpu_us_per_q", fmt(med(cpu["aardvark"]), 2)),
    ("plexus_qps", fmt(med(qps["plexus"]), 0)),
    ("docker_qps", fmt(med(qps["docker"]), 0)),
    ("aardvark_qps", fmt(med(qps["aardvark"]), 0)),
    ("plexus_fwd_cached_qps", fmt(med(fwd["plexus_fwd"]), 0)),
    ("docker_fwd_qps", fmt(med(fwd["docker_fwd"]), 0)),
    ("floor_cpu_us_per_q", fmt(med(cpu["floor"]), 2)),
    ("plexus_own_us_per_q", fmt(med(own), 2)),
    ("plexus_p99_ms", fmt(med(p99["plexus"]), 3)),
    ("docker_p99_ms", fmt(med(p99["docker"]), 3)),
    ("aardvark_p99_ms", fmt(med(p99["aardvark"]), 3)),
    ("targets", "PASS" if ok_all else "FAIL"),
]
print(" ".join(f"{k}={v}" for k, v in kv))
