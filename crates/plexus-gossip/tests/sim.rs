//! Deterministic simulations running the real membership and table code.

use std::collections::BTreeMap;
use std::time::Duration;

use plexus_gossip::sim::{Sim, SimConfig};
use plexus_gossip::{Config, EntryEventKind, Event, MemberState};

fn cfg(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        ..SimConfig::default()
    }
}

/// Visible entries of a table at every live node.
fn views(sim: &Sim, net: &str, table: &str) -> BTreeMap<u32, Vec<(String, Vec<u8>, u32)>> {
    sim.live()
        .into_iter()
        .filter_map(|i| sim.node(i).map(|n| (i, n.entries(net, table))))
        .collect()
}

fn all_agree(sim: &Sim, net: &str, table: &str, expect_len: usize) -> bool {
    let v = views(sim, net, table);
    let first = v.values().next().cloned().unwrap_or_default();
    first.len() == expect_len && v.values().all(|x| *x == first)
}

fn all_alive(sim: &Sim, n: usize) -> bool {
    sim.live().iter().all(|i| {
        sim.node(*i).is_some_and(|node| {
            let m = node.members();
            m.len() == n && m.iter().all(|x| x.state == MemberState::Alive)
        })
    })
}

#[test]
fn nodes_join_through_a_seed_and_tables_stay_in_their_network() {
    let n = 40u32;
    let mut sim = Sim::new(cfg(n as usize, 11));
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.join_network("blue", now).unwrap();
            if i % 2 == 0 {
                node.join_network("red", now).unwrap();
            }
            // Join through any member: each through a random earlier one.
            if i > 0 {
                node.join(&[(i * 7919) % i], now);
            }
        });
        sim.run_for(20);
    }
    sim.run_for(8_000);
    assert!(
        all_alive(&sim, n as usize),
        "every node sees every node alive"
    );
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.put("blue", "peers", &format!("b{i}"), b"x", now)
                .unwrap();
            if i % 2 == 0 {
                node.put("red", "peers", &format!("r{i}"), b"y", now)
                    .unwrap();
            } else {
                assert!(node.put("red", "peers", "nope", b"z", now).is_err());
            }
        });
    }
    sim.run_for(3_000);
    assert!(all_agree(&sim, "blue", "peers", n as usize));
    let red: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    for i in 0..n {
        let node = sim.node(i).unwrap();
        if i % 2 == 0 {
            assert_eq!(node.entries("red", "peers").len(), red.len());
        } else {
            assert!(
                node.table_dump("red").is_empty(),
                "red entries only reach red nodes"
            );
        }
    }
    // Diagnostics: everybody knows who is attached to red.
    let nets = sim.node(1).unwrap().networks();
    let red_info = nets.iter().find(|x| x.name == "red").unwrap();
    assert_eq!(red_info.nodes, red);
    assert!(!red_info.local);
}

#[test]
fn no_live_node_is_declared_dead_at_five_percent_loss() {
    let n = 40;
    let mut c = cfg(n, 5);
    c.loss = 0.05;
    let mut sim = Sim::new(c);
    sim.preload(&["n"]);
    sim.run_for(100_000);
    let deaths: Vec<_> = sim
        .take_events()
        .into_iter()
        .filter(|(_, _, e)| {
            matches!(
                e,
                Event::Member {
                    state: MemberState::Dead,
                    ..
                }
            )
        })
        .collect();
    assert!(deaths.is_empty(), "false deaths: {deaths:?}");
    assert!(sim.lost > 0);
    assert!(all_alive(&sim, n));
}

#[test]
fn every_live_node_converges_under_loss_with_kills() {
    let n = 60u32;
    let mut c = cfg(n as usize, 21);
    c.loss = 0.05;
    let mut sim = Sim::new(c);
    sim.preload(&["n"]);
    sim.run_for(1_000);
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.put("n", "t", &format!("k{i}"), &[i as u8], now)
                .unwrap()
        });
        sim.run_for(10);
    }
    sim.kill(3);
    sim.kill(40);
    sim.run_for(40_000);
    // Entries of the two failed owners are hidden everywhere; all others are visible.
    assert!(all_agree(&sim, "n", "t", n as usize - 2));
    for i in sim.live() {
        let node = sim.node(i).unwrap();
        assert_eq!(node.member_state(&3), Some(MemberState::Dead));
        assert_eq!(node.member_state(&40), Some(MemberState::Dead));
    }
}

#[test]
fn partition_heals_within_one_sync_interval() {
    let n = 24u32;
    let mut sim = Sim::new(cfg(n as usize, 33));
    sim.preload(&["n"]);
    sim.run_for(2_000);
    sim.partition(|i| (i % 2) as u8);
    // Long enough for each side to declare the other dead.
    sim.run_for(70_000);
    let side_view = sim.node(0).unwrap().member_state(&1);
    assert_eq!(side_view, Some(MemberState::Dead));
    // Both sides keep writing during the partition.
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.put("n", "t", &format!("k{i}"), b"during", now)
                .unwrap()
        });
    }
    sim.run_for(2_000);
    sim.heal();
    let sync = Duration::from_secs(30).as_millis() as u64;
    sim.run_for(sync);
    assert!(all_alive(&sim, n as usize), "membership healed");
    assert!(all_agree(&sim, "n", "t", n as usize), "tables healed");
}

#[test]
fn failed_owner_entries_are_hidden_and_restored_when_it_returns() {
    let n = 12u32;
    let mut sim = Sim::new(cfg(n as usize, 44));
    sim.preload(&["n"]);
    sim.run_for(1_000);
    sim.with_node(5, |node, now| node.put("n", "t", "svc", b"v", now).unwrap());
    sim.run_for(2_000);
    assert!(all_agree(&sim, "n", "t", 1));
    sim.take_events();
    // Node 5 is cut off: the others declare it dead and hide its entry.
    sim.partition(|i| (i == 5) as u8);
    sim.run_for(40_000);
    assert_eq!(
        sim.node(0).unwrap().member_state(&5),
        Some(MemberState::Dead)
    );
    assert_eq!(sim.node(0).unwrap().get("n", "t", "svc"), None);
    let deletes = sim
        .take_events()
        .into_iter()
        .filter(|(_, node, e)| {
            *node != 5 && matches!(e, Event::Entry(x) if x.kind == EntryEventKind::Delete)
        })
        .count();
    assert_eq!(deletes, n as usize - 1, "watchers saw the entry go");
    // It comes back before the reap interval: the entry is restored.
    sim.heal();
    sim.run_for(30_000);
    assert!(all_alive(&sim, n as usize));
    assert!(all_agree(&sim, "n", "t", 1));
    assert_eq!(
        sim.node(0).unwrap().get("n", "t", "svc"),
        Some(b"v".to_vec())
    );
}

#[test]
fn restarted_node_with_empty_state_rejoins_and_catches_up() {
    let n = 20u32;
    let mut sim = Sim::new(cfg(n as usize, 55));
    sim.preload(&["n"]);
    sim.run_for(1_000);
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.put("n", "t", &format!("k{i}"), b"1", now).unwrap()
        });
    }
    sim.run_for(2_000);
    sim.kill(7);
    sim.run_for(30_000);
    assert_eq!(
        sim.node(0).unwrap().member_state(&7),
        Some(MemberState::Dead)
    );
    sim.restart(7, &[0]);
    sim.with_node(7, |node, now| node.join_network("n", now).unwrap());
    sim.run_for(5_000);
    assert!(all_alive(&sim, n as usize));
    // Its previous life's entry is retracted by the node itself; the rest is caught up.
    assert!(all_agree(&sim, "n", "t", n as usize - 1));
    assert_eq!(sim.node(3).unwrap().get("n", "t", "k7"), None);
    sim.with_node(7, |node, now| node.put("n", "t", "k7", b"2", now).unwrap());
    sim.run_for(3_000);
    assert!(all_agree(&sim, "n", "t", n as usize));
    assert_eq!(
        sim.node(3).unwrap().get("n", "t", "k7"),
        Some(b"2".to_vec())
    );
}

#[test]
fn leaving_a_network_or_the_cluster_removes_entries_elsewhere() {
    let n = 10u32;
    let mut sim = Sim::new(cfg(n as usize, 66));
    sim.preload(&["n"]);
    sim.run_for(1_000);
    for i in 0..n {
        sim.with_node(i, |node, now| {
            node.put("n", "t", &format!("k{i}"), b"1", now).unwrap()
        });
    }
    sim.run_for(2_000);
    assert!(all_agree(&sim, "n", "t", n as usize));
    sim.with_node(2, |node, now| node.leave_network("n", now));
    sim.run_for(2_000);
    assert!(
        sim.node(0)
            .unwrap()
            .table_dump("n")
            .iter()
            .all(|e| e.owner != 2),
        "purged"
    );
    assert_eq!(sim.node(2).unwrap().entries("n", "t").len(), 0);
    sim.with_node(4, |node, now| node.leave(now));
    sim.run_for(2_000);
    sim.kill(4);
    for i in sim.live() {
        if i != 2 {
            assert_eq!(sim.node(i).unwrap().entries("n", "t").len(), n as usize - 2);
        }
        assert_eq!(
            sim.node(i).unwrap().member_state(&4),
            Some(MemberState::Left)
        );
    }
    // Delete with a tombstone; the tombstone is reaped later.
    sim.with_node(0, |node, now| node.delete("n", "t", "k0", now).unwrap());
    sim.run_for(2_000);
    assert_eq!(sim.node(9).unwrap().get("n", "t", "k0"), None);
    assert!(sim
        .node(9)
        .unwrap()
        .table_dump("n")
        .iter()
        .any(|e| e.key == "k0" && e.deleted));
}

#[test]
fn tombstones_are_reaped() {
    let mut c = cfg(5, 77);
    c.node.reap_interval = Duration::from_secs(10);
    let mut sim = Sim::new(c);
    sim.preload(&["n"]);
    sim.run_for(1_000);
    sim.with_node(1, |node, now| node.put("n", "t", "k", b"1", now).unwrap());
    sim.run_for(1_000);
    sim.with_node(1, |node, now| node.delete("n", "t", "k", now).unwrap());
    sim.run_for(1_000);
    assert!(sim
        .node(3)
        .unwrap()
        .table_dump("n")
        .iter()
        .any(|e| e.deleted));
    sim.run_for(15_000);
    for i in 0..5 {
        assert!(
            sim.node(i).unwrap().table_dump("n").is_empty(),
            "node {i} reaped"
        );
    }
}

#[test]
fn key_rotation_loses_no_message() {
    let n = 10u32;
    let mut sim = Sim::new(cfg(n as usize, 88));
    sim.preload(&["n"]);
    sim.run_for(1_000);
    let old = [7u8; 32];
    let new = [9u8; 32];
    let mut k = 0;
    let mut write = |sim: &mut Sim| {
        for i in 0..n {
            sim.with_node(i, |node, now| {
                node.put("n", "t", &format!("k{k}"), b"v", now).unwrap()
            });
            k += 1;
            sim.run_for(50);
        }
    };
    for i in 0..n {
        sim.with_node(i, |node, _| node.keyring_mut().add(new).unwrap());
        write(&mut sim);
    }
    for i in 0..n {
        sim.with_node(i, |node, _| node.keyring_mut().use_key(&new).unwrap());
        write(&mut sim);
    }
    for i in 0..n {
        sim.with_node(i, |node, _| node.keyring_mut().remove(&old).unwrap());
        write(&mut sim);
    }
    sim.run_for(3_000);
    assert!(all_agree(&sim, "n", "t", 3 * (n * n) as usize));
    for i in 0..n {
        assert_eq!(sim.node(i).unwrap().stats().dropped_unauthenticated, 0);
    }
    assert!(all_alive(&sim, n as usize));
}

#[test]
fn simulation_is_deterministic() {
    let run = || {
        let mut c = cfg(30, 99);
        c.loss = 0.1;
        let mut sim = Sim::new(c);
        sim.preload(&["n"]);
        sim.run_for(1_000);
        sim.with_node(3, |node, now| node.put("n", "t", "k", b"v", now).unwrap());
        sim.kill(9);
        sim.run_for(20_000);
        (sim.bytes_sent, sim.lost, sim.take_events().len())
    };
    assert_eq!(run(), run());
}

#[test]
fn entries_larger_than_a_datagram_travel_over_streams() {
    let n = 30u32;
    let mut sim = Sim::new(cfg(n as usize, 101));
    sim.preload(&["n"]);
    sim.run_for(1_000);
    let big = vec![0xAB; 5000];
    sim.with_node(4, |node, now| node.put("n", "t", "big", &big, now).unwrap());
    sim.with_node(5, |node, now| {
        node.put("n", "t", "small", b"s", now).unwrap()
    });
    sim.run_for(3_000);
    assert!(all_agree(&sim, "n", "t", 2));
    assert_eq!(sim.node(17).unwrap().get("n", "t", "big"), Some(big));
    for i in 0..n {
        assert_eq!(sim.node(i).unwrap().stats().dropped_oversize, 0);
    }
}

/// A restarted node's table of a network is not "synced" (complete) until it has compared
/// it with a peer's; then it holds the peer's entries. A node alone on a network is synced
/// once it has joined the cluster.
#[test]
fn a_restarted_nodes_table_is_synced_only_after_a_peer_answered() {
    let mut sim = Sim::new(cfg(3, 5));
    for i in 0..3u32 {
        sim.with_node(i, |node, now| {
            node.join_network("blue", now).unwrap();
            if i > 0 {
                node.join(&[0], now);
            }
        });
    }
    sim.with_node(1, |node, now| {
        node.put("blue", "peers", "ep1", b"one", now).unwrap()
    });
    sim.with_node(0, |node, now| node.join_network("lonely", now).unwrap());
    sim.run_for(3_000);
    assert!(all_agree(&sim, "blue", "peers", 1));
    for i in 0..3 {
        assert!(sim.node(i).unwrap().network_synced("blue"), "node {i}");
    }
    assert!(sim.node(0).unwrap().network_synced("lonely"));
    assert!(
        !sim.node(1).unwrap().network_synced("lonely"),
        "not joined there"
    );

    sim.kill(2);
    sim.run_for(500);
    sim.restart(2, &[0]);
    sim.with_node(2, |node, now| node.join_network("blue", now).unwrap());
    assert!(!sim.node(2).unwrap().network_synced("blue"));
    assert!(sim.node(2).unwrap().entries("blue", "peers").is_empty());
    sim.run_for(2_000);
    let node = sim.node(2).unwrap();
    assert!(node.network_synced("blue"));
    assert_eq!(node.entries("blue", "peers").len(), 1);
}

/// A change made on a node goes out at once, not at its next gossip round: with the gossip
/// interval at 200 ms and network delays of at most 10 ms, every put reaches the two other
/// nodes within a tenth of the interval plus the delay, whenever in the round it is made.
#[test]
fn a_local_change_goes_out_before_the_next_gossip_round() {
    let mut sim = Sim::new(cfg(3, 21));
    for i in 0..3u32 {
        sim.with_node(i, |node, now| {
            node.join_network("blue", now).unwrap();
            if i > 0 {
                node.join(&[0], now);
            }
        });
    }
    sim.run_for(3_000);
    assert!(all_alive(&sim, 3));
    let interval = Config::default().gossip_interval.as_millis() as u64;
    let bound = interval / 10 + 10;
    let mut worst = 0;
    for k in 0..40u64 {
        // Spread the puts over the round: 0, 37, 74, ... ms after the last one arrived.
        sim.run_for(1 + (k * 37) % interval);
        let key = format!("ep{k}");
        let from = (k % 3) as u32;
        sim.with_node(from, |node, now| {
            node.put("blue", "peers", &key, b"x", now).unwrap()
        });
        let mut waited = 0;
        while !(0..3u32).all(|i| sim.node(i).unwrap().get("blue", "peers", &key).is_some()) {
            assert!(waited < 1_000, "{key} never reached every node");
            sim.run_for(1);
            waited += 1;
        }
        worst = worst.max(waited);
    }
    assert!(
        worst <= bound,
        "a put took {worst} ms to reach every node (bound {bound} ms)"
    );
}
