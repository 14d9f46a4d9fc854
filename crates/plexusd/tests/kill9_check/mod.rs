//! The kill -9 loop's checks. What the store holds, as the API shows it ([`Snapshot`]);
//! the kernel against it ([`mismatches`]: links, sandbox namespaces, addresses, default
//! routes, nftables elements); and the store read directly after a clean stop
//! ([`store_leaks`]: IPAM keys against network and endpoint records).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::kill9_daemon::Daemon;

mod kernel;
mod store;

pub use kernel::mismatches;
pub use store::store_leaks;

// ---------------------------------------------------------------------------------------------
// What the store holds, as the API shows it.

#[derive(Debug, Clone)]
pub struct Net {
    pub id: String,
    pub subnet: (Ipv4Addr, u8),
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet and gateway, on networks with IPv6.
    pub subnet6: Option<(Ipv6Addr, u8)>,
    pub gateway6: Option<Ipv6Addr>,
    /// Endpoint id → sandbox id, from the network's records.
    pub endpoints: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Ep {
    pub network_id: String,
    pub id: String,
    pub interface: String,
    pub ip: Option<(Ipv4Addr, u8)>,
    pub ip6: Option<(Ipv6Addr, u8)>,
    /// (proto, host port, container port).
    pub ports: BTreeSet<(String, u16, u16)>,
}

#[derive(Debug, Clone)]
pub struct Sbx {
    pub id: String,
    pub netns: String,
    pub owned: bool,
    pub endpoints: Vec<Ep>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nets: BTreeMap<String, Net>,
    pub sbxs: BTreeMap<String, Sbx>,
}

fn cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

fn cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Snapshot {
    pub fn read(d: &Daemon) -> Self {
        let mut snap = Snapshot::default();
        let list = d.ok("GET", "/networks", None);
        for n in list.as_array().cloned().unwrap_or_default() {
            // The pre-defined host and none networks: no subnet, nothing in the kernel.
            if matches!(text(&n["Driver"]).as_str(), "host" | "null") {
                continue;
            }
            let name = text(&n["Name"]);
            let full = d.ok("GET", &format!("/networks/{}", text(&n["Id"])), None);
            let configs = full["IPAM"]["Config"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let is_v6 = |c: &&Value| text(&c["Subnet"]).contains(':');
            let config = configs
                .iter()
                .find(|c| !is_v6(c))
                .cloned()
                .unwrap_or_default();
            let config6 = configs.iter().find(is_v6);
            let endpoints = full["Containers"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(sandbox, c)| (text(&c["EndpointID"]), sandbox.clone()))
                        .collect()
                })
                .unwrap_or_default();
            snap.nets.insert(
                name.clone(),
                Net {
                    id: text(&full["Id"]),
                    subnet: cidr(&text(&config["Subnet"]))
                        .unwrap_or_else(|| panic!("network {name} has no IPv4 subnet: {full}")),
                    gateway: text(&config["Gateway"])
                        .parse()
                        .unwrap_or_else(|_| panic!("network {name} has no gateway: {full}")),
                    subnet6: config6.and_then(|c| cidr6(&text(&c["Subnet"]))),
                    gateway6: config6.and_then(|c| text(&c["Gateway"]).parse().ok()),
                    endpoints,
                },
            );
        }
        let list = d.ok("GET", "/plexus/sandboxes", None);
        for s in list.as_array().cloned().unwrap_or_default() {
            let endpoints = s["Endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| Ep {
                    network_id: text(&e["NetworkID"]),
                    id: text(&e["EndpointID"]),
                    interface: text(&e["Interface"]),
                    ip: cidr(&text(&e["IPv4Address"])),
                    ip6: cidr6(&text(&e["IPv6Address"])),
                    ports: e["Ports"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|p| {
                            (
                                text(&p["Proto"]),
                                p["HostPort"].as_u64().unwrap_or(0) as u16,
                                p["ContainerPort"].as_u64().unwrap_or(0) as u16,
                            )
                        })
                        .collect(),
                })
                .collect();
            snap.sbxs.insert(
                text(&s["Name"]),
                Sbx {
                    id: text(&s["Id"]),
                    netns: text(&s["NetNs"]),
                    owned: s["OwnedNetNs"].as_bool().unwrap_or(false),
                    endpoints,
                },
            );
        }
        snap
    }

    pub fn net_name(&self, id: &str) -> String {
        self.nets
            .iter()
            .find(|(_, n)| n.id == id)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| format!("<unknown network {id}>"))
    }

    pub fn connected(&self, sandbox: &str, network: &str) -> bool {
        match (self.sbxs.get(sandbox), self.nets.get(network)) {
            (Some(s), Some(n)) => s.endpoints.iter().any(|e| e.network_id == n.id),
            _ => false,
        }
    }

    /// The lowest address of a network that neither its gateway nor an endpoint holds.
    pub fn lowest_free(&self, network: &str) -> Option<Ipv4Addr> {
        let n = self.nets.get(network)?;
        let taken: BTreeSet<Ipv4Addr> = self
            .sbxs
            .values()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.network_id == n.id)
            .filter_map(|e| e.ip.map(|(a, _)| a))
            .chain([n.gateway])
            .collect();
        let base = u32::from(n.subnet.0);
        let size = 1u32 << (32 - n.subnet.1);
        (1..size - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|a| !taken.contains(a))
    }

    /// The lowest /24 of the default pool no network has.
    pub fn lowest_free_default(&self) -> (Ipv4Addr, u8) {
        let used: BTreeSet<(Ipv4Addr, u8)> = self.nets.values().map(|n| n.subnet).collect();
        (0..=255u8)
            .map(|i| (Ipv4Addr::new(10, 78, i, 0), 24))
            .find(|s| !used.contains(s))
            .unwrap_or_else(|| panic!("default pool exhausted"))
    }

    pub fn endpoint(&self, id: &str) -> Option<(&str, &Ep)> {
        self.sbxs.iter().find_map(|(name, s)| {
            s.endpoints
                .iter()
                .find(|e| e.id == id)
                .map(|e| (name.as_str(), e))
        })
    }
}
