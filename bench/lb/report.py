#!/usr/bin/env python3
"""Summaries for bench/lb/run.sh.

report.py DATA_DIR: reads what the run wrote and prints the tables, the ratios, the issue's
targets with PASS/FAIL and, as the last line, the headline key=value figures.

Files: conn.txt (conn_rate's lines: "phase=… case=… n=… p50_us=… p99_us=… mean_us=…
rate_per_s=…" and "load_ms=… services=…"), conn_rc.txt; update.txt (update_latency's
"case=backend|service services=… affinity=… update_ms_p50=… update_ms_p99=…" lines),
update_rc.txt; docker_measured, docker.txt ("NAME OUTCOME MS TEXT…"), docker_service.txt,
docker_version.txt, dockerd_errors.txt; mesh.txt (mesh_rate's lines: "case=… n=… p50_us=…
p99_us=… mean_us=… rate_per_s=… block_rate_per_s=…", "check case=… made=… accepted=…
not_client=… be0=… be1=…" and "mesh_ratio=… mesh_ratio_p50=… mesh_ratio_mean=…"), mesh_rc.txt.

Ratios are of medians (p50) measured interleaved in the same phase; mesh_ratio, a ratio of
rates, is of the medians of the blocks' rates (see mesh_rate.rs)."""
import os, sys

D = sys.argv[1]


def path(n):
    return os.path.join(D, n)


def read(n):
    return open(path(n)).read() if os.path.exists(path(n)) else ""


def kvs(line):
    return dict(f.split("=", 1) for f in line.split() if "=" in f)


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt(x, d=1):
    return "NA" if x is None else f"{x:.{d}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


conn = {}
load = {}
for l in read("conn.txt").splitlines():
    k = kvs(l)
    if "case" in k:
        conn[(k["phase"], k["case"])] = k
    elif "load_ms" in k:
        load = k
upd = {}
for l in read("update.txt").splitlines():
    k = kvs(l)
    if "case" in k:
        upd[(k["case"], k["services"], k["affinity"])] = k


mesh = {}
mesh_check = {}
mesh_head = {}
for l in read("mesh.txt").splitlines():
    k = kvs(l)
    if l.startswith("check "):
        mesh_check[k["case"]] = k
    elif "case" in k:
        mesh[k["case"]] = k
    elif "mesh_ratio" in k:
        mesh_head = k


def c(phase, case, f="p50_us"):
    return num(conn.get((phase, case), {}).get(f))


def u(case, n, aff, f="update_ms_p50"):
    return num(upd.get((case, n, aff), {}).get(f))


print("== Results ==")
print(f"-- 1. connection set-up (connect+close, sequential; exit status {read('conn_rc.txt').strip() or 'NA'})")
for (phase, case), k in conn.items():
    print(f"  {phase:<4} {case:<13} p50 {k['p50_us']:>7} us  p99 {k['p99_us']:>8} us  mean {k['mean_us']:>7} us"
          f"  {k['rate_per_s']:>6} conn/s  n={k['n']}")
print(f"  loading 10,000 services in one apply: {fmt(num(load.get('load_ms')), 0)} ms")
vip1, vip10k, last = c("10k", "vip_1"), c("10k", "vip_10k"), c("10k", "vip_10k_last")
direct, fdnat, fdirect = c("10k", "direct"), c("10k", "floor_dnat"), c("10k", "floor_direct")
flat = ratio(vip10k, vip1)
flat_last = ratio(last, vip1)
vd = ratio(vip1, direct)
v10d = ratio(vip10k, direct)
floor = ratio(fdnat, fdirect)           # the kernel's NAT (static dnat) over direct, same namespace
share = ratio(vip1, fdnat)              # Plexus beyond any NAT
pre_pair = ratio(c("pre", "vip_pre"), c("pre", "vip_1"))
print(f"  ratios of p50s (phase 10k): vip_10k/vip_1 {fmt(flat, 3)}, vip_10k_last/vip_1 {fmt(flat_last, 3)}, "
      f"vip_1/direct {fmt(vd, 3)}, vip_10k/direct {fmt(v10d, 3)}")
print(f"  the floor: static dnat / direct in the floor namespace {fmt(floor, 3)}; vip_1 / static dnat {fmt(share, 3)} "
      f"(Plexus's share beyond the kernel's NAT); check: the two client namespaces with the same one service "
      f"(phase pre) {fmt(pre_pair, 3)}")
rate1, rate10k, rated = c("10k", "vip_1", "rate_per_s"), c("10k", "vip_10k", "rate_per_s"), c("10k", "direct", "rate_per_s")

print(f"-- 2. update latency (ms; exit status {read('update_rc.txt').strip() or 'NA'})")
for (case, n, aff), k in upd.items():
    print(f"  {case:<8} services={n:<6} affinity={aff:<5} p50 {k['update_ms_p50']:>7}  p99 {k['update_ms_p99']:>7}"
          + (f"  plan {k['plan_us']} us" if "plan_us" in k else ""))
b50, b99 = u("backend", "10000", "false"), u("backend", "10000", "false", "update_ms_p99")
a50, a99 = u("backend", "10000", "true"), u("backend", "10000", "true", "update_ms_p99")
s50, s99 = u("service", "10000", "false"), u("service", "10000", "false", "update_ms_p99")

print("-- 3. Docker's VIP and ingress")
docker = read("docker_measured").strip() == "1"
dk = {}
if not docker:
    print("  Docker NOT measured (see the run's log)")
else:
    print(f"  docker {read('docker_version.txt').strip()}, one-node swarm")
    for l in read("docker_service.txt").splitlines():
        print(f"  {l}")
    for l in read("docker.txt").splitlines():
        f = l.split(" ", 3)
        dk[f[0]] = f[1]
        print(f"  {f[0]:<18} {f[1]:<9} after {f[2]:>5} ms: {f[3] if len(f) > 3 else ''}")
    errs = read("dockerd_errors.txt").strip()
    if errs:
        print("  dockerd said (count, message):")
        for l in errs.splitlines():
            print(f"    {l.strip()[:170]}")
print(f"-- 4. routing mesh (connect+close through a published port; exit status {read('mesh_rc.txt').strip() or 'NA'})")


def m(case, f="p50_us"):
    return num(mesh.get(case, {}).get(f))


for case, k in mesh.items():
    print(f"  {case:<12} p50 {k['p50_us']:>7} us  p99 {k['p99_us']:>8} us  mean {k['mean_us']:>7} us"
          f"  {k['rate_per_s']:>6} conn/s (1/mean)  {k.get('block_rate_per_s', 'NA'):>6} conn/s (blocks)  n={k['n']}")
mratio = num(mesh_head.get("mesh_ratio"))
mratio50 = num(mesh_head.get("mesh_ratio_p50"))
mratio_mean = num(mesh_head.get("mesh_ratio_mean"))
mesh50, mdirect50, mrp50 = m("mesh"), m("direct"), m("direct_rp")
mfloor1, mfloor2 = m("floor_dnat"), m("floor_2dnat")
rp_share = ratio(mrp50, mdirect50)          # the return path alone over direct
nat2 = ratio(mfloor2, mrp50)               # two static DNATs on that path (return path too)
mesh_floor = ratio(mesh50, mfloor2)        # plexus-lb's tables beyond the static DNATs
print(f"  mesh rate / direct rate: {fmt(mratio, 3)} (medians of the blocks' rates), {fmt(mratio50, 3)} (p50s), "
      f"{fmt(mratio_mean, 3)} (1/means)")
print(f"  p50 shares: mesh/direct {fmt(ratio(mesh50, mdirect50), 3)} = return path (direct_rp/direct) {fmt(rp_share, 3)}"
      f" x the kernel's two static DNATs (floor_2dnat/direct_rp) {fmt(nat2, 3)}"
      f" x plexus-lb's tables beyond them (mesh/floor_2dnat) {fmt(mesh_floor, 3)}; "
      f"one static DNAT (floor_dnat/direct_rp) {fmt(ratio(mfloor1, mrp50), 3)}")
bad_checks = 0
for case, k in mesh_check.items():
    ok = k.get("not_client") == "0" and k.get("made") == k.get("accepted")
    bad_checks += not ok
    print(f"  check {case:<12} {'ok' if ok else 'BAD':<3}: {k.get('accepted')} of {k.get('made')} connections accepted"
          f" (be0 {k.get('be0')}, be1 {k.get('be1')}), {k.get('not_client')} not from the client's address")
print()

targets = [
    ("VIP connection set-up flat: 10,000 services within 10% of 1 (p50)", flat is not None and flat <= 1.10,
     f"{fmt(vip10k)} vs {fmt(vip1)} us, ratio {fmt(flat, 3)}"),
    ("VIP within 10% of connecting to the backend directly (p50)", vd is not None and vd <= 1.10,
     f"{fmt(vip1)} vs {fmt(direct)} us, ratio {fmt(vd, 3)}; the kernel's static DNAT alone: {fmt(floor, 3)}, "
     f"Plexus beyond it: {fmt(share, 3)}"),
    ("one backend added/removed with 10,000 services: p50 <= 1 ms", b50 is not None and b50 <= 1.0,
     f"{fmt(b50, 3)} ms (p99 {fmt(b99, 3)}); with affinity {fmt(a50, 3)} ms (p99 {fmt(a99, 3)})"),
    ("routing mesh: connections/s through a published port within 25% of the backend directly",
     mratio is not None and mratio >= 0.75 and bool(mesh_check) and not bad_checks,
     f"{fmt(m('mesh', 'block_rate_per_s'), 0)} vs {fmt(m('direct', 'block_rate_per_s'), 0)} conn/s, "
     f"ratio {fmt(mratio, 3)} (p50s: {fmt(mesh50)} vs {fmt(mdirect50)} us, {fmt(mratio50, 3)}); "
     f"client address kept: {'yes' if mesh_check and not bad_checks else 'NO'}"),
]
print("-- targets (the services issue)")
for name, ok, val in targets:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {val}")
print()
kv = [
    ("vip_1_conn_us", fmt(vip1)),
    ("vip_10k_conn_us", fmt(vip10k)),
    ("vip_10k_last_conn_us", fmt(last)),
    ("direct_conn_us", fmt(direct)),
    ("flat_ratio", fmt(flat, 3)),
    ("vip_direct_ratio", fmt(vd, 3)),
    ("nat_floor_conn_us", fmt(fdnat)),
    ("nat_floor_ratio", fmt(floor, 3)),
    ("vip_over_floor", fmt(share, 3)),
    ("vip_1_conn_per_s", fmt(rate1, 0)),
    ("vip_10k_conn_per_s", fmt(rate10k, 0)),
    ("direct_conn_per_s", fmt(rated, 0)),
    ("load_10k_ms", fmt(num(load.get("load_ms")), 0)),
    ("update_ms_p50", fmt(b50, 3)),
    ("update_ms_p99", fmt(b99, 3)),
    ("update_aff_ms_p50", fmt(a50, 3)),
    ("service_ms_p50", fmt(s50, 3)),
    ("mesh_ratio", fmt(mratio, 3)),
    ("mesh_ratio_p50", fmt(mratio50, 3)),
    ("mesh_conn_us", fmt(mesh50)),
    ("mesh_direct_conn_us", fmt(mdirect50)),
    ("mesh_over_floor", fmt(mesh_floor, 3)),
    ("docker_vip", dk.get("docker_vip", "NA")),
    ("docker_ingress", dk.get("docker_ingress", "NA")),
    ("targets", "PASS" if all(ok for _, ok, _ in targets) else "FAIL"),
]
print(" ".join(f"{k}={v}" for k, v in kv))
