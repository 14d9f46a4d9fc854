//! What each sandbox of this host should see of the services, from the store's records:
//! pure, no I/O. `mod.rs` reads the records and keeps these caches; `kernel.rs` makes the
//! namespaces hold the views.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use plexus_cnm::{AffinityMode, Endpoint, EndpointMode, Sandbox, Scope, Service, Task};
use plexus_lb::{ServiceView, View, SERVICE_ID_LEN};

/// A service's VIP on one network, as every sandbox on that network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The network's id.
    pub network: String,
    /// The key in the sandbox's [`View`] (see [`key`]).
    pub key: String,
    /// The VIP and the backends there.
    pub view: ServiceView,
}

/// The 12-character key of a service's VIP on the service's `index`-th network, the name
/// of its objects in the table (`svc-<key>`): the service's short id on its first network
/// (what `plexus service ls` prints), and on the others (a sandbox on two of the service's
/// networks sees both VIPs) the id's first 11 characters and a letter past the hex
/// digits for the network's index (`g` for 1, … `m` for 7), so that it is never another
/// service's short id (ids are hex: a digit there could equal the 12th of one).
pub fn key(service_id: &str, index: usize) -> String {
    let short: String = service_id.chars().take(SERVICE_ID_LEN).collect();
    if index == 0 {
        return short;
    }
    let mut k: String = short.chars().take(SERVICE_ID_LEN - 1).collect();
    k.push(char::from(b'f' + (index % 20) as u8));
    k
}

/// Whether a task of the store is load-balanced to from this host's records. A local
/// service's tasks are this host's (empty host); a global service's carry their host's id,
/// and only this host's are taken from the store: the other hosts' tasks come from gossip
/// (their [`SERVICE_TABLE`](super::record::SERVICE_TABLE) entries, [`Model::remote`]), the
/// authoritative source for them because gossip withdraws a dead host's entries within the
/// failure-detection time, while its task records stay in the cluster store.
pub fn is_local(task: &Task, host_id: &str) -> bool {
    task.host.is_empty() || task.host == host_id
}

/// Another host's task on one network, from its [`SERVICE_TABLE`](super::record::SERVICE_TABLE)
/// entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTask {
    /// The publishing host's gossip address.
    pub owner: IpAddr,
    /// The service's id.
    pub service_id: String,
    /// The backend.
    pub addr: Ipv4Addr,
}

/// This host's entries for `service` in the [`SERVICE_TABLE`](super::record::SERVICE_TABLE)
/// of its networks, by (network id, endpoint id): one per IPv4 backend of this host's tasks
/// of a global service (none for a local one). Published whatever the endpoint mode: the
/// task list is the service's, `dnsrr` readers may use it too.
pub fn publication(
    service: &Service,
    tasks: &[Task],
    host_id: &str,
) -> BTreeMap<(String, String), super::record::TaskRecord> {
    let mut out = BTreeMap::new();
    if service.scope != Scope::Global {
        return out;
    }
    for t in tasks.iter().filter(|t| is_local(t, host_id)) {
        for b in &t.backends {
            let Some(IpAddr::V4(addr)) = b.ipv4.map(|a| a.addr()) else {
                continue;
            };
            let vips = service
                .vips_on(&b.network_id)
                .filter_map(|v| match v.addr.addr() {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .take(super::record::MAX_VIPS)
                .collect();
            out.insert(
                (b.network_id.clone(), b.endpoint_id.clone()),
                super::record::TaskRecord {
                    service_id: service.id.clone(),
                    service_name: service.name.clone(),
                    vips,
                    addr,
                    sandbox: t.name.clone(),
                },
            );
        }
    }
    out
}

/// The entries of `service` (none in `dnsrr` mode): per network with an IPv4 VIP, its VIP
/// and this host's tasks' IPv4 addresses there. IPv6 VIPs and backends are skipped: the data
/// plane is IPv4 only.
pub fn entries(service: &Service, tasks: &[Task], host_id: &str) -> Vec<Entry> {
    if service.endpoint_mode != EndpointMode::Vip {
        return Vec::new();
    }
    let affinity = match service.affinity.mode {
        AffinityMode::ClientIp => Some(Duration::from_secs(u64::from(
            service.affinity.timeout_seconds.max(1),
        ))),
        AffinityMode::None => None,
    };
    let mut out = Vec::new();
    for (index, network) in service.networks.iter().enumerate() {
        let mut vip = None;
        for v in service.vips_on(network) {
            match v.addr.addr() {
                a @ IpAddr::V4(_) => vip = vip.or(Some(a)),
                a @ IpAddr::V6(_) => {
                    tracing::debug!(service = %service.name, vip = %a, "IPv6 VIP not load-balanced (IPv4 only)")
                }
            }
        }
        let Some(vip) = vip else { continue };
        let backends: Vec<IpAddr> = tasks
            .iter()
            .filter(|t| is_local(t, host_id))
            .flat_map(|t| &t.backends)
            .filter(|b| &b.network_id == network)
            .filter_map(|b| b.ipv4.map(|a| a.addr()))
            .collect();
        out.push(Entry {
            network: network.clone(),
            key: key(&service.id, index),
            view: ServiceView {
                name: service.name.clone(),
                vip,
                backends,
                affinity,
            }
            .normalized(),
        });
    }
    out
}

/// A sandbox of this host, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name (for logs).
    pub name: String,
    /// Its namespace.
    pub netns: PathBuf,
    /// Whether Plexus made the namespace (and deletes it with the sandbox).
    pub owned: bool,
    /// The networks it is on.
    pub networks: BTreeSet<String>,
    /// Its endpoints, as the routing mesh needs them.
    pub endpoints: Vec<MemberEndpoint>,
}

/// One endpoint of a [`Member`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEndpoint {
    /// The network's id.
    pub network: String,
    /// Its IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its MAC address.
    pub mac: Option<[u8; 6]>,
    /// Its interface's name in the sandbox.
    pub interface: Option<String>,
    /// Whether it is the sandbox's way out (on the gateway network, `docker_gwbridge`).
    pub egress: bool,
}

impl MemberEndpoint {
    /// The member endpoint of `ep`.
    pub fn of(ep: &Endpoint) -> Self {
        let ipv4 = match ep.ipv4.map(|a| a.addr()) {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        MemberEndpoint {
            network: ep.network_id.clone(),
            ipv4,
            mac: ep.mac.as_deref().and_then(parse_mac),
            interface: ep.interface.clone(),
            egress: ep.egress,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Member {
    /// The member of `sandbox`, with its endpoints `endpoints`.
    pub fn new<'a>(sandbox: &Sandbox, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Self {
        let endpoints: Vec<MemberEndpoint> =
            endpoints.into_iter().map(MemberEndpoint::of).collect();
        Member {
            name: sandbox.name.clone(),
            netns: PathBuf::from(&sandbox.key),
            owned: sandbox.owned_netns,
            networks: endpoints.iter().map(|e| e.network.clone()).collect(),
            endpoints,
        }
    }

    /// Its endpoint on `network`.
    pub fn endpoint_on(&self, network: &str) -> Option<&MemberEndpoint> {
        self.endpoints.iter().find(|e| e.network == network)
    }

    /// Its way out's endpoint.
    pub fn egress(&self) -> Option<&MemberEndpoint> {
        self.endpoints.iter().find(|e| e.egress)
    }
}

/// The store's services and this host's sandboxes, as the data plane sees them.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Service id to its entries.
    pub services: BTreeMap<String, Vec<Entry>>,
    /// Sandbox id to the sandbox.
    pub members: BTreeMap<String, Member>,
    /// Other hosts' tasks, by network id and entry key (their endpoint's id), from gossip.
    pub remote: BTreeMap<String, BTreeMap<String, RemoteTask>>,
    /// The routing mesh's part: services with published ports, the ingress gateways.
    pub mesh: super::mesh::MeshModel,
}

impl Model {
    /// What the sandbox `id` should see: every entry on one of its networks (one entry per
    /// key: should two services' keys ever collide, the first by service id wins, logged).
    pub fn view_of(&self, id: &str) -> View {
        let mut view = View::default();
        let Some(m) = self.members.get(id) else {
            return view;
        };
        for (service, entries) in &self.services {
            for e in entries.iter().filter(|e| m.networks.contains(&e.network)) {
                if view.services.contains_key(&e.key) {
                    tracing::warn!(%service, key = %e.key, "two services share a load-balancing key; one is not dispatched");
                    continue;
                }
                let mut v = e.view.clone();
                v.backends.extend(
                    self.remote
                        .get(&e.network)
                        .into_iter()
                        .flat_map(|ts| ts.values())
                        .filter(|t| &t.service_id == service)
                        .map(|t| IpAddr::V4(t.addr)),
                );
                view.services.insert(e.key.clone(), v.normalized());
            }
        }
        view
    }

    /// The networks of a service's entries.
    pub fn networks_of(&self, service: &str) -> BTreeSet<String> {
        self.services
            .get(service)
            .map(|es| es.iter().map(|e| e.network.clone()).collect())
            .unwrap_or_default()
    }

    /// The sandboxes on any of `networks`.
    pub fn members_on(&self, networks: &BTreeSet<String>) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| !m.networks.is_disjoint(networks))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many services have at least one VIP load-balanced here.
    pub fn service_count(&self) -> usize {
        self.services.values().filter(|e| !e.is_empty()).count()
    }
}

/// One service changed in a sandbox's view: its key, what the table holds, what it should.
pub type Change = (String, Option<ServiceView>, Option<ServiceView>);

/// The services that differ between `from` and `to`, each to apply on its own.
pub fn changes(from: &View, to: &View) -> Vec<Change> {
    let keys: BTreeSet<&String> = from.services.keys().chain(to.services.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (from.services.get(k), to.services.get(k));
            (a.map(ServiceView::normalized) != b.map(ServiceView::normalized))
                .then(|| (k.clone(), a.cloned(), b.cloned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cnm::{Backend, Scope, SessionAffinity, VirtualIp};

    fn service(mode: EndpointMode, networks: &[&str], vips: &[(&str, &str)]) -> Service {
        Service {
            id: "0123456789abcdef".repeat(4),
            name: "web".into(),
            scope: Scope::Local,
            networks: networks.iter().map(|n| n.to_string()).collect(),
            endpoint_mode: mode,
            vips: vips
                .iter()
                .map(|(n, a)| VirtualIp {
                    network_id: n.to_string(),
                    pool_id: "p".into(),
                    addr: a.parse().unwrap(),
                })
                .collect(),
            ports: Vec::new(),
            affinity: SessionAffinity::default(),
            labels: Default::default(),
            created: String::new(),
            updated: String::new(),
            version: 1,
        }
    }

    fn task(sb: &str, host: &str, backends: &[(&str, &str, Option<&str>)]) -> Task {
        Task {
            service_id: "s".into(),
            sandbox_id: sb.into(),
            name: sb.into(),
            host: host.into(),
            backends: backends
                .iter()
                .map(|(n, v4, v6)| Backend {
                    network_id: n.to_string(),
                    endpoint_id: format!("ep-{sb}-{n}"),
                    ipv4: Some(v4.parse().unwrap()),
                    ipv6: v6.map(|a| a.parse().unwrap()),
                })
                .collect(),
        }
    }

    #[test]
    fn keys_are_short_ids_and_differ_per_network() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(key(&id, 0), "0123456789ab");
        assert_eq!(key(&id, 1), "0123456789ag");
        // A service whose short id ends in a digit is never another's second-network key.
        assert_ne!(key(&"0123456789a1".repeat(6), 0), key(&id, 1));
        assert_eq!(key(&id, 7), "0123456789am");
    }

    #[test]
    fn entries_take_ipv4_and_local_backends_per_network() {
        let mut s = service(
            EndpointMode::Vip,
            &["a", "b"],
            &[
                ("a", "10.0.0.2/24"),
                ("a", "fd00::2/64"),
                ("b", "10.1.0.2/24"),
            ],
        );
        s.affinity.mode = AffinityMode::ClientIp;
        s.affinity.timeout_seconds = 30;
        let tasks = [
            task(
                "t1",
                "",
                &[
                    ("a", "10.0.0.5/24", Some("fd00::5/64")),
                    ("b", "10.1.0.5/24", None),
                ],
            ),
            task("t2", "me", &[("a", "10.0.0.4/24", None)]),
            task("t3", "other", &[("a", "10.0.0.9/24", None)]),
        ];
        let es = entries(&s, &tasks, "me");
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].network, "a");
        assert_eq!(es[0].view.vip, "10.0.0.2".parse::<IpAddr>().unwrap());
        let want: Vec<IpAddr> = vec!["10.0.0.4".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        assert_eq!(es[0].view.backends, want, "another host's task is not here");
        assert_eq!(es[0].view.affinity, Some(Duration::from_secs(30)));
        assert_eq!(es[1].key, key(&s.id, 1));
        assert_eq!(es[1].view.backends.len(), 1);
        // dnsrr: no VIP, nothing to dispatch.
        let d = service(EndpointMode::Dnsrr, &["a"], &[]);
        assert!(entries(&d, &tasks, "me").is_empty());
        // An IPv6-only VIP: skipped.
        let v6 = service(EndpointMode::Vip, &["a"], &[("a", "fd00::2/64")]);
        assert!(entries(&v6, &tasks, "me").is_empty());
    }

    #[test]
    fn a_sandbox_sees_the_services_of_its_networks_and_changes_are_per_service() {
        let s = service(
            EndpointMode::Vip,
            &["a", "b"],
            &[("a", "10.0.0.2/24"), ("b", "10.1.0.2/24")],
        );
        let tasks = [task("t1", "", &[("a", "10.0.0.5/24", None)])];
        let mut m = Model::default();
        m.services.insert(s.id.clone(), entries(&s, &tasks, "me"));
        let member = |nets: &[&str]| Member {
            name: "x".into(),
            netns: "/x".into(),
            owned: true,
            networks: nets.iter().map(|n| n.to_string()).collect(),
            endpoints: Vec::new(),
        };
        m.members.insert("c1".into(), member(&["a"]));
        m.members.insert("c2".into(), member(&["a", "b"]));
        m.members.insert("c3".into(), member(&["z"]));
        assert_eq!(m.view_of("c1").services.len(), 1);
        assert_eq!(m.view_of("c2").services.len(), 2);
        assert!(m.view_of("c3").services.is_empty());
        assert!(m.view_of("gone").services.is_empty());
        assert_eq!(m.members_on(&m.networks_of(&s.id)), ["c1", "c2"]);
        assert_eq!(m.service_count(), 1);

        let before = m.view_of("c2");
        let tasks = [task(
            "t1",
            "",
            &[("a", "10.0.0.5/24", None), ("a", "10.0.0.6/24", None)],
        )];
        m.services.insert(s.id.clone(), entries(&s, &tasks, "me"));
        let after = m.view_of("c2");
        let ch = changes(&before, &after);
        assert_eq!(ch.len(), 1, "only network a's entry changed");
        assert_eq!(ch[0].0, key(&s.id, 0));
        assert!(changes(&after, &after).is_empty());
        let gone = changes(&after, &View::default());
        assert_eq!(gone.len(), 2);
        assert!(gone
            .iter()
            .all(|(_, old, new)| old.is_some() && new.is_none()));
    }

    #[test]
    fn other_hosts_tasks_come_from_gossip_and_this_hosts_are_published() {
        let mut s = service(EndpointMode::Vip, &["a"], &[("a", "10.0.0.2/24")]);
        s.scope = Scope::Global;
        // The store also holds another host's task: never load-balanced to from there.
        let tasks = [
            task("t1", "me", &[("a", "10.0.0.5/24", None)]),
            task("t2", "other", &[("a", "10.0.0.9/24", None)]),
        ];
        let mut m = Model::default();
        m.services.insert(s.id.clone(), entries(&s, &tasks, "me"));
        m.members.insert(
            "c".into(),
            Member {
                name: "c".into(),
                netns: "/c".into(),
                owned: true,
                networks: ["a".to_string()].into(),
                endpoints: Vec::new(),
            },
        );
        let remote = |sid: &str, a: [u8; 4]| RemoteTask {
            owner: "192.0.2.2".parse().unwrap(),
            service_id: sid.into(),
            addr: a.into(),
        };
        m.remote
            .entry("a".into())
            .or_default()
            .insert("e7".into(), remote(&s.id, [10, 0, 0, 7]));
        m.remote
            .entry("a".into())
            .or_default()
            .insert("e8".into(), remote("other", [10, 0, 0, 8]));
        m.remote
            .entry("b".into())
            .or_default()
            .insert("e6".into(), remote(&s.id, [10, 0, 0, 6]));
        let v = m.view_of("c");
        let want: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "10.0.0.7".parse().unwrap()];
        assert_eq!(v.services[&key(&s.id, 0)].backends, want);

        let p = publication(&s, &tasks, "me");
        assert_eq!(p.len(), 1, "only this host's task");
        let r = &p[&("a".to_string(), "ep-t1-a".to_string())];
        assert_eq!(r.addr, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(r.vips, [Ipv4Addr::new(10, 0, 0, 2)]);
        s.scope = Scope::Local;
        assert!(
            publication(&s, &tasks, "me").is_empty(),
            "local services stay here"
        );
    }
}
