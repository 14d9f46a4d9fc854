//! The overlay's kernel state against the control plane after a random sequence of joins,
//! leaves, host deaths and daemon restarts (needs root): after every step, each live host's
//! `vxlan0` holds exactly one FDB entry and its neighbour entries per endpoint the network's
//! table holds for the other hosts, and a namespace exactly where it has an endpoint.
//! `PLEXUS_OVERLAY_SEED` replays a sequence; `PLEXUS_OVERLAY_STEPS` (default 80) makes it
//! longer.

mod common;
mod overlay_harness;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::ok;
use overlay_harness::Cluster;
use plexus_cnm::{
    Desired, DesiredEndpoint, Driver, EndpointInfo, NetworkInfo, NodeDiscovery, ReconcileMode,
};
use plexus_drivers::overlay::{PeerRecord, PEER_TABLE};

/// xorshift64*: a reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// An endpoint the test made: host (from 1), network index, id, sandbox key, address.
struct Ep {
    host: usize,
    net: usize,
    id: String,
    key: String,
    ip: String,
}

async fn check(c: &Cluster, nets: &[NetworkInfo], eps: &[Ep], alive: &[bool], step: usize) {
    for (i, host) in c.hosts.iter().enumerate() {
        if !alive[i] {
            continue;
        }
        for (ni, net) in nets.iter().enumerate() {
            let mine = eps
                .iter()
                .filter(|e| e.host == i + 1 && e.net == ni)
                .count();
            let path = host.driver.netns_path(&net.id);
            assert_eq!(
                path.exists(),
                mine > 0,
                "step {step}: host {} net {ni}",
                i + 1
            );
            let table = c.hub.table(&net.id, PEER_TABLE);
            let own = IpAddr::V4(host.addr);
            assert_eq!(
                table.values().filter(|(_, owner)| *owner == own).count(),
                mine,
                "step {step}: host {} net {ni}: published",
                i + 1
            );
            if mine == 0 {
                continue;
            }
            let others: Vec<PeerRecord> = table
                .values()
                .filter(|(_, owner)| *owner != own)
                .map(|(v, _)| ok("decode", PeerRecord::decode(v)))
                .collect();
            let want_fdb: BTreeSet<([u8; 6], IpAddr)> =
                others.iter().map(|p| (p.mac, p.vtep)).collect();
            let want_ips: BTreeSet<IpAddr> = others.iter().flat_map(|p| p.ips()).collect();
            let (fdb, neigh) = host.tables(net).await;
            let got_fdb: BTreeSet<([u8; 6], IpAddr)> =
                fdb.iter().filter_map(|n| Some((n.mac?, n.ip?))).collect();
            let got_ips: BTreeSet<IpAddr> = neigh
                .iter()
                .filter_map(|n| n.ip)
                .filter(|ip| !ip.is_multicast())
                .collect();
            assert_eq!(
                got_fdb,
                want_fdb,
                "step {step}: host {} net {ni}: fdb",
                i + 1
            );
            assert_eq!(
                got_ips,
                want_ips,
                "step {step}: host {} net {ni}: neighbours",
                i + 1
            );
        }
    }
}

#[tokio::test]
async fn kernel_tables_match_the_control_plane_after_random_joins_leaves_kills_and_restarts() {
    need_root!();
    let seed = std::env::var("PLEXUS_OVERLAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_f5e7_u64);
    eprintln!("PLEXUS_OVERLAY_SEED={seed}");
    let mut rng = Rng(seed.max(1));
    let mut c = Cluster::new(3).await;
    let nets = vec![
        c.network("churn-a", "10.70.0.0/16", &[]).await,
        c.network("churn-b", "10.71.0.0/16", &[]).await,
    ];
    let mut alive = vec![true; 3];
    let mut eps: Vec<Ep> = Vec::new();
    let (mut kills, mut restarts) = (0, 0);
    let steps: usize = std::env::var("PLEXUS_OVERLAY_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    for step in 0..steps {
        let live: Vec<usize> = (1..=3).filter(|h| alive[h - 1]).collect();
        match rng.below(12) {
            0..=5 => {
                let host = live[rng.below(live.len())];
                let net = rng.below(nets.len());
                let sandbox = format!("c{step}");
                let ip = format!("10.7{net}.{}.{}", step / 200 % 256, step % 200 + 2);
                let id = c.attach(host, &nets[net], &sandbox, &ip).await;
                let key = c.host(host).sandboxes[&sandbox].0.path();
                eps.push(Ep {
                    host,
                    net,
                    id,
                    key,
                    ip,
                });
            }
            6..=8 => {
                let candidates: Vec<usize> =
                    (0..eps.len()).filter(|i| alive[eps[*i].host - 1]).collect();
                if let Some(&i) = candidates.get(rng.below(candidates.len().max(1))) {
                    let ep = eps.remove(i);
                    c.detach(ep.host, &nets[ep.net], &ep.id).await;
                }
            }
            9 | 10 if live.len() >= 2 => {
                let dead = live[rng.below(live.len())];
                let addr = IpAddr::V4(c.host(dead).addr);
                c.hub.kill(addr);
                alive[dead - 1] = false;
                kills += 1;
                let node = NodeDiscovery {
                    address: addr,
                    self_node: false,
                };
                for &h in live.iter().filter(|h| **h != dead) {
                    ok(
                        "discover_delete",
                        c.host(h).driver.discover_delete(&node).await,
                    );
                }
                c.hub.deliver().await;
            }
            _ => {
                let Some(back) = (1..=3).find(|h| !alive[h - 1]) else {
                    continue;
                };
                let driver = c.restart(back).await;
                let desired = Desired {
                    networks: nets.clone(),
                    endpoints: eps
                        .iter()
                        .filter(|e| e.host == back)
                        .map(|e| DesiredEndpoint {
                            handed_off: false,
                            info: EndpointInfo {
                                network_id: nets[e.net].id.clone(),
                                endpoint_id: e.id.clone(),
                                ipv4: Some(ok("ip", format!("{}/16", e.ip).parse())),
                                ipv6: None,
                                mac: None,
                                ports: Vec::new(),
                                options: Default::default(),
                            },
                            sandbox_key: e.key.clone(),
                            interface: Some("eth0".into()),
                        })
                        .collect(),
                };
                let report = ok(
                    "reconcile",
                    driver.reconcile(&desired, ReconcileMode::Startup).await,
                );
                assert!(report.unrepaired.is_empty(), "step {step}: {report:?}");
                alive[back - 1] = true;
                restarts += 1;
                c.hub.deliver().await;
            }
        }
        check(&c, &nets, &eps, &alive, step).await;
    }
    eprintln!(
        "{} endpoints left, {kills} kills, {restarts} restarts",
        eps.len()
    );
    assert!(
        kills > 0 && restarts > 0,
        "seed {seed} exercised no kill or restart"
    );
}
