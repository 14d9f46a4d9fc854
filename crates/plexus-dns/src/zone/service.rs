//! Services in the zone, as Docker swarm answers them. On each network a service is on:
//!
//! - `SERVICE` and `SERVICE.NETWORK`: its virtual IPs there ([`ServiceMode::Vip`]), or its
//!   tasks' addresses there ([`ServiceMode::Dnsrr`]);
//! - `tasks.SERVICE` and `tasks.SERVICE.NETWORK`: its tasks' addresses there, in both modes;
//! - PTR of a virtual IP: `SERVICE.NETWORK` (a task's address keeps its sandbox's name).
//!
//! A name with no address (no task yet, or no virtual IP of the asked family) still exists:
//! an empty answer, never a forward. A service's name and a sandbox's name or alias that
//! are the same on one network answer together (the union of their addresses), as in
//! libnetwork, where both are entries of the network's one name table.
//!
//! A task is an endpoint that names its service ([`EndpointInfo::service`]): this host's
//! count only while the service is known here ([`ServiceInfo`]); another host's
//! ([`EndpointInfo::host`]) count even for a service not known here, under `tasks.` only
//! (its mode and virtual IPs are the service record's, which is what is missing).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{EndpointInfo, NetworkZone};

/// How a service's name answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Its virtual IP on the network (the default).
    #[default]
    Vip,
    /// Its tasks' addresses on the network, shuffled.
    Dnsrr,
}

/// A service on one of its networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNetwork {
    /// The network's id.
    pub network_id: String,
    /// Its virtual IPs there (IPv4, and IPv6 on an IPv6 network); empty in `dnsrr` mode.
    #[serde(default)]
    pub vips: Vec<IpAddr>,
}

/// A service whose names the resolver serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The service's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `vip` or `dnsrr`.
    pub mode: ServiceMode,
    /// The networks it is on.
    pub networks: Vec<ServiceNetwork>,
}

impl ServiceInfo {
    /// It on network `id`, if it is there.
    pub fn on(&self, id: &str) -> Option<&ServiceNetwork> {
        self.networks.iter().find(|n| n.network_id == id)
    }
}

/// The service an endpoint is a task of: its id, and its name for hosts that do not know
/// the service itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// The service's id.
    pub id: String,
    /// The service's name.
    pub name: String,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Adds `addrs` to `name` and `name.NETWORK` (creating them even with none: the names exist).
fn put(zone: &mut NetworkZone, name: &str, addrs: &[IpAddr]) {
    let qualified = format!("{name}.{}", zone.name);
    for k in [name.to_string(), qualified] {
        zone.names.entry(k).or_default().extend_from_slice(addrs);
    }
}

/// Adds to `zone` (network `network_id`'s) the names of the services on it and of their
/// tasks among `endpoints` (the network's).
pub(super) fn add_names<'a>(
    zone: &mut NetworkZone,
    network_id: &str,
    services: &BTreeMap<String, ServiceInfo>,
    endpoints: impl Iterator<Item = &'a EndpointInfo>,
) {
    // Tasks' addresses by service id (known services), or by name (another host's tasks of
    // a service unknown here).
    let mut tasks: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut unknown: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for ep in endpoints {
        let Some(svc) = &ep.service else { continue };
        if services
            .get(&svc.id)
            .is_some_and(|s| s.on(network_id).is_some())
        {
            tasks.entry(&svc.id).or_default().extend(&ep.addrs);
        } else if ep.is_remote() {
            unknown.entry(key(&svc.name)).or_default().extend(&ep.addrs);
        }
    }
    for svc in services.values() {
        let Some(on) = svc.on(network_id) else {
            continue;
        };
        let name = key(&svc.name);
        if name.is_empty() {
            continue;
        }
        let backends = tasks.get(svc.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        put(zone, &format!("tasks.{name}"), backends);
        match svc.mode {
            ServiceMode::Vip => {
                put(zone, &name, &on.vips);
                let qualified = format!("{name}.{}", zone.name);
                for vip in &on.vips {
                    zone.reverse
                        .entry(*vip)
                        .or_default()
                        .push(qualified.clone());
                }
            }
            ServiceMode::Dnsrr => put(zone, &name, backends),
        }
    }
    for (name, addrs) in unknown {
        if !name.is_empty() {
            put(zone, &format!("tasks.{name}"), &addrs);
        }
    }
}
