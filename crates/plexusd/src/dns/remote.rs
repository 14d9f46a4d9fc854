//! Names across hosts, as libnetwork's `endpoint_table`. Each endpoint of a sandbox here on
//! a global network that serves names is published in that network's [`ENDPOINT_TABLE`]
//! through the control plane (its [`EndpointRecord`], keyed by the endpoint's id); the other
//! hosts' entries, as the gossip router hands them over (`Dns` is the table's
//! [`TableSink`]), go to the resolver as endpoints without a sandbox here
//! ([`EndpointInfo::host`]), answered exactly as local ones. An entry goes when its host
//! withdraws it (a disconnect, a removed sandbox), leaves the network or dies (gossip
//! deletes its entries then). What the resolver was told is kept here ([`Known`]), so a full
//! sync (either side restarted) carries it again.
//!
//! Across a restart of plexusd, the other hosts' endpoints the resolver still holds are
//! inherited and served until gossip confirms or deletes them, or [`INHERIT_FOR`] has
//! passed: their names keep answering while this host's gossip catches up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plexus_cnm::{Endpoint, Network, Sandbox, Scope, Service, TableEvent, TableEventKind};
use plexus_dns::control::Request;
use plexus_dns::record::{EndpointRecord, ENDPOINT_TABLE};
use plexus_dns::zone::EndpointInfo;

use super::{addrs, names, serves_names, task_of, Dns};
use crate::gossip::plane::TableSink;

/// How long inherited endpoints are served unconfirmed: the gossip's anti-entropy interval,
/// by which a restarted host has read every table of its networks from a peer.
pub const INHERIT_FOR: Duration = Duration::from_secs(30);

/// Whether an endpoint on `n` is published to the other hosts: `n` is global and serves
/// names.
pub fn published(n: &Network) -> bool {
    n.scope == Scope::Global && serves_names(n)
}

/// What other hosts are told of endpoint `ep` of sandbox `sb`: the names a local query
/// answers (the sandbox's name, its aliases on the network, its hostname), its addresses,
/// and the service it is a backend of (`service`: the sandbox's, if it is a task).
pub fn record(sb: &Sandbox, ep: &Endpoint, service: Option<&Service>) -> EndpointRecord {
    EndpointRecord {
        sandbox: sb.name.clone(),
        aliases: names(sb, ep).into_iter().skip(1).collect(),
        addrs: addrs(ep),
        service: task_of(ep, service),
    }
}

/// The resolver's id of another host's endpoint: the network's id and the entry's key (the
/// endpoint's id). A `/` is in no local endpoint's id, so a host cannot overwrite this
/// host's endpoints, nor one network's entry another's.
fn resolver_id(network_id: &str, key: &str) -> String {
    format!("{network_id}/{key}")
}

/// What the resolver holds of other hosts' endpoints.
#[derive(Debug, Default)]
pub struct Known {
    /// Learnt from gossip, by resolver id.
    live: BTreeMap<String, EndpointInfo>,
    /// Found in the resolver when plexusd started, not yet confirmed or deleted by gossip.
    inherited: BTreeMap<String, EndpointInfo>,
    /// When the unconfirmed inherited ones go.
    until: Option<Instant>,
}

impl Known {
    /// Every endpoint the resolver should hold: the learnt ones and the inherited ones.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointInfo> {
        self.live.values().chain(
            self.inherited
                .iter()
                .filter(|(id, _)| !self.live.contains_key(*id))
                .map(|(_, e)| e),
        )
    }

    /// Takes over the other hosts' endpoints of `held` (what the resolver holds now), kept
    /// until `now` + [`INHERIT_FOR`] unless gossip speaks of them first.
    pub fn inherit(&mut self, held: impl IntoIterator<Item = EndpointInfo>, now: Instant) {
        self.inherited = held
            .into_iter()
            .filter(EndpointInfo::is_remote)
            .map(|e| (e.id.clone(), e))
            .collect();
        self.until = (!self.inherited.is_empty()).then(|| now + INHERIT_FOR);
    }

    /// The resolver's ops for one change of an [`ENDPOINT_TABLE`] entry published by
    /// `owner` (`me`: this host, whose own entries teach nothing). A value that does not
    /// decode is ignored with a warning (and what was held under its key goes: its owner
    /// replaced it).
    pub fn apply(&mut self, event: &TableEvent, owner: IpAddr, me: Option<IpAddr>) -> Vec<Request> {
        let id = resolver_id(&event.network_id, &event.key);
        // What the resolver holds under this id, learnt or inherited: gossip speaks of it
        // now, so it is no longer inherited.
        let inherited = self.inherited.remove(&id);
        let held = self.live.remove(&id).or(inherited);
        let remove = |held: Option<EndpointInfo>| match held {
            Some(e) => vec![Request::RemoveEndpoint { id: e.id }],
            None => Vec::new(),
        };
        if event.kind == TableEventKind::Delete || Some(owner) == me {
            return remove(held);
        }
        let record = match EndpointRecord::decode(&event.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(network = %event.network_id, key = %event.key, %owner, error = %e, "a host published an endpoint record that does not decode: ignored");
                return remove(held);
            }
        };
        let info = EndpointInfo {
            id: id.clone(),
            network_id: event.network_id.clone(),
            sandbox_id: String::new(),
            names: record.names(),
            addrs: record.addrs,
            order: 0,
            host: Some(owner),
            service: record.service,
        };
        self.live.insert(id, info.clone());
        if held.as_ref() == Some(&info) {
            return Vec::new();
        }
        vec![Request::UpsertEndpoint { endpoint: info }]
    }

    /// Once the inheritance has run out (at `now`), the ops removing the inherited
    /// endpoints gossip never spoke of.
    pub fn expire(&mut self, now: Instant) -> Vec<Request> {
        if self.until.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.until = None;
        let gone = std::mem::take(&mut self.inherited);
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "other hosts' names not confirmed by the cluster since the restart: dropped"
            );
        }
        gone.into_keys()
            .map(|id| Request::RemoveEndpoint { id })
            .collect()
    }
}

impl Dns {
    /// Publishes sandbox `sb`'s endpoints on global networks that serve names, for the
    /// other hosts of each network to answer them.
    pub(super) fn publish(
        &self,
        sb: &Sandbox,
        eps: &[(Endpoint, Network)],
        service: Option<&Service>,
    ) {
        let Some(plane) = &self.plane else {
            return;
        };
        for (ep, n) in eps.iter().filter(|(_, n)| published(n)) {
            let result = (|| -> anyhow::Result<()> {
                let bytes = record(sb, ep, service).encode()?;
                // The network's driver joins its gossip in its join, which runs alongside
                // the commit this is called from: join first (idempotent), so the entry of
                // a host's first endpoint on the network is not refused.
                plane.join_network(&n.id)?;
                plane.put(&n.id, ENDPOINT_TABLE, &ep.id, bytes)?;
                Ok(())
            })();
            if let Err(e) = result {
                tracing::warn!(sandbox = %sb.name, network = %n.name, error = %e, "DNS: other hosts will not answer this endpoint's names");
            }
        }
    }

    /// Withdraws endpoint `endpoint_id`'s entry on network `network_id` (a missing one is
    /// no error).
    pub(super) fn withdraw(&self, network_id: &str, endpoint_id: &str) {
        let Some(plane) = &self.plane else {
            return;
        };
        if let Err(e) = plane.delete(network_id, ENDPOINT_TABLE, endpoint_id) {
            tracing::warn!(network = %network_id, endpoint = %endpoint_id, error = %e, "DNS: other hosts keep this endpoint's names until this host leaves the network");
        }
    }

    /// Drops the inherited endpoints gossip did not confirm in time.
    pub(super) async fn expire_inherited(&self) {
        let mut known = self.remote.lock().await;
        let ops = known.expire(Instant::now());
        if !ops.is_empty() {
            self.send(ops).await;
        }
    }

    /// Sends `ops` as one batch; if the resolver does not take them, the supervisor sends
    /// everything again.
    pub(super) async fn send(&self, ops: Vec<Request>) {
        if let Err(e) = self.client.call(&Request::Batch { ops }).await {
            tracing::warn!(error = %e, "DNS: the resolver did not take a change");
            self.stale.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl TableSink for Dns {
    async fn table_event(&self, event: TableEvent, owner: IpAddr) {
        // Held while the resolver is told, so a full sync never sends an older picture.
        let mut known = self.remote.lock().await;
        let me = self.plane.as_ref().map(|p| p.advertise_addr());
        let ops = known.apply(&event, owner, me);
        if !ops.is_empty() {
            self.send(ops).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST2: &str = "192.0.2.2";
    const ME: &str = "192.0.2.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn event(kind: TableEventKind, key: &str, value: Vec<u8>) -> TableEvent {
        TableEvent {
            kind,
            network_id: "net1".into(),
            table: ENDPOINT_TABLE.into(),
            key: key.into(),
            value,
        }
    }

    fn web2(addr: &str) -> Vec<u8> {
        EndpointRecord {
            sandbox: "web2".into(),
            aliases: vec!["www".into()],
            addrs: vec![ip(addr)],
            service: None,
        }
        .encode()
        .unwrap()
    }

    fn network(scope: Scope, driver: &str) -> Network {
        serde_json::from_value(serde_json::json!({
            "id": "net1", "name": "blue", "driver": driver, "scope": scope,
            "ipv4": [], "ipv6": [], "spec": plexus_cnm::NetworkSpec::default(), "created": "",
        }))
        .unwrap()
    }

    #[test]
    fn another_hosts_entry_becomes_an_endpoint_without_a_sandbox() {
        let mut k = Known::default();
        let me = Some(ip(ME));
        let ops = k.apply(
            &event(TableEventKind::Create, "ep2", web2("10.0.0.3")),
            ip(HOST2),
            me,
        );
        let expected = EndpointInfo {
            id: "net1/ep2".into(),
            network_id: "net1".into(),
            sandbox_id: String::new(),
            names: vec!["web2".into(), "www".into()],
            addrs: vec![ip("10.0.0.3")],
            order: 0,
            host: Some(ip(HOST2)),
            service: None,
        };
        assert_eq!(
            ops,
            [Request::UpsertEndpoint {
                endpoint: expected.clone()
            }]
        );
        assert_eq!(k.endpoints().collect::<Vec<_>>(), [&expected]);
        // The same value again (a re-publication): nothing to tell.
        let again = event(TableEventKind::Update, "ep2", web2("10.0.0.3"));
        assert!(k.apply(&again, ip(HOST2), me).is_empty());
        // A new address: told.
        let moved = event(TableEventKind::Update, "ep2", web2("10.0.0.9"));
        assert!(matches!(
            &k.apply(&moved, ip(HOST2), me)[..],
            [Request::UpsertEndpoint { endpoint }] if endpoint.addrs == [ip("10.0.0.9")]
        ));
        // Withdrawn: removed, once.
        let gone = event(TableEventKind::Delete, "ep2", Vec::new());
        assert_eq!(
            k.apply(&gone, ip(HOST2), me),
            [Request::RemoveEndpoint {
                id: "net1/ep2".into()
            }]
        );
        assert!(k.apply(&gone, ip(HOST2), me).is_empty());
        assert_eq!(k.endpoints().count(), 0);
    }

    #[test]
    fn own_and_malformed_entries_teach_nothing() {
        let mut k = Known::default();
        let me = Some(ip(ME));
        let mine = event(TableEventKind::Create, "ep1", web2("10.0.0.2"));
        assert!(
            k.apply(&mine, ip(ME), me).is_empty(),
            "this host's own entry"
        );
        for bad in [vec![], vec![9], vec![1, 1, 0, 5, b'w'], vec![1, 3, 0, 1, 0]] {
            let e = event(TableEventKind::Create, "ep3", bad.clone());
            assert!(k.apply(&e, ip(HOST2), me).is_empty(), "{bad:?}");
        }
        assert_eq!(k.endpoints().count(), 0);
        // A held entry replaced by garbage goes.
        k.apply(
            &event(TableEventKind::Create, "ep2", web2("10.0.0.3")),
            ip(HOST2),
            me,
        );
        let garbage = event(TableEventKind::Update, "ep2", vec![1, 0xff]);
        assert_eq!(
            k.apply(&garbage, ip(HOST2), me),
            [Request::RemoveEndpoint {
                id: "net1/ep2".into()
            }]
        );
    }

    #[test]
    fn inherited_endpoints_last_until_confirmed_or_expired() {
        let t0 = Instant::now();
        let held = |id: &str, host: Option<&str>| EndpointInfo {
            id: id.into(),
            network_id: "net1".into(),
            sandbox_id: String::new(),
            names: vec!["web2".into(), "www".into()],
            addrs: vec![ip("10.0.0.3")],
            order: 0,
            host: host.map(ip),
            service: None,
        };
        let mut k = Known::default();
        k.inherit(
            [
                held("net1/ep2", Some(HOST2)),
                held("net1/old", Some(HOST2)),
                held("local", None),
            ],
            t0,
        );
        let ids = |k: &Known| k.endpoints().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&k),
            ["net1/ep2", "net1/old"],
            "local ones are not inherited"
        );
        // Confirmed as it was: nothing to tell, and no longer at risk.
        let confirm = event(TableEventKind::Create, "ep2", web2("10.0.0.3"));
        assert!(k.apply(&confirm, ip(HOST2), Some(ip(ME))).is_empty());
        assert!(k.expire(t0 + INHERIT_FOR / 2).is_empty(), "not yet");
        assert_eq!(
            k.expire(t0 + INHERIT_FOR),
            [Request::RemoveEndpoint {
                id: "net1/old".into()
            }]
        );
        assert_eq!(ids(&k), ["net1/ep2"]);
        assert!(k.expire(t0 + INHERIT_FOR * 2).is_empty(), "once");
        // An inherited one deleted by gossip goes at once.
        k.inherit([held("net1/x", Some(HOST2))], t0);
        let del = event(TableEventKind::Delete, "x", Vec::new());
        assert_eq!(
            k.apply(&del, ip(HOST2), Some(ip(ME))),
            [Request::RemoveEndpoint {
                id: "net1/x".into()
            }]
        );
    }

    #[test]
    fn records_carry_the_local_names_and_only_global_networks_publish() {
        let sb: Sandbox = serde_json::from_value(serde_json::json!({
            "id": "s1", "name": "web1", "key": "/run/netns/web1", "owned_netns": true,
            "endpoints": ["e1"], "hostname": "host-one",
        }))
        .unwrap();
        let ep: Endpoint = serde_json::from_value(serde_json::json!({
            "id": "e1", "name": "web1", "network_id": "net1", "sandbox_id": "s1",
            "ipv4": "10.0.0.2/24", "ipv6": "fd00::2/64", "pool_ids": [], "mac": null,
            "interface": null, "aliases": ["www", "web1"], "ports": [],
        }))
        .unwrap();
        let r = record(&sb, &ep, None);
        assert_eq!(
            r.names(),
            names(&sb, &ep),
            "the same names as a local answer"
        );
        assert_eq!(r.names(), ["web1", "www", "host-one"]);
        assert_eq!(r.addrs, [ip("10.0.0.2"), ip("fd00::2")]);
        assert!(published(&network(Scope::Global, "overlay")));
        assert!(!published(&network(Scope::Local, "bridge")));
        assert!(!published(&network(Scope::Global, "null")));
    }

    #[test]
    fn a_tasks_record_names_its_service_and_other_hosts_tag_its_endpoint() {
        let sb: Sandbox = serde_json::from_value(serde_json::json!({
            "id": "s1", "name": "web1", "key": "/run/netns/web1", "owned_netns": true,
            "endpoints": ["e1", "e2"], "service": "svc1",
        }))
        .unwrap();
        let ep = |id: &str, net: &str| -> Endpoint {
            serde_json::from_value(serde_json::json!({
                "id": id, "name": "web1", "network_id": net, "sandbox_id": "s1",
                "ipv4": "10.0.0.2/24", "ipv6": null, "pool_ids": [], "mac": null,
                "interface": null, "aliases": [], "ports": [],
            }))
            .unwrap()
        };
        let service: Service = serde_json::from_value(serde_json::json!({
            "id": "svc1", "name": "websvc", "scope": "global", "networks": ["net1"],
            "endpoint_mode": "vip", "created": "", "updated": "", "version": 1,
        }))
        .unwrap();
        let r = record(&sb, &ep("e1", "net1"), Some(&service));
        let tag = plexus_dns::zone::ServiceRef {
            id: "svc1".into(),
            name: "websvc".into(),
        };
        assert_eq!(r.service.as_ref(), Some(&tag));
        // Its endpoint on a network that is not the service's is no backend.
        assert_eq!(record(&sb, &ep("e2", "net2"), Some(&service)).service, None);
        // Another host's task: its endpoint carries the service to the resolver.
        let mut k = Known::default();
        let ops = k.apply(
            &event(TableEventKind::Create, "e1", r.encode().unwrap()),
            ip(HOST2),
            Some(ip(ME)),
        );
        assert!(matches!(
            &ops[..],
            [Request::UpsertEndpoint { endpoint }] if endpoint.service.as_ref() == Some(&tag)
                && endpoint.host == Some(ip(HOST2))
        ));
    }
}
