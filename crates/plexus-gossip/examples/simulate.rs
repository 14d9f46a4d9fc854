//! Benchmark: runs the real protocol code for N nodes in the deterministic simulator and
//! prints, as its last line,
//! `nodes=N convergence_p50_ms=… convergence_p99_ms=… detect_p99_ms=… bytes_per_node_per_s=…`.
//!
//! `cargo run --release -p plexus-gossip --example simulate -- --nodes 1000 [--seed S]
//! [--loss 0.0] [--interval-ms 200] [--writes 40] [--kills 5] [--join]`

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

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
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
    let interval: u64 = arg(&args, "--interval-ms", 200);
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
        ..SimConfig::default()
    };
    cfg.node.gossip_interval = Duration::from_millis(interval.max(1));
    let sync_ms = cfg.node.sync_interval.as_millis() as u64;
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
            _ => unconverged += 1,
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
    let c50 = pct(&mut conv.clone(), 0.5);
    let c99 = pct(&mut conv, 0.99);
    let d99 = pct(&mut detect, 0.99);
    println!(
        "nodes={nodes} convergence_p50_ms={c50} convergence_p99_ms={c99} detect_p99_ms={d99} bytes_per_node_per_s={:.0}",
        bytes_per_node_per_s
    );
}
