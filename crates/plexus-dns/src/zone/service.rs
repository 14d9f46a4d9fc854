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
//!
//! Services' names are kept apart from the endpoints' ([`super::Zone::services`]), per
//! network and per service name ([`ServiceAnswer`]), in [`Shards`]: a service's or a
//! task's change recomputes its one name on its networks and copies one shard, so its cost
//! does not grow with the number of services (thousands of them, as the data plane is
//! built for). A lookup asks the endpoints' names and the services' and merges both.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::EndpointInfo;

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

/// A name as service names are keyed: lower case, without a trailing dot.
pub(super) fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

const SHARDS: usize = 32;

/// A map split into shards, each behind its own `Arc`: a snapshot's copy takes [`SHARDS`]
/// pointers and a change copies one shard, so with thousands of services one change costs
/// a small part of them, not all.
#[derive(Debug, Clone)]
pub struct Shards<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
}

impl<K, V> Default for Shards<K, V> {
    fn default() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

fn shard_of<Q: Hash + ?Sized>(k: &Q) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    /// The value of `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[shard_of(k)].get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        Arc::make_mut(&mut self.shards[shard_of(&k)]).insert(k, v);
    }

    fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = &mut self.shards[shard_of(k)];
        if !shard.contains_key(k) {
            return None;
        }
        Arc::make_mut(shard).remove(k)
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one service name answers on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAnswer {
    /// `SERVICE`: the virtual IPs, or the tasks' addresses in `dnsrr` mode; `None` when no
    /// service known here has the name (another host's tasks only: `tasks.` only).
    pub name: Option<Vec<IpAddr>>,
    /// `tasks.SERVICE`: the tasks' addresses.
    pub tasks: Vec<IpAddr>,
    /// The virtual IPs (for PTR).
    pub vips: Vec<IpAddr>,
}

/// The services of one network, for lookups.
#[derive(Debug, Clone, Default)]
pub struct NetworkServices {
    /// Service name (lower case) → its answers.
    pub by_name: Shards<String, Arc<ServiceAnswer>>,
    /// Virtual IP → the service's name (lower case).
    pub by_vip: Shards<IpAddr, String>,
}

impl NetworkServices {
    /// The addresses `name` (lower case, no trailing dot) has among the services of the
    /// network named `net` (lower case): `SERVICE`, `tasks.SERVICE`, each also with `.NET`.
    pub fn lookup(&self, net: &str, name: &str) -> Option<&[IpAddr]> {
        let bare = name
            .strip_suffix(net)
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| !n.is_empty());
        [Some(name), bare].into_iter().flatten().find_map(|n| {
            let own = self.by_name.get(n).and_then(|a| a.name.as_deref());
            own.or_else(|| {
                let svc = n.strip_prefix("tasks.")?;
                self.by_name.get(svc).map(|a| a.tasks.as_slice())
            })
        })
    }
}

/// The master's indexes of services, to recompute one name on one network at a time.
#[derive(Debug, Default, Clone)]
pub(super) struct Index {
    /// Service name (lower case) → ids of the services with that name.
    pub by_name: BTreeMap<String, BTreeSet<String>>,
    /// Service name (lower case) in a task's tag → ids of the endpoints tagged so.
    pub tasks: BTreeMap<String, BTreeSet<String>>,
}

impl Index {
    pub(super) fn add_service(&mut self, s: &ServiceInfo) {
        self.by_name
            .entry(key(&s.name))
            .or_default()
            .insert(s.id.clone());
    }

    pub(super) fn remove_service(&mut self, s: &ServiceInfo) {
        let k = key(&s.name);
        if let Some(set) = self.by_name.get_mut(&k) {
            set.remove(&s.id);
            if set.is_empty() {
                self.by_name.remove(&k);
            }
        }
    }

    pub(super) fn add_task(&mut self, ep: &EndpointInfo) {
        if let Some(r) = &ep.service {
            self.tasks
                .entry(key(&r.name))
                .or_default()
                .insert(ep.id.clone());
        }
    }

    pub(super) fn remove_task(&mut self, ep: &EndpointInfo) {
        if let Some(r) = &ep.service {
            let k = key(&r.name);
            if let Some(set) = self.tasks.get_mut(&k) {
                set.remove(&ep.id);
                if set.is_empty() {
                    self.tasks.remove(&k);
                }
            }
        }
    }
}

/// What name `name` (lower case) answers on network `network_id`, from the services and
/// the tagged endpoints; `None` if nothing there has it.
pub(super) fn answer(
    network_id: &str,
    name: &str,
    index: &Index,
    services: &BTreeMap<String, ServiceInfo>,
    endpoints: &BTreeMap<String, EndpointInfo>,
) -> Option<ServiceAnswer> {
    let known: Vec<(&ServiceInfo, &ServiceNetwork)> = index
        .by_name
        .get(name)
        .into_iter()
        .flatten()
        .filter_map(|id| services.get(id))
        .filter_map(|s| s.on(network_id).map(|on| (s, on)))
        .collect();
    let mut ans = ServiceAnswer::default();
    let mut by_service: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for ep in index
        .tasks
        .get(name)
        .into_iter()
        .flatten()
        .filter_map(|id| endpoints.get(id))
        .filter(|e| e.network_id == network_id)
    {
        let Some(r) = &ep.service else { continue };
        if known.iter().any(|(s, _)| s.id == r.id) {
            by_service.entry(&r.id).or_default().extend(&ep.addrs);
        } else if ep.is_remote() && !services.contains_key(&r.id) {
            // Another host's task of a service not known here.
            ans.tasks.extend(&ep.addrs);
        }
    }
    if known.is_empty() && ans.tasks.is_empty() {
        return None;
    }
    if !known.is_empty() {
        let mut own = Vec::new();
        for (s, on) in &known {
            let tasks = by_service
                .get(s.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            ans.tasks.extend_from_slice(tasks);
            match s.mode {
                ServiceMode::Vip => {
                    own.extend_from_slice(&on.vips);
                    ans.vips.extend_from_slice(&on.vips);
                }
                ServiceMode::Dnsrr => own.extend_from_slice(tasks),
            }
        }
        own.sort_unstable();
        own.dedup();
        ans.name = Some(own);
    }
    // Sorted: the same records give the same answers on every host.
    for list in [&mut ans.tasks, &mut ans.vips] {
        list.sort_unstable();
        list.dedup();
    }
    Some(ans)
}

/// Sets name `name`'s answer on `zone` (a network's services) to `new`.
pub(super) fn set(zone: &mut NetworkServices, name: &str, new: Option<ServiceAnswer>) {
    let old = zone.by_name.get(name).cloned();
    if old.as_deref() == new.as_ref() {
        return;
    }
    if let Some(old) = old {
        for v in &old.vips {
            if zone.by_vip.get(v).is_some_and(|n| n == name) {
                zone.by_vip.remove(v);
            }
        }
    }
    match new {
        Some(new) => {
            for v in &new.vips {
                zone.by_vip.insert(*v, name.to_string());
            }
            zone.by_name.insert(name.to_string(), Arc::new(new));
        }
        None => {
            zone.by_name.remove(name);
        }
    }
}
