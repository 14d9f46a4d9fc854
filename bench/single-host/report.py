#!/usr/bin/env python3
"""Summaries for bench/single-host/run.sh.

report.py DATA_DIR: reads the raw samples the run wrote (one number per line, ms or Gbit/s)
and prints the tables, ratios and, as the last line, the headline key=value figures."""
import os, statistics as st, sys

D = sys.argv[1]


def load(name):
    p = os.path.join(D, name)
    if not os.path.exists(p):
        return []
    out = []
    for line in open(p):
        line = line.strip()
        if line:
            try:
                out.append(float(line.split()[-1]))
            except ValueError:
                pass
    return out


def med(v):
    return st.median(v) if v else None


def fmt(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def row(label, v, unit="ms"):
    if not v:
        print(f"  {label:<52} no data")
        return
    s = sorted(v)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    print(f"  {label:<52} median {med(v):8.2f} {unit}  min {s[0]:8.2f}  p90 {p90:8.2f}  max {s[-1]:8.2f}  n={len(v)}")


def ratio(num, den):
    """ratio of medians, and median of per-pair ratios (samples taken in alternation)"""
    if not num or not den:
        return None, None
    pairs = [a / b for a, b in zip(num, den) if b > 0]
    return med(num) / med(den), (med(pairs) if pairs else None)


head = {}
docker = open(os.path.join(D, "docker_status")).read().strip() if os.path.exists(os.path.join(D, "docker_status")) else "unavailable"
head["docker"] = docker

print("== 1. network create / delete (CLI wall clock, alternating Plexus/Docker) ==")
for op in ("create", "rm"):
    p, d = load(f"net_{op}_plexus.txt"), load(f"net_{op}_docker.txt")
    row(f"plexus network {op}", p)
    row(f"docker network {op}", d)
    rm_, rp = ratio(d, p)
    if rm_:
        print(f"  -> docker/plexus {op}: {rm_:.1f}x (ratio of medians), {rp:.1f}x (median per-pair)   target >= 15x")
    head[f"plexus_net_{op}_ms"] = fmt(med(p))
    head[f"docker_net_{op}_ms"] = fmt(med(d)) if d else "n/a"
    head[f"net_{op}_x_docker"] = fmt(rm_, 1)

print()
print("== 2. attach / detach an existing sandbox, no port (rotating order Plexus/Docker/netavark) ==")
for op, pl, dk, nv in (("attach", "plexus network connect", "docker network connect", "netavark setup"),
                       ("detach", "plexus network disconnect", "docker network disconnect", "netavark teardown")):
    p, d, n = load(f"{op}_plexus.txt"), load(f"{op}_docker.txt"), load(f"{op}_netavark.txt")
    row(pl, p); row(dk, d); row(nv, n)
    rd, rdp = ratio(d, p)
    rn, rnp = ratio(n, p)
    if rd:
        print(f"  -> docker/plexus {op}: {rd:.1f}x (ratio of medians), {rdp:.1f}x (per-pair)   target >= 10x")
    if rn:
        print(f"  -> netavark/plexus {op}: {rn:.1f}x (ratio of medians), {rnp:.1f}x (per-pair)   target >= 5x")
    head[f"plexus_{op}_ms"] = fmt(med(p))
    head[f"docker_{op}_ms"] = fmt(med(d)) if d else "n/a"
    head[f"netavark_{op}_ms"] = fmt(med(n))
    head[f"{op}_x_docker"] = fmt(rd, 1)
    head[f"{op}_x_netavark"] = fmt(rn, 1)
for f, label in (("noop_plexus.txt", "plexus network inspect (CLI round trip floor)"),
                 ("noop_docker.txt", "docker network inspect (CLI round trip floor)"),
                 ("noop_netavark.txt", "netavark version (exec floor)")):
    row(label, load(f))

print()
print("== 3. attach / detach of an existing netns with one published port, N sandboxes (each with a port) on the network ==")
print("   (each tool ramps alone, Plexus first; netavark detach at N=1 is its last-container path: it also deletes the bridge)")
print("   plexus: sandbox create --netns PATH --network NET -p 127.0.0.1:P:80 / sandbox rm;  netavark: setup / teardown with one port_mappings entry")
ns = sorted({int(f.rsplit("_n", 1)[1].split(".")[0]) for f in os.listdir(D) if f.startswith("port_attach_plexus_n")})
nvn = sorted({int(f.rsplit("_n", 1)[1].split(".")[0]) for f in os.listdir(D) if f.startswith("port_attach_netavark_n")})
for n in sorted(set(ns) | set(nvn)):
    for op in ("attach", "detach"):
        p, v = load(f"port_{op}_plexus_n{n}.txt"), load(f"port_{op}_netavark_n{n}.txt")
        if p:
            row(f"N={n:<5} plexus {op}", p)
        if v:
            row(f"N={n:<5} netavark {op}", v)
            if p:
                # Ratio of medians only: the two tools ramp one after the other (run.sh),
                # so their samples do not pair up in time.
                r, _ = ratio(v, p)
                print(f"  -> N={n} netavark/plexus {op}: {r:.1f}x (ratio of medians)")
        if p:
            head[f"plexus_port_{op}_n{n}_ms"] = fmt(med(p))
        if v:
            head[f"netavark_port_{op}_n{n}_ms"] = fmt(med(v))


def slope(prefix, ns_):
    xs, ys = [], []
    for n in ns_:
        v = load(f"{prefix}_n{n}.txt")
        if v:
            xs.append(n); ys.append(med(v))
    if len(xs) < 2:
        return None
    return st.linear_regression(xs, ys).slope


for n in ns:
    for op in ("attach", "detach"):
        d = load(f"port_{op}_plexusdown_n{n}.txt")
        if d:
            row(f"N={n:<5} plexus {op}, way down", d)
if ns:
    lo, hi = min(ns), max(ns)
    for op in ("attach", "detach"):
        low, high = load(f"port_{op}_plexus_n{lo}.txt"), load(f"port_{op}_plexus_n{hi}.txt")
        a, b = med(low), med(high)
        if a and b:
            flat = b / a
            print(f"  -> plexus {op} N={hi} / N={lo}, way up only: {flat:.2f}x")
            head[f"plexus_port_{op}_flat_up_n{hi}_over_n{lo}"] = fmt(flat)
            both = low + load(f"port_{op}_plexusdown_n{lo}.txt")
            flat = b / med(both)
            print(f"  -> plexus {op} N={hi} / N={lo} (N={lo} probed before and after the peak): {flat:.2f}x   target <= 1.2x")
            head[f"plexus_port_{op}_flat_n{hi}_over_n{lo}"] = fmt(flat)
        s = slope(f"port_{op}_plexus", ns)
        if s is not None:
            print(f"  -> plexus {op} slope: {s*1000:+.2f} us per sandbox")
            head[f"plexus_port_{op}_slope_ms_per_sb"] = f"{s:.4f}"
        s = slope(f"port_{op}_netavark", nvn)
        if s is not None:
            print(f"  -> netavark {op} slope: {s:+.3f} ms per container (anchors: setup +0.38, teardown +0.26)")
            head[f"netavark_port_{op}_slope_ms_per_ctr"] = f"{s:.3f}"
if ns:
    # The bare kernel's own port add on the same bridge (port_floor.rs), at the same N.
    for n in ns:
        row(f"N={n:<5} bare kernel port add", load(f"port_floor_n{n}.txt"))
        d = load(f"port_floor_down_n{n}.txt")
        if d:
            row(f"N={n:<5} bare kernel port add, way down", d)
    lo, hi = min(ns), max(ns)
    fl_lo = load(f"port_floor_n{lo}.txt") + load(f"port_floor_down_n{lo}.txt")
    fl_hi = load(f"port_floor_n{hi}.txt")
    p_lo = load(f"port_attach_plexus_n{lo}.txt") + load(f"port_attach_plexusdown_n{lo}.txt")
    p_hi = load(f"port_attach_plexus_n{hi}.txt")
    if fl_lo and fl_hi and p_lo and p_hi:
        kg, pg = med(fl_hi) - med(fl_lo), med(p_hi) - med(p_lo)
        share = f", of which the bare kernel's growth is {100 * kg / pg:.0f}%" if pg > 0 else ""
        print(f"  -> bare kernel port add N={hi} / N={lo}: {med(fl_hi) / med(fl_lo):.2f}x, {kg:+.2f} ms;"
              f" plexus attach {pg:+.2f} ms{share}")
        # The flatness target as a budget: N=hi within 1.2x of N=lo leaves 20% of Plexus's
        # N=lo time for all growth, the kernel's included.
        print(f"  -> the <= 1.2x target leaves {0.2 * med(p_lo):.2f} ms of growth (20% of plexus at N={lo});"
              f" the bare kernel's own growth is {100 * kg / med(p_lo):.0f}% of plexus at N={lo}")
        head["floor_growth_over_plexus_n1"] = fmt(kg / med(p_lo), 3)
        head[f"floor_port_add_n{lo}_ms"] = fmt(med(fl_lo))
        head[f"floor_port_add_n{hi}_ms"] = fmt(med(fl_hi))
        head["floor_port_add_growth_ms"] = fmt(kg)
        head["plexus_port_attach_growth_ms"] = fmt(pg)
for f, label in (("fill_plexus.txt", "plexus fill: sandbox create --network -p (ms)"),
                 ("fill_netavark.txt", "netavark fill: setup with a port (ms)")):
    row(label, load(f))

print()
print("== 4. TCP throughput, iperf3 1 stream, two sandboxes (alternating Plexus / bare veth+bridge) ==")
p, b = load("tput_plexus.txt"), load("tput_bare.txt")
row("plexus bridge", p, "Gbit/s")
row("bare veth+bridge by hand", b, "Gbit/s")
r, rp = ratio(p, b)
if r:
    print(f"  -> plexus/bare: {rp:.3f} (median of per-pair ratios: each pair ran back to back, so")
    print(f"     the machine's slow drifts cancel), {r:.3f} (ratio of medians)   target >= 0.95")
head["plexus_tput_gbps"] = fmt(med(p))
head["bare_tput_gbps"] = fmt(med(b))
head["tput_ratio"] = fmt(rp, 3)
head["tput_ratio_of_medians"] = fmt(r, 3)
q = load("tput_plexus64k.txt")
if q:
    row("plexus bridge, gso_ipv4_max_size=65536 (no BIG TCP)", q, "Gbit/s")
    r, rp = ratio(q, b)
    if r:
        print(f"  -> plexus without BIG TCP / bare: {rp:.3f} (per-pair), {r:.3f} (ratio of medians)")
    head["plexus64k_tput_gbps"] = fmt(med(q))
    head["tput_ratio_64k"] = fmt(rp, 3)
print()
print(" ".join(f"{k}={v}" for k, v in head.items()))
