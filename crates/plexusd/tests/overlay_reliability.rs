//! The overlay across real daemons when things go wrong: a host's plexusd killed with -9 is
//! forgotten by the others (its FDB and neighbour entries dropped) within the failure-
//! detection time and reachable again once it is back; stopping plexusd leaves overlay
//! traffic flowing; a partition on the underlay heals within one sync interval of its end
//! with every host's kernel state matching the others'; and after a seeded random loop of
//! joins, leaves, kills and restarts, every host's kernel state matches the tables. Needs root.

// Hosts and their sandboxes go by number.
#![allow(clippy::needless_range_loop)]

mod multihost;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use multihost::{alive, nft, wait_for, Cluster, ClusterStore, Host};

fn pings(h: &Host, from: &str, to: &str) -> Result<(), String> {
    if h.ping(from, to) {
        Ok(())
    } else {
        Err(format!("{from} on host {} cannot ping {to}", h.n))
    }
}

/// What every host's VXLAN device must hold for network `net` (named `name`), from the
/// endpoints the running hosts list: the remote ones' MACs (FDB, towards their host) and
/// addresses (neighbours). Compares each running host's kernel state with it.
fn kernel_matches_tables(hosts: &[Host], name: &str, net: &str) -> Result<(), String> {
    let running: Vec<&Host> = hosts.iter().filter(|h| h.running()).collect();
    let mut all = Vec::new();
    for h in &running {
        for (sb, ip, mac) in h.endpoints_on(name) {
            all.push((h.addr(), sb, ip, mac));
        }
    }
    for h in &running {
        let local_macs: BTreeSet<&str> = all
            .iter()
            .filter(|e| e.0 == h.addr())
            .map(|e| e.3.as_str())
            .collect();
        if local_macs.is_empty() {
            continue;
        }
        let mut fdb: Vec<String> = all
            .iter()
            .filter(|e| e.0 != h.addr())
            .map(|e| format!("{} dst {}", e.3, e.0))
            .collect();
        fdb.sort();
        let mut neigh: Vec<String> = all
            .iter()
            .filter(|e| e.0 != h.addr())
            .map(|e| format!("{} {}", e.2, e.3))
            .collect();
        neigh.sort();
        let got_fdb = h.overlay_fdb(net);
        let got_neigh = h.overlay_neigh(net);
        if got_fdb != fdb || got_neigh != neigh {
            return Err(format!(
                "host {}: FDB {got_fdb:?} (want {fdb:?}), neighbours {got_neigh:?} (want {neigh:?})",
                h.n
            ));
        }
    }
    Ok(())
}

#[test]
fn a_killed_host_is_forgotten_in_time_and_reachable_when_back() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(3, ClusterStore::etcd());
    let net = c.hosts[0].create_overlay("ov", "10.241.0.0/24");
    for i in 0..3 {
        c.hosts[i].ok(&["sandbox", "create", &format!("k{i}"), "--network", "ov"]);
    }
    let ips: Vec<String> = (0..3)
        .map(|i| c.hosts[i].sandbox_ip(&format!("k{i}"), None))
        .collect();
    for i in 0..3 {
        for j in (0..3).filter(|&j| j != i) {
            wait_for("every pair pinging", Duration::from_secs(20), || {
                pings(&c.hosts[i], &format!("k{i}"), &ips[j])
            });
        }
    }
    wait_for("kernel state", Duration::from_secs(10), || {
        kernel_matches_tables(&c.hosts, "ov", &net)
    });
    let bound = Duration::from_millis(
        c.hosts[0].inspect()["FailureDetectionMs"]
            .as_u64()
            .unwrap_or(0),
    );
    assert!(bound > Duration::ZERO);

    let killed = Instant::now();
    c.hosts[2].kill9();
    for i in 0..2 {
        let left = bound.saturating_sub(killed.elapsed());
        wait_for("host 3's entries dropped", left, || {
            let fdb = c.hosts[i].overlay_fdb(&net);
            let neigh = c.hosts[i].overlay_neigh(&net);
            if fdb.iter().any(|e| e.ends_with("10.99.0.3"))
                || neigh.iter().any(|e| e.starts_with(&ips[2]))
            {
                Err(format!("host {}: {fdb:?} {neigh:?}", i + 1))
            } else {
                Ok(())
            }
        });
    }
    eprintln!(
        "host 3 forgotten after {} ms (bound {} ms)",
        killed.elapsed().as_millis(),
        bound.as_millis()
    );
    // The survivors still talk.
    pings(&c.hosts[0], "k0", &ips[1]).unwrap_or_else(|e| panic!("{e}"));

    // Back: its sandbox, untouched in the kernel, is reachable again from both.
    c.hosts[2].start();
    c.wait_alive(3);
    for i in 0..2 {
        wait_for("k2 reachable again", Duration::from_secs(20), || {
            pings(&c.hosts[i], &format!("k{i}"), &ips[2])
        });
    }
    wait_for(
        "kernel state after the return",
        Duration::from_secs(10),
        || kernel_matches_tables(&c.hosts, "ov", &net),
    );
}

#[test]
fn stopping_plexusd_leaves_overlay_traffic_flowing() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(2, ClusterStore::etcd());
    c.hosts[0].create_overlay("ov", "10.242.0.0/24");
    c.hosts[0].ok(&["sandbox", "create", "s0", "--network", "ov"]);
    c.hosts[1].ok(&["sandbox", "create", "s1", "--network", "ov"]);
    let ip0 = c.hosts[0].sandbox_ip("s0", None);
    let ip1 = c.hosts[1].sandbox_ip("s1", None);
    wait_for("s0 pinging s1", Duration::from_secs(20), || {
        pings(&c.hosts[0], "s0", &ip1)
    });
    wait_for("s1 pinging s0", Duration::from_secs(20), || {
        pings(&c.hosts[1], "s1", &ip0)
    });
    let net = c.hosts[0].network_id("ov");
    // Both ways, every 200 ms for 3 s, while host 1's plexusd is stopped, then through its
    // restart: not one ping lost.
    c.hosts[0].stop();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        pings(&c.hosts[0], "s0", &ip1).unwrap_or_else(|e| panic!("with plexusd stopped: {e}"));
        pings(&c.hosts[1], "s1", &ip0).unwrap_or_else(|e| panic!("with plexusd stopped: {e}"));
        std::thread::sleep(Duration::from_millis(200));
    }
    c.hosts[0].start();
    let state = |c: &Cluster| {
        format!(
            "host 1 FDB {:?}, host 2 FDB {:?}",
            c.hosts[0].overlay_fdb(&net),
            c.hosts[1].overlay_fdb(&net)
        )
    };
    for _ in 0..10 {
        pings(&c.hosts[0], "s0", &ip1)
            .unwrap_or_else(|e| panic!("after the restart: {e}; {}", state(&c)));
        pings(&c.hosts[1], "s1", &ip0)
            .unwrap_or_else(|e| panic!("after the restart: {e}; {}", state(&c)));
        std::thread::sleep(Duration::from_millis(200));
    }
    c.wait_alive(2);
}

#[test]
fn a_partition_heals_within_one_sync_interval() {
    plexus_testkit::require_root();
    let c = Cluster::start(3, ClusterStore::etcd());
    let h = &c.hosts;
    let net = h[0].create_overlay("ov", "10.243.0.0/24");
    for i in 0..3 {
        h[i].ok(&["sandbox", "create", &format!("p{i}"), "--network", "ov"]);
    }
    wait_for("kernel state", Duration::from_secs(20), || {
        kernel_matches_tables(h, "ov", &net)
    });
    let bound = Duration::from_millis(h[0].inspect()["FailureDetectionMs"].as_u64().unwrap_or(0));
    // Host 3 cut off from the others on the underlay (its gossip, its VXLAN traffic).
    nft(
        &c.underlay().ns,
        "table bridge partition {
           chain forward { type filter hook forward priority 0; policy accept;
             iifname \"u3\" drop; oifname \"u3\" drop; }
         }",
    );
    for i in 0..2 {
        wait_for(
            "host 3 dead on this side",
            bound + Duration::from_secs(2),
            || {
                let m = h[i].members();
                if m.iter().any(|(a, s)| a == "10.99.0.3:7946" && s == "dead") {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            },
        );
    }
    // Changes on both sides while apart.
    h[0].ok(&["sandbox", "create", "p3", "--network", "ov"]);
    h[1].ok(&["sandbox", "rm", "p1"]);
    h[2].ok(&["sandbox", "create", "p4", "--network", "ov"]);
    let sync = Duration::from_secs(30);
    nft(&c.underlay().ns, "delete table bridge partition");
    let healed = Instant::now();
    wait_for(
        "every host's kernel state matching after the heal",
        sync + Duration::from_secs(5),
        || {
            for x in h {
                alive(x, 3)?;
            }
            kernel_matches_tables(h, "ov", &net)
        },
    );
    eprintln!("partition healed after {} ms", healed.elapsed().as_millis());
    let p4 = h[2].sandbox_ip("p4", None);
    wait_for(
        "p3 pinging p4 across the healed link",
        Duration::from_secs(5),
        || pings(&h[0], "p3", &p4),
    );
}

/// Seeded: `PLEXUS_SEED` replays a run, `PLEXUS_KILLS` sets the number of kills (30 here;
/// `bench/overlay/kill-loop.sh` runs hundreds, as a soak outside the suite).
#[test]
fn kernel_state_matches_the_tables_after_a_kill_loop() {
    plexus_testkit::require_root();
    let seed: u64 = std::env::var("PLEXUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let kills: usize = std::env::var("PLEXUS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("kill loop: PLEXUS_SEED={seed} PLEXUS_KILLS={kills}");
    let mut rng = seed | 1;
    let mut next = move |n: usize| {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let mut c = Cluster::start(3, ClusterStore::etcd());
    let net = c.hosts[0].create_overlay("ov", "10.244.0.0/22");
    let mut made = 0usize;
    let mut done_kills = 0usize;
    let started = Instant::now();
    while done_kills < kills {
        let i = next(3);
        match next(5) {
            0 | 1 if c.hosts[i].running() => {
                // A join on a running host.
                let name = format!("x{made}");
                made += 1;
                c.hosts[i].ok(&["sandbox", "create", &name, "--network", "ov"]);
            }
            2 if c.hosts[i].running() => {
                // A leave.
                let local = c.hosts[i].endpoints_on("ov");
                if !local.is_empty() {
                    let victim = &local[next(local.len())].0;
                    c.hosts[i].ok(&["sandbox", "rm", victim]);
                }
            }
            _ => {
                // kill -9, or a restart of a killed one; at most one host down at a time
                // keeps the other two's view to check.
                if c.hosts[i].running() {
                    if c.hosts.iter().all(|h| h.running()) {
                        c.hosts[i].kill9();
                        done_kills += 1;
                    }
                } else {
                    c.hosts[i].start();
                }
            }
        }
    }
    for h in c.hosts.iter_mut().filter(|h| !h.running()) {
        h.start();
    }
    c.wait_alive(3);
    eprintln!(
        "{done_kills} kills, {made} sandboxes made in {} s",
        started.elapsed().as_secs()
    );
    wait_for(
        "every host's kernel state matching the tables",
        Duration::from_secs(40),
        || kernel_matches_tables(&c.hosts, "ov", &net),
    );
    // And the data plane agrees: a sandbox on each host with a local endpoint reaches one on
    // every other.
    let per_host: Vec<Vec<(String, String, String)>> =
        c.hosts.iter().map(|h| h.endpoints_on("ov")).collect();
    for i in 0..3 {
        let Some((from, _, _)) = per_host[i].first() else {
            continue;
        };
        for j in (0..3).filter(|&j| j != i) {
            if let Some((_, to, _)) = per_host[j].first() {
                wait_for("reach after the loop", Duration::from_secs(5), || {
                    pings(&c.hosts[i], from, to)
                });
            }
        }
    }
}
