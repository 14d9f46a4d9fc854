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


def keyed(name):
    """{rep: sample} from lines "REP VALUE" (the run writes the rep number of phases 1, 2 and 4,
    whose samples are taken together in one rep); lines without a rep are left out"""
    p = os.path.join(D, name)
    out = {}
    if os.path.exists(p):
        for line in open(p):
            f = line.split()
            if len(f) == 2:
                try:
                    out[f[0]] = float(f[1])
                except ValueError:
                    pass
    return out


def ratio(num, den):
    """(ratio of medians, median of per-rep ratios, number of reps paired): a per-rep ratio
    pairs two samples of the same rep only (taken back to back), never samples of different
    reps or phases; the median of those per-rep ratios is the headline figure"""
    a, b = load(num), load(den)
    if not a or not b:
        return None, None, 0
    ka, kb = keyed(num), keyed(den)
    pairs = [ka[r] / kb[r] for r in ka if r in kb and kb[r] > 0]
    return med(a) / med(b), (med(pairs) if pairs else None), len(pairs)


# The targets, checked on this run's figures: (headline key, what, op, bound, value).
targets = []


def target(key, what, op, bound, value, note=""):
    if value is None:
        word = "n/a"
    elif op == ">=":
        word = "PASS" if value >= bound else "FAIL"
    else:
        word = "PASS" if value <= bound else "FAIL"
    targets.append((key, what, op, bound, value, word, note))
    return word


head = {}
docker = open(os.path.join(D, "docker_status")).read().strip() if os.path.exists(os.path.join(D, "docker_status")) else "unavailable"
head["docker"] = docker

print("== 1. network create / delete (CLI wall clock, alternating Plexus/Docker) ==")
for op in ("create", "rm"):
    pf, df = f"net_{op}_plexus.txt", f"net_{op}_docker.txt"
    p, d = load(pf), load(df)
    row(f"plexus network {op}", p)
    row(f"docker network {op}", d)
    rm_, rp, n = ratio(df, pf)
    if rm_:
        print(f"  -> docker/plexus {op}: {fmt(rp, 1)}x (median of {n} per-rep ratios), {rm_:.1f}x (ratio of medians)"
              + ("   target >= 15x" if op == "create" else ""))
    head[f"plexus_net_{op}_ms"] = fmt(med(p))
    head[f"docker_net_{op}_ms"] = fmt(med(d)) if d else "n/a"
    head[f"net_{op}_x_docker"] = fmt(rp, 1)
    if op == "create":
        target("net_create_x_docker", "network create, Docker's time / Plexus's", ">=", 15, rp,
               "" if d else "docker not measured")

print()
print("== 2. attach / detach an existing sandbox, no port (rotating order Plexus/Docker/netavark) ==")
for op, pl, dk, nv in (("attach", "plexus network connect", "docker network connect", "netavark setup"),
                       ("detach", "plexus network disconnect", "docker network disconnect", "netavark teardown")):
    pf, df, nf = f"{op}_plexus.txt", f"{op}_docker.txt", f"{op}_netavark.txt"
    p, d, n = load(pf), load(df), load(nf)
    row(pl, p); row(dk, d); row(nv, n)
    rd, rdp, kd = ratio(df, pf)
    rn, rnp, kn = ratio(nf, pf)
    if rd:
        print(f"  -> docker/plexus {op}: {fmt(rdp, 1)}x (median of {kd} per-rep ratios), {rd:.1f}x (ratio of medians)   target >= 10x")
    if rn:
        print(f"  -> netavark/plexus {op}: {fmt(rnp, 1)}x (median of {kn} per-rep ratios), {rn:.1f}x (ratio of medians)   target >= 5x")
    head[f"plexus_{op}_ms"] = fmt(med(p))
    head[f"docker_{op}_ms"] = fmt(med(d)) if d else "n/a"
    head[f"netavark_{op}_ms"] = fmt(med(n))
    head[f"{op}_x_docker"] = fmt(rdp, 1)
    head[f"{op}_x_netavark"] = fmt(rnp, 1)
    target(f"{op}_x_docker", f"{op}, Docker's time / Plexus's", ">=", 10, rdp, "" if d else "docker not measured")
    target(f"{op}_x_netavark", f"{op}, netavark's time / Plexus's", ">=", 5, rnp)
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
        pf, vf = f"port_{op}_plexus_n{n}.txt", f"port_{op}_netavark_n{n}.txt"
        p, v = load(pf), load(vf)
        if p:
            row(f"N={n:<5} plexus {op}", p)
        if v:
            row(f"N={n:<5} netavark {op}", v)
            if p:
                # Ratio of medians only: the two tools ramp one after the other (run.sh),
                # so their samples do not pair up in time.
                r, _, _ = ratio(vf, pf)
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
for n in ns:
    # The bare kernel's own port add on the same bridge (port_floor.rs), at the same N.
    row(f"N={n:<5} bare kernel port add", load(f"port_floor_n{n}.txt"))
    d = load(f"port_floor_down_n{n}.txt")
    if d:
        row(f"N={n:<5} bare kernel port add, way down", d)
for op in ("attach", "detach"):
    s = slope(f"port_{op}_plexus", ns)
    if s is not None:
        print(f"  -> plexus {op} slope: {s*1000:+.2f} us per sandbox")
        head[f"plexus_port_{op}_slope_ms_per_sb"] = f"{s:.4f}"
    s = slope(f"port_{op}_netavark", nvn)
    if s is not None:
        print(f"  -> netavark {op} slope: {s:+.3f} ms per container (anchors: setup +0.38, teardown +0.26)")
        head[f"netavark_port_{op}_slope_ms_per_ctr"] = f"{s:.3f}"
# Growth from the lowest N to the highest, Plexus's beside the bare kernel's in the same run.
# The lowest N is probed before and after the peak (way up and way down), so its median is
# centred on the peak in time and a slow drift of the machine does not read as growth.
growth_word = None
if len(ns) >= 2:
    lo, hi = min(ns), max(ns)
    fl_lo = load(f"port_floor_n{lo}.txt") + load(f"port_floor_down_n{lo}.txt")
    fl_hi = load(f"port_floor_n{hi}.txt")
    kg = med(fl_hi) - med(fl_lo) if fl_lo and fl_hi else None
    if kg is not None:
        print(f"  -> bare kernel port add, growth N={lo} -> N={hi}: {kg:+.3f} ms"
              f" ({fmt(med(fl_lo), 3)} -> {fmt(med(fl_hi), 3)} ms, N={lo} way up and down)")
        head[f"floor_port_add_n{lo}_ms"] = fmt(med(fl_lo))
        head[f"floor_port_add_n{hi}_ms"] = fmt(med(fl_hi))
        head["floor_port_add_growth_ms"] = fmt(kg)
    for op in ("attach", "detach"):
        p_lo = load(f"port_{op}_plexus_n{lo}.txt") + load(f"port_{op}_plexusdown_n{lo}.txt")
        p_hi = load(f"port_{op}_plexus_n{hi}.txt")
        if not (p_lo and p_hi):
            continue
        pg = med(p_hi) - med(p_lo)
        print(f"  -> plexus {op}, growth N={lo} -> N={hi}: {pg:+.3f} ms ({med(p_lo):.3f} -> {med(p_hi):.3f} ms,"
              f" N={lo} way up and down; {med(p_hi) / med(p_lo):.2f}x)")
        head[f"plexus_port_{op}_growth_ms"] = fmt(pg)
        if op == "attach":
            beyond = pg - kg if kg is not None else None
            growth_word = target("plexus_growth_beyond_floor_ms",
                                 f"published-port attach, Plexus's growth N={lo} -> N={hi} beyond the bare kernel's (ms)",
                                 "<=", 0.2, beyond, "" if kg is not None else "port-floor not measured")
            if beyond is not None:
                print(f"  -> plexus attach growth beyond the bare kernel's: {pg:+.3f} - ({kg:+.3f}) = {beyond:+.3f} ms"
                      f"   target <= 0.2 ms: {growth_word}")
            head["plexus_growth_beyond_floor_ms"] = fmt(beyond, 3)
        else:
            # port-floor times the port add only (it deletes its pair untimed): no kernel floor
            # for detach, so its growth beyond the kernel's is not measured.
            print(f"  -> plexus detach growth beyond the bare kernel's: not measured (no kernel floor for a port delete)")
if growth_word is None:
    target("plexus_growth_beyond_floor_ms", "published-port attach, Plexus's growth beyond the bare kernel's (ms)",
           "<=", 0.2, None, "phase 3 not measured")
for f, label in (("fill_plexus.txt", "plexus fill: sandbox create --network -p (ms)"),
                 ("fill_netavark.txt", "netavark fill: setup with a port (ms)")):
    row(label, load(f))

print()
print("== 4. TCP throughput, iperf3 1 stream, two sandboxes: Plexus bridge vs bare veth+bridge, each with BIG TCP and at 64 KiB ==")
print("   (all four each rep, the like-with-like pairs back to back; ratios per rep, headline their median)")
gso = load("tput_gso_ipv4_max_size.txt")
size = int(gso[0]) if gso else None
big = size is not None and size > 65536
print(f"   veth gso/gro_ipv4_max_size: plexus default (auto) and the bare pair beside it {size if size else 'n/a (kernel before 6.3)'}"
      f"{'' if big else ', so no BIG TCP: both at 64 KiB'}; the other two 65536")
series = (("tput_plexus.txt", "plexus bridge, auto"), ("tput_bare.txt", "bare veth+bridge, same gso/gro_ipv4_max_size"),
          ("tput_plexus64k.txt", "plexus bridge, gso_ipv4_max_size=65536"), ("tput_bare64k.txt", "bare veth+bridge, 65536"))
for f, label in series:
    row(label, load(f), "Gbit/s")
for num, den, key, what, tgt in (
        ("tput_plexus.txt", "tput_bare.txt", "tput_ratio", f"plexus/bare, both at {size or 65536}", "   target >= 0.95"),
        ("tput_plexus64k.txt", "tput_bare64k.txt", "tput_ratio_64k", "plexus/bare, both at 65536", ""),
        ("tput_plexus.txt", "tput_plexus64k.txt", "plexus_bigtcp_gain", "BIG TCP's gain, plexus auto / plexus 65536", ""),
        ("tput_bare.txt", "tput_bare64k.txt", "bare_bigtcp_gain", f"BIG TCP's gain, bare {size or 65536} / bare 65536", "")):
    r, rp, k = ratio(num, den)
    if r:
        per_rep = f"{rp:.3f} (median of {k} per-rep ratios)" if rp else "n/a (no rep has both samples)"
        print(f"  -> {what}: {per_rep}, {r:.3f} (ratio of medians){tgt}")
    head[key] = fmt(rp, 3)
head["tput_gso_ipv4_max_size"] = str(size) if size else "n/a"
for f, key in (("tput_plexus.txt", "plexus_tput_gbps"), ("tput_bare.txt", "bare_tput_gbps"),
               ("tput_plexus64k.txt", "plexus64k_tput_gbps"), ("tput_bare64k.txt", "bare64k_tput_gbps")):
    head[key] = fmt(med(load(f)))

print()
print("== targets (the model and 5.10/operability issues), this run ==")
for key, what, op, bound, value, word, note in targets:
    shown = "n/a" if value is None else (f"{value:.3f}" if key.endswith("_ms") else f"{value:.1f}x")
    unit = " ms" if key.endswith("_ms") else "x"
    print(f"  {word:<4}  {what}: {shown}   target {op} {bound:g}{unit}{'  (' + note + ')' if note else ''}")
print("  ----  published-port detach growth beyond the bare kernel's: not measured (no kernel floor for a port delete)")
failed = [k for k, *_, w, _ in targets if w == "FAIL"]
unmeasured = [k for k, *_, w, _ in targets if w == "n/a"]
head["targets"] = "FAIL" if failed else ("INCOMPLETE" if unmeasured else "PASS")
head["targets_failed"] = ",".join(failed) or "none"
if unmeasured:
    head["targets_not_measured"] = ",".join(unmeasured)
print()
print(" ".join(f"{k}={v}" for k, v in head.items()))
