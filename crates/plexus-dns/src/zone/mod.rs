//! What the resolver knows: networks, the endpoints on them, the sandboxes that ask — as
//! the daemon describes them ([`NetworkInfo`], [`EndpointInfo`], [`SandboxInfo`]) — and the
//! read-only [`Zone`] built from them that queries are answered from.
//!
//! Services ([`ServiceInfo`], `service.rs`) add their names to the networks they are on:
//! `SERVICE` (its virtual IP, or its tasks' addresses in `dnsrr` mode) and `tasks.SERVICE`
//! (its tasks' addresses), each also as `NAME.NETWORK`. A task is an endpoint that names its
//! service ([`EndpointInfo::service`]), so another host's tasks come as its endpoints do.
//!
//! A [`Records`] is the mutable master, changed one record at a time by the control plane;
//! each change rebuilds only the networks it touches and yields a fresh [`Zone`] that the
//! serving side swaps in whole, so a query sees either the old state or the new, never half.
//!
//! An endpoint may be another host's ([`EndpointInfo::host`], learnt through the cluster's
//! control plane): it has names and addresses on a network and no sandbox here. It answers
//! exactly as a local one, and a network's answers depend only on the set of its endpoints,
//! not on which of them are local nor on the order they came in (addresses and PTR names are
//! kept sorted), so every host of a network answers alike.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod service;
pub use service::{
    NetworkServices, ServiceAnswer, ServiceInfo, ServiceMode, ServiceNetwork, ServiceRef, Shards,
};

/// The time to live of local answers when a network does not set one.
pub const DEFAULT_TTL: u32 = 5;

/// A network whose names the resolver serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The network's id.
    pub id: String,
    /// Its name (answers `NAME.NETWORK`).
    pub name: String,
    /// The TTL of its answers, in seconds.
    pub ttl: u32,
    /// An internal network: sandboxes only on internal networks get no forwarding.
    pub internal: bool,
}

/// One endpoint: the names under which a sandbox is known on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The endpoint's id (unique among the resolver's endpoints, local and remote).
    pub id: String,
    /// Its network's id.
    pub network_id: String,
    /// The sandbox's id; for another host's endpoint, not a sandbox of this resolver's
    /// (plexusd leaves it empty).
    pub sandbox_id: String,
    /// The names it answers to on that network: the sandbox's name first, then aliases.
    pub names: Vec<String>,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
    /// Its place among the sandbox's endpoints (connection order): a name on several of a
    /// sandbox's networks is answered from the first.
    #[serde(default)]
    pub order: u32,
    /// The host it lives on, for an endpoint of another host: answered on its network, never
    /// part of a sandbox's view here. `None`: this host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    /// The service whose task this endpoint is, if any: its addresses answer
    /// `tasks.SERVICE` on the network (and `SERVICE` in `dnsrr` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
}

impl EndpointInfo {
    /// Whether it is another host's.
    pub fn is_remote(&self) -> bool {
        self.host.is_some()
    }
}

/// A sandbox that asks: where its listener lives and where its queries may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// The sandbox's id.
    pub id: String,
    /// Its name, for logs.
    pub name: String,
    /// Its network namespace's path.
    pub netns: PathBuf,
    /// Its own upstreams (`--dns`); empty means the host's.
    pub upstreams: Vec<SocketAddr>,
    /// The user set `ndots` explicitly: a one-label name that misses gets an empty answer
    /// instead of being forwarded, so the client goes on with its search list (as Docker).
    pub ndots_set: bool,
}

/// Names of one network, ready for lookups (keys in lower case, without the trailing dot).
#[derive(Debug, Default)]
pub struct NetworkZone {
    /// The network's name, lower case.
    pub name: String,
    /// TTL of its answers.
    pub ttl: u32,
    /// Whether it is internal.
    pub internal: bool,
    /// Name → addresses (`db`, `db.net1`, aliases); services' names are in
    /// [`Zone::services`].
    pub names: HashMap<String, Vec<IpAddr>>,
    /// Address → `NAME.NETWORK` names, for PTR.
    pub reverse: HashMap<IpAddr, Vec<String>>,
}

/// How one sandbox sees the zone.
#[derive(Debug, Clone, Default)]
pub struct SandboxView {
    /// Ids of the networks it is on that serve names, in connection order.
    pub networks: Vec<String>,
    /// Whether misses may be forwarded (some network of its is not internal).
    pub forward: bool,
    /// Its upstreams; empty means the host's.
    pub upstreams: Arc<[SocketAddr]>,
    /// See [`SandboxInfo::ndots_set`].
    pub ndots_set: bool,
}

/// An immutable snapshot that queries are answered from.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// Networks by id.
    pub networks: HashMap<String, Arc<NetworkZone>>,
    /// Sandboxes by id.
    pub sandboxes: HashMap<String, Arc<SandboxView>>,
    /// Services' names by network id.
    pub services: HashMap<String, NetworkServices>,
}

impl Zone {
    /// The addresses `name` (lower case, no trailing dot) has for a sandbox, from the first
    /// of its networks that knows the name, with that network's TTL.
    pub fn lookup(&self, view: &SandboxView, name: &str) -> Option<(Cow<'_, [IpAddr]>, u32)> {
        view.networks
            .iter()
            .find_map(|id| self.lookup_on(id, self.networks.get(id)?, name))
    }

    /// `name` on one network: its endpoints' names and its services' (both, merged, when a
    /// sandbox and a service share a name).
    fn lookup_on<'a>(
        &'a self,
        id: &str,
        net: &'a NetworkZone,
        name: &str,
    ) -> Option<(Cow<'a, [IpAddr]>, u32)> {
        let eps = net.names.get(name).map(Vec::as_slice);
        let svc = self
            .services
            .get(id)
            .and_then(|s| s.lookup(&net.name, name));
        let addrs = match (eps, svc) {
            (Some(a), None) | (None, Some(a)) => Cow::Borrowed(a),
            (Some(a), Some(b)) => {
                let mut all = [a, b].concat();
                all.sort_unstable();
                all.dedup();
                Cow::Owned(all)
            }
            (None, None) => return None,
        };
        Some((addrs, net.ttl))
    }

    /// The names an address has for a sandbox, with the TTL: a sandbox's, or a virtual IP's
    /// service's.
    pub fn reverse(&self, view: &SandboxView, addr: IpAddr) -> Option<(Vec<String>, u32)> {
        view.networks.iter().find_map(|id| {
            let net = self.networks.get(id)?;
            if let Some(n) = net.reverse.get(&addr) {
                return Some((n.clone(), net.ttl));
            }
            let svc = self.services.get(id)?.by_vip.get(&addr)?;
            Some((vec![format!("{svc}.{}", net.name)], net.ttl))
        })
    }

    /// A name looked up across every network, as the host sees them: `NAME.NETWORK`.
    pub fn lookup_any(&self, name: &str) -> Option<(Vec<IpAddr>, u32)> {
        let (_, net) = name.rsplit_once('.')?;
        let (id, zone) = self.networks.iter().find(|(_, n)| n.name == net)?;
        self.lookup_on(id, zone, name)
            .map(|(a, ttl)| (a.into_owned(), ttl))
    }
}

/// The resolver's master copy of what the daemon told it.
#[derive(Debug, Default, Clone)]
pub struct Records {
    networks: BTreeMap<String, NetworkInfo>,
    endpoints: BTreeMap<String, EndpointInfo>,
    sandboxes: BTreeMap<String, SandboxInfo>,
    services: BTreeMap<String, ServiceInfo>,
    index: service::Index,
    zone: Zone,
}

/// A full description, as sent on (re)connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every network that serves names.
    pub networks: Vec<NetworkInfo>,
    /// Every endpoint on them.
    pub endpoints: Vec<EndpointInfo>,
    /// Every sandbox with a listener.
    pub sandboxes: Vec<SandboxInfo>,
    /// Every service on networks that serve names.
    #[serde(default)]
    pub services: Vec<ServiceInfo>,
}

impl Records {
    /// Everything known, as a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            networks: self.networks.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
            sandboxes: self.sandboxes.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
        }
    }

    /// Replaces everything with `snap`.
    pub fn replace(&mut self, snap: Snapshot) {
        self.networks = snap
            .networks
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        self.endpoints = snap
            .endpoints
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        self.sandboxes = snap
            .sandboxes
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        self.services = snap
            .services
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let ids: Vec<String> = self.networks.keys().cloned().collect();
        self.zone = Zone::default();
        for id in ids {
            self.rebuild_network(&id);
        }
        self.index = service::Index::default();
        let mut keys = BTreeSet::new();
        for s in self.services.values() {
            self.index.add_service(s);
            keys.extend(service_keys(s));
        }
        for e in self.endpoints.values() {
            self.index.add_task(e);
            keys.extend(task_key(e));
        }
        self.rebuild_services(keys);
        let ids: Vec<String> = self.sandboxes.keys().cloned().collect();
        for id in ids {
            self.rebuild_sandbox(&id);
        }
    }

    /// The current zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// A known sandbox.
    pub fn sandbox(&self, id: &str) -> Option<&SandboxInfo> {
        self.sandboxes.get(id)
    }

    /// Every known sandbox.
    pub fn sandboxes(&self) -> impl Iterator<Item = &SandboxInfo> {
        self.sandboxes.values()
    }

    /// Adds or changes a network.
    pub fn upsert_network(&mut self, net: NetworkInfo) {
        let id = net.id.clone();
        self.networks.insert(id.clone(), net);
        self.rebuild_network(&id);
        self.rebuild_sandboxes_on(&id);
    }

    /// Removes a network (and its endpoints).
    pub fn remove_network(&mut self, id: &str) {
        self.networks.remove(id);
        let gone: Vec<EndpointInfo> = self
            .endpoints
            .values()
            .filter(|e| e.network_id == id)
            .cloned()
            .collect();
        for ep in &gone {
            self.endpoints.remove(&ep.id);
            self.task_changed(Some(ep), None);
        }
        self.rebuild_network(id);
        self.rebuild_sandboxes_on(id);
    }

    /// Adds or changes an endpoint (this host's or another's).
    pub fn upsert_endpoint(&mut self, ep: EndpointInfo) {
        let old = self.endpoints.insert(ep.id.clone(), ep.clone());
        self.task_changed(old.as_ref(), Some(&ep));
        if let Some(old) = old {
            if old.network_id != ep.network_id {
                self.rebuild_network(&old.network_id);
            }
            if !old.is_remote() && old.sandbox_id != ep.sandbox_id {
                self.rebuild_sandbox(&old.sandbox_id);
            }
        }
        self.rebuild_network(&ep.network_id);
        if !ep.is_remote() {
            self.rebuild_sandbox(&ep.sandbox_id);
        }
    }

    /// Removes an endpoint.
    pub fn remove_endpoint(&mut self, id: &str) {
        if let Some(ep) = self.endpoints.remove(id) {
            self.task_changed(Some(&ep), None);
            self.rebuild_network(&ep.network_id);
            if !ep.is_remote() {
                self.rebuild_sandbox(&ep.sandbox_id);
            }
        }
    }

    /// Adds or changes a service (its names on the networks it is on, and those it left).
    pub fn upsert_service(&mut self, svc: ServiceInfo) {
        let mut keys: BTreeSet<(String, String)> = service_keys(&svc).collect();
        self.index.add_service(&svc);
        if let Some(old) = self.services.insert(svc.id.clone(), svc) {
            keys.extend(service_keys(&old));
            if service::key(&old.name) != service::key(&self.services[&old.id].name) {
                self.index.remove_service(&old);
            }
        }
        self.rebuild_services(keys);
    }

    /// Removes a service: its names go from every network.
    pub fn remove_service(&mut self, id: &str) {
        if let Some(old) = self.services.remove(id) {
            self.index.remove_service(&old);
            self.rebuild_services(service_keys(&old).collect());
        }
    }

    /// Recomputes the service names `keys` ((network id, name)), each alone.
    fn rebuild_services(&mut self, keys: BTreeSet<(String, String)>) {
        for (net, name) in keys {
            let new = service::answer(&net, &name, &self.index, &self.services, &self.endpoints);
            let zone = self.zone.services.entry(net.clone()).or_default();
            service::set(zone, &name, new);
            if zone.by_name.is_empty() {
                self.zone.services.remove(&net);
            }
        }
    }

    /// Keeps the indexes and service names right after endpoint `old` became `new`.
    fn task_changed(&mut self, old: Option<&EndpointInfo>, new: Option<&EndpointInfo>) {
        if old.map(|e| (&e.network_id, &e.service, &e.addrs, e.host))
            == new.map(|e| (&e.network_id, &e.service, &e.addrs, e.host))
        {
            return;
        }
        let mut keys = BTreeSet::new();
        if let Some(old) = old {
            self.index.remove_task(old);
            keys.extend(task_key(old));
        }
        if let Some(new) = new {
            self.index.add_task(new);
            keys.extend(task_key(new));
        }
        self.rebuild_services(keys);
    }

    /// Adds or changes a sandbox.
    pub fn upsert_sandbox(&mut self, sb: SandboxInfo) {
        let id = sb.id.clone();
        self.sandboxes.insert(id.clone(), sb);
        self.rebuild_sandbox(&id);
    }

    /// Removes a sandbox (its endpoints go with it).
    pub fn remove_sandbox(&mut self, id: &str) {
        self.sandboxes.remove(id);
        let gone: Vec<EndpointInfo> = self
            .endpoints
            .values()
            .filter(|e| !e.is_remote() && e.sandbox_id == id)
            .cloned()
            .collect();
        for ep in gone {
            self.endpoints.remove(&ep.id);
            self.task_changed(Some(&ep), None);
            self.rebuild_network(&ep.network_id);
        }
        self.zone.sandboxes.remove(id);
    }

    fn rebuild_network(&mut self, id: &str) {
        let Some(net) = self.networks.get(id) else {
            self.zone.networks.remove(id);
            return;
        };
        let mut zone = NetworkZone {
            name: net.name.to_ascii_lowercase(),
            ttl: net.ttl,
            internal: net.internal,
            ..NetworkZone::default()
        };
        for ep in self.endpoints.values().filter(|e| e.network_id == id) {
            for (i, name) in ep.names.iter().enumerate() {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    continue;
                }
                let qualified = format!("{name}.{}", zone.name);
                for key in [name, qualified.clone()] {
                    zone.names
                        .entry(key)
                        .or_default()
                        .extend_from_slice(&ep.addrs);
                }
                // PTR answers the sandbox's own name only, as Docker does.
                if i == 0 {
                    for a in &ep.addrs {
                        zone.reverse.entry(*a).or_default().push(qualified.clone());
                    }
                }
            }
        }
        // Sorted: the same endpoints give the same answers, on whichever host they are
        // local and in whatever order they came.
        for list in zone.names.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        for list in zone.reverse.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        self.zone.networks.insert(id.to_string(), Arc::new(zone));
    }

    fn rebuild_sandboxes_on(&mut self, network: &str) {
        let ids: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| !e.is_remote() && e.network_id == network)
            .map(|e| e.sandbox_id.clone())
            .collect();
        for id in ids {
            self.rebuild_sandbox(&id);
        }
        // Sandboxes whose endpoints went with the network.
        let stale: Vec<String> = self
            .zone
            .sandboxes
            .iter()
            .filter(|(_, v)| v.networks.iter().any(|n| n == network))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.rebuild_sandbox(&id);
        }
    }

    fn rebuild_sandbox(&mut self, id: &str) {
        let Some(sb) = self.sandboxes.get(id) else {
            self.zone.sandboxes.remove(id);
            return;
        };
        let mut eps: Vec<&EndpointInfo> = self
            .endpoints
            .values()
            .filter(|e| {
                !e.is_remote() && e.sandbox_id == id && self.networks.contains_key(&e.network_id)
            })
            .collect();
        eps.sort_by_key(|e| e.order);
        let mut networks: Vec<String> = Vec::new();
        let mut forward = false;
        for ep in eps {
            if let Some(net) = self.networks.get(&ep.network_id) {
                forward |= !net.internal;
                if !networks.contains(&ep.network_id) {
                    networks.push(ep.network_id.clone());
                }
            }
        }
        let view = SandboxView {
            networks,
            forward,
            upstreams: sb.upstreams.clone().into(),
            ndots_set: sb.ndots_set,
        };
        self.zone.sandboxes.insert(id.to_string(), Arc::new(view));
    }
}

/// The service names (network id, name) service `s` has.
fn service_keys(s: &ServiceInfo) -> impl Iterator<Item = (String, String)> + '_ {
    let name = service::key(&s.name);
    s.networks
        .iter()
        .map(move |n| (n.network_id.clone(), name.clone()))
}

/// The service name (network id, name) endpoint `e` is a task under, if any.
fn task_key(e: &EndpointInfo) -> Option<(String, String)> {
    let r = e.service.as_ref()?;
    Some((e.network_id.clone(), service::key(&r.name)))
}

#[cfg(test)]
mod service_tests;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn net(id: &str, name: &str, internal: bool) -> NetworkInfo {
        NetworkInfo {
            id: id.into(),
            name: name.into(),
            ttl: DEFAULT_TTL,
            internal,
        }
    }

    pub(super) fn ep(id: &str, net: &str, sb: &str, names: &[&str], addr: &str) -> EndpointInfo {
        EndpointInfo {
            id: id.into(),
            network_id: net.into(),
            sandbox_id: sb.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs: vec![addr.parse().unwrap()],
            order: 0,
            host: None,
            service: None,
        }
    }

    /// An endpoint of host `host`, as plexusd gives it: no sandbox here.
    pub(super) fn remote(
        id: &str,
        net: &str,
        names: &[&str],
        addrs: &[&str],
        host: &str,
    ) -> EndpointInfo {
        EndpointInfo {
            sandbox_id: String::new(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            host: Some(host.parse().unwrap()),
            ..ep(id, net, "", names, addrs[0])
        }
    }

    pub(super) fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    pub(super) fn sb(id: &str) -> SandboxInfo {
        SandboxInfo {
            id: id.into(),
            name: id.into(),
            netns: "/nonexistent".into(),
            upstreams: vec![],
            ndots_set: false,
        }
    }

    #[test]
    fn names_aliases_qualified_and_isolation() {
        let mut r = Records::default();
        r.upsert_network(net("n1", "Net1", false));
        r.upsert_network(net("n2", "net2", true));
        for s in ["a", "b", "c"] {
            r.upsert_sandbox(sb(s));
        }
        r.upsert_endpoint(ep("e1", "n1", "a", &["Web", "front"], "10.0.0.2"));
        r.upsert_endpoint(ep("e2", "n1", "b", &["db"], "10.0.0.3"));
        r.upsert_endpoint(ep("e3", "n2", "c", &["cache"], "10.1.0.2"));
        let z = r.zone();
        let va = z.sandboxes["a"].clone();
        let vc = z.sandboxes["c"].clone();
        assert_eq!(
            z.lookup(&va, "web").unwrap().0.to_vec(),
            ["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(z.lookup(&va, "front.net1").is_some());
        assert!(z.lookup(&va, "cache").is_none(), "n2's names are not a's");
        assert!(z.lookup(&vc, "db").is_none());
        assert!(va.forward);
        assert!(!vc.forward, "only internal networks: no forwarding");
        let ptr = z.reverse(&va, "10.0.0.3".parse().unwrap()).unwrap().0;
        assert_eq!(ptr, ["db.net1"]);
        assert_eq!(z.lookup_any("db.net1").unwrap().0.len(), 1);
    }

    #[test]
    fn shared_alias_collects_addresses_and_removal_updates() {
        let mut r = Records::default();
        r.upsert_network(net("n1", "n", false));
        r.upsert_sandbox(sb("a"));
        r.upsert_sandbox(sb("b"));
        r.upsert_endpoint(ep("e1", "n1", "a", &["a", "svc"], "10.0.0.2"));
        r.upsert_endpoint(ep("e2", "n1", "b", &["b", "svc"], "10.0.0.3"));
        let view = r.zone().sandboxes["a"].clone();
        assert_eq!(r.zone().lookup(&view, "svc").unwrap().0.len(), 2);
        r.remove_sandbox("b");
        assert_eq!(r.zone().lookup(&view, "svc").unwrap().0.len(), 1);
        assert!(r.zone().lookup(&view, "b").is_none());
        r.remove_network("n1");
        assert!(r.zone().sandboxes["a"].networks.is_empty());
        assert!(r.zone().networks.is_empty());
    }

    #[test]
    fn snapshot_round_trip() {
        let mut r = Records::default();
        r.upsert_network(net("n1", "n", false));
        r.upsert_sandbox(sb("a"));
        r.upsert_endpoint(ep("e1", "n1", "a", &["a"], "10.0.0.2"));
        let mut r2 = Records::default();
        r2.replace(r.snapshot());
        let v = r2.zone().sandboxes["a"].clone();
        assert!(r2.zone().lookup(&v, "a.n").is_some());
        assert_eq!(r2.snapshot(), r.snapshot());
    }

    #[test]
    fn another_hosts_endpoint_answers_like_a_local_one_and_has_no_view() {
        let mut r = Records::default();
        // Learnt before the network is known here: kept, answered once it is.
        r.upsert_endpoint(remote(
            "n1/e2",
            "n1",
            &["web2", "www"],
            &["10.0.0.3", "fd00::3"],
            "192.0.2.2",
        ));
        r.upsert_network(net("n1", "blue", false));
        r.upsert_sandbox(sb("a"));
        r.upsert_endpoint(ep("e1", "n1", "a", &["web1"], "10.0.0.2"));
        let z = r.zone();
        let va = z.sandboxes["a"].clone();
        for name in ["web2", "www", "web2.blue", "www.blue"] {
            assert_eq!(
                z.lookup(&va, name).unwrap().0.to_vec(),
                ips(&["10.0.0.3", "fd00::3"]),
                "{name}"
            );
        }
        let ptr = z.reverse(&va, "fd00::3".parse().unwrap()).unwrap().0;
        assert_eq!(ptr, ["web2.blue"], "PTR: the sandbox's name only");
        assert_eq!(
            z.sandboxes.keys().collect::<Vec<_>>(),
            ["a"],
            "a remote endpoint makes no view"
        );
        // Removing sandboxes here (even one with the empty id) leaves it; removing it by id
        // takes it away.
        r.remove_sandbox("");
        r.remove_sandbox("a");
        r.upsert_sandbox(sb("c"));
        r.upsert_endpoint(ep("e3", "n1", "c", &["web3"], "10.0.0.4"));
        let vc = r.zone().sandboxes["c"].clone();
        assert!(r.zone().lookup(&vc, "www").is_some());
        assert!(r.zone().lookup(&vc, "web1").is_none());
        r.remove_endpoint("n1/e2");
        assert!(r.zone().lookup(&vc, "www").is_none());
        assert!(r.zone().reverse(&vc, "10.0.0.3".parse().unwrap()).is_none());
        assert_eq!(r.zone().sandboxes["c"].networks, ["n1"]);
    }

    #[test]
    fn answers_do_not_depend_on_which_host_asks_nor_on_arrival_order() {
        // Host A has e1 and learns e2; host B has e2 and learns e1, in the other order.
        // Both share the alias `svc`, and e1's address sorts last.
        let mut a = Records::default();
        a.upsert_network(net("n1", "n", false));
        a.upsert_sandbox(sb("s1"));
        a.upsert_endpoint(ep("e1", "n1", "s1", &["one", "svc"], "10.0.0.9"));
        a.upsert_endpoint(remote(
            "n1/e2",
            "n1",
            &["two", "svc"],
            &["10.0.0.2"],
            "192.0.2.2",
        ));
        let mut b = Records::default();
        b.upsert_endpoint(remote(
            "n1/e1",
            "n1",
            &["one", "svc"],
            &["10.0.0.9"],
            "192.0.2.1",
        ));
        b.upsert_network(net("n1", "n", false));
        b.upsert_sandbox(sb("s2"));
        b.upsert_endpoint(ep("e2", "n1", "s2", &["two", "svc"], "10.0.0.2"));
        let (za, zb) = (a.zone(), b.zone());
        let (va, vb) = (za.sandboxes["s1"].clone(), zb.sandboxes["s2"].clone());
        for name in ["svc", "svc.n", "one", "two.n"] {
            assert_eq!(za.lookup(&va, name), zb.lookup(&vb, name), "{name}");
        }
        assert_eq!(
            za.lookup(&va, "svc").unwrap().0.to_vec(),
            ips(&["10.0.0.2", "10.0.0.9"])
        );
        assert_eq!(za.networks["n1"].names, zb.networks["n1"].names);
        assert_eq!(za.networks["n1"].reverse, zb.networks["n1"].reverse);
    }

    #[test]
    fn remote_endpoints_survive_a_snapshot() {
        let mut r = Records::default();
        r.upsert_network(net("n1", "n", false));
        r.upsert_sandbox(sb("a"));
        r.upsert_endpoint(ep("e1", "n1", "a", &["a"], "10.0.0.2"));
        r.upsert_endpoint(remote("n1/e2", "n1", &["b"], &["10.0.0.3"], "192.0.2.2"));
        let snap = r.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains("\"host\":\"192.0.2.2\""), "{json}");
        let mut r2 = Records::default();
        r2.replace(serde_json::from_str(&json).unwrap());
        let v = r2.zone().sandboxes["a"].clone();
        assert!(r2.zone().lookup(&v, "b.n").is_some());
        assert_eq!(r2.snapshot(), snap);
        // A local endpoint's JSON is as before (an older resolver reads it).
        assert!(!serde_json::to_string(&snap.endpoints[0])
            .unwrap()
            .contains("host"));
    }
}
