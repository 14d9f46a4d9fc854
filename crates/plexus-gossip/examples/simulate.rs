//! Benchmark: runs the real protocol code for N nodes in the deterministic simulator and
//! prints, as its last line,
//! `nodes=N convergence_p50_ms=… convergence_p99_ms=… detect_p99_ms=… bytes_per_node_per_s=…
//! unconverged=… undetected=… false_deaths=…`.
//!
//! `cargo run --release -p plexus-gossip --example simulate -- --nodes 1000 [--seed S]
//! [--loss 0.0] [--interval-ms 200] [--writes 40] [--kills 5] [--join]`
//!
//! Every node runs with the runtime's settings (`plexus_gossip::Config::default()`, what
//! plexusd gives its gossip), `--interval-ms` aside. An entry that never reaches every node,
//! or a killed node that some live node never declares dead, is not dropped from the
//! percentiles: it counts as slower than any measured one (a percentile that lands on it
//! prints `inf`), it is counted in `unconverged=`/`undetected=`, and the program exits with
//! status 1.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use plexus_gossip::sim::{Sim, SimConfig};
use plexus_gossip::{EntryEventKind, Event, MemberState};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` percentile of `v` plus `missing` samples that never arrived (slower than any),
/// as printed: `inf` when it lands on one of those, `na` when there is no sample at all.
fn pct(v: &mut [u64], missing: usize, p: f64) -> String {
    let n = v.len() + missing;
    if n == 0 {
        return "na".to_string();
    }
    v.sort_unstable();
    let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    v.get(i).map_or_else(|| "inf".to_string(), u64::to_string)
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = arg(&args, "--nodes", 100);
    let seed: u64 = arg(&args, "--seed", 1);
    let loss: f64 = arg(&args, "--loss", 0.0);
    let runtime = plexus_gossip::Config::default();
    let interval: u64 = arg(
        &args,
        "--interval-ms",
        runtime.gossip_interval.as_millis() as u64,
    );
    let writes: usize = arg(&args, "--writes", 40);
    let kills: usize = arg(&args, "--kills", (nodes / 10).clamp(1, 5)).min(nodes.saturating_sub(2));
    let delay_max: u64 = arg(&args, "--delay-ms", 10);
    let join = args.iter().any(|a| a == "--join");
    let started = Instant::now();

    let mut cfg = SimConfig {
        nodes,
        seed,
        loss,
        delay_min_ms: 1,
        delay_max_ms: delay_max.max(1),
        node: runtime,
        ..SimConfig::default()
    };
    cfg.node.gossip_interval = Duration::from_millis(interval.max(1));
    let sync_ms = cfg.node.sync_interval.as_millis() as u64;
    eprintln!(
        "# settings: gossip every {:?} to {} peers, probe every {:?} (timeout {:?}), suspicion x{} (Lifeguard max x{}), retransmit x{}, anti-entropy every {:?}; delay 1-{} ms, loss {loss}",
        cfg.node.gossip_interval,
        cfg.node.gossip_fanout,
        cfg.node.probe_interval,
        cfg.node.probe_timeout,
        cfg.node.suspicion_mult,
        cfg.node.suspicion_max_timeout_mult,
        cfg.node.retransmit_mult,
        cfg.node.sync_interval,
        cfg.delay_max_ms,
    );
    let mut sim = Sim::new(cfg);
    let net = "bench";
    if join {
        for i in 0..nodes as u32 {
            sim.with_node(i, |n, now| {
                let _ = n.join_network(net, now);
                if i > 0 {
                    n.join(&[0], now);
                }
            });
            sim.run_for(5);
        }
        sim.run_for(10_000);
    } else {
        sim.preload(&[net]);
        sim.run_for(2_000);
    }
    let members_ok = sim
        .live()
        .iter()
        .filter(|i| {
            sim.node(**i)
                .is_some_and(|n| n.active_members() + 1 == nodes)
        })
        .count();
    sim.take_events();
    eprintln!(
        "# bootstrap: {members_ok}/{nodes} nodes see every member ({:?} wall)",
        started.elapsed()
    );

    // Idle bandwidth over one sync interval.
    let b0 = sim.total_tx_bytes();
    sim.run_for(sync_ms);
    let idle_bytes = sim.total_tx_bytes() - b0;
    let bytes_per_node_per_s = idle_bytes as f64 / nodes as f64 / (sync_ms as f64 / 1000.0);
    sim.take_events();
    eprintln!(
        "# idle: {bytes_per_node_per_s:.0} B/node/s ({:?} wall)",
        started.elapsed()
    );

    // Convergence: entries written at random nodes, 250 ms apart.
    let mut rng = plexus_gossip::rng::Rng::new(seed ^ 0x5eed);
    let mut written: HashMap<String, u64> = HashMap::new();
    for w in 0..writes {
        let writer = rng.below(nodes) as u32;
        let key = format!("k{w}");
        let k2 = key.clone();
        sim.with_node(writer, |n, now| {
            let _ = n.put(net, "t", &k2, b"value", now);
        });
        written.insert(key, sim.now);
        sim.run_for(250);
    }
    sim.run_for(10_000);
    let mut seen: HashMap<String, HashMap<u32, u64>> = HashMap::new();
    for (at, node, ev) in sim.take_events() {
        if let Event::Entry(e) = ev {
            if e.kind == EntryEventKind::Create && written.contains_key(&e.key) {
                seen.entry(e.key).or_default().entry(node).or_insert(at);
            }
        }
    }
    let mut conv = Vec::new();
    let mut unconverged = 0;
    for (k, t0) in &written {
        match seen.get(k) {
            Some(m) if m.len() == nodes => conv.push(m.values().max().copied().unwrap_or(*t0) - t0),
            other => {
                unconverged += 1;
                eprintln!(
                    "# !! entry {k} reached {} of {nodes} nodes in {} ms",
                    other.map_or(0, HashMap::len),
                    sim.now - t0
                );
            }
        }
    }
    eprintln!(
        "# convergence: {} of {} entries reached all {nodes} nodes ({unconverged} did not) ({:?} wall)",
        conv.len(),
        writes,
        started.elapsed()
    );

    // Failure detection: kill some nodes at once.
    let mut victims = HashSet::new();
    while victims.len() < kills {
        victims.insert(rng.below(nodes) as u32);
    }
    let t_kill = sim.now;
    for v in &victims {
        sim.kill(*v);
    }
    let live = nodes - victims.len();
    let mut dead_seen: HashMap<u32, HashSet<u32>> = HashMap::new();
    let mut detect = Vec::new();
    let mut false_dead = 0usize;
    let deadline = t_kill + 180_000;
    while sim.now < deadline && detect.len() < victims.len() {
        sim.run_for(1_000);
        for (at, node, ev) in sim.take_events() {
            if let Event::Member {
                node: who,
                state: MemberState::Dead,
            } = ev
            {
                if victims.contains(&who) {
                    let s = dead_seen.entry(who).or_default();
                    if s.insert(node) && s.len() == live {
                        detect.push(at - t_kill);
                    }
                } else {
                    false_dead += 1;
                }
            }
        }
    }
    eprintln!(
        "# detection: {} of {} killed nodes seen dead by all {live} live nodes; false deaths: {false_dead}; lost datagrams: {}; peak RSS {} MiB; {:?} wall",
        detect.len(),
        victims.len(),
        sim.lost,
        peak_rss_mb(),
        started.elapsed()
    );
    eprintln!("# detect times (ms): {detect:?}");
    let undetected = victims.len() - detect.len();
    for v in &victims {
        let by = dead_seen.get(v).map_or(0, HashSet::len);
        if by < live {
            eprintln!(
                "# !! killed node {v} seen dead by {by} of {live} live nodes after {} ms",
                sim.now - t_kill
            );
        }
    }
    let c50 = pct(&mut conv.clone(), unconverged, 0.5);
    let c99 = pct(&mut conv, unconverged, 0.99);
    let d99 = pct(&mut detect, undetected, 0.99);
    if unconverged > 0 || undetected > 0 {
        eprintln!(
            "# FAILED: {unconverged} of {writes} entries never reached every node, {undetected} of {} killed nodes never seen dead by every live node",
            victims.len()
        );
    }
    println!(
        "nodes={nodes} convergence_p50_ms={c50} convergence_p99_ms={c99} detect_p99_ms={d99} bytes_per_node_per_s={bytes_per_node_per_s:.0} unconverged={unconverged} undetected={undetected} false_deaths={false_dead}"
    );
    if unconverged > 0 || undetected > 0 {
        std::process::exit(1);
    }
}
