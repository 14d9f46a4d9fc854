//! The control plane over gossip, both ways: [`GossipControlPlane`], what global drivers
//! (and the embedded DNS) publish through, and [`route`], the task that tells the drivers
//! (and the [`TableSink`]s of tables that are not a driver's) what the cluster says.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use plexus_cnm::{
    ControlPlane, ControlPlaneError, Controller, NodeDiscovery, TableEvent, TableEventKind,
};
use plexus_gossip::runtime::GossipHandle;
use plexus_gossip::{EntryEvent, EntryEventKind, Event, MemberState};
use tokio::sync::broadcast::error::RecvError;

/// [`ControlPlane`] over this host's gossip runtime: a network's tables are the gossip
/// network named by the network's id.
#[derive(Debug, Clone)]
pub struct GossipControlPlane {
    handle: GossipHandle,
}

impl GossipControlPlane {
    /// The control plane of `handle`'s node.
    pub fn new(handle: GossipHandle) -> Self {
        Self { handle }
    }
}

fn plane_err(what: &str, network_id: &str, e: impl std::fmt::Display) -> ControlPlaneError {
    ControlPlaneError(format!("{what} (network {network_id}): {e}"))
}

impl ControlPlane for GossipControlPlane {
    fn advertise_addr(&self) -> IpAddr {
        self.handle.addr().ip()
    }

    fn join_network(&self, network_id: &str) -> Result<(), ControlPlaneError> {
        self.handle
            .join_network(network_id)
            .map_err(|e| plane_err("joining the network's gossip", network_id, e))
    }

    fn leave_network(&self, network_id: &str) {
        self.handle.leave_network(network_id);
    }

    fn put(
        &self,
        network_id: &str,
        table: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ControlPlaneError> {
        self.handle
            .put(network_id, table, key, &value)
            .map_err(|e| plane_err(&format!("publishing {table}/{key}"), network_id, e))
    }

    fn delete(&self, network_id: &str, table: &str, key: &str) -> Result<(), ControlPlaneError> {
        match self.handle.delete(network_id, table, key) {
            Ok(()) => Ok(()),
            // Not attached: nothing of ours is published there.
            Err(plexus_gossip::GossipError::NotAttached(_)) => Ok(()),
            Err(e) => Err(plane_err(
                &format!("withdrawing {table}/{key}"),
                network_id,
                e,
            )),
        }
    }

    fn entries(&self, network_id: &str, table: &str) -> Vec<(String, Vec<u8>, IpAddr)> {
        self.handle
            .entries(network_id, table)
            .into_iter()
            .map(|(k, v, owner)| (k, v, owner.ip()))
            .collect()
    }

    fn synced(&self, network_id: &str) -> bool {
        self.handle.network_synced(network_id)
    }
}

/// Takes the entries of one table in place of the network's driver: a table that is not a
/// driver's (the embedded DNS's [`ENDPOINT_TABLE`](plexus_dns::record::ENDPOINT_TABLE)).
#[async_trait]
pub trait TableSink: Send + Sync {
    /// One change of an entry (this host's own entries included), published by the host
    /// whose gossip address is `owner`.
    async fn table_event(&self, event: TableEvent, owner: IpAddr);
}

/// The tables whose entries go to a [`TableSink`] instead of the network's driver, by name.
pub type Sinks = BTreeMap<String, Arc<dyn TableSink>>;

type EntryKey = (String, String, String);

/// What the drivers and sinks were told: every visible entry (value and owner), and every
/// host alive.
#[derive(Default)]
struct Told {
    entries: BTreeMap<EntryKey, (Vec<u8>, IpAddr)>,
    hosts: BTreeSet<SocketAddr>,
}

/// Where table events go: a table's sink, else the network's driver.
struct Targets {
    controller: Arc<Controller>,
    sinks: Sinks,
}

/// Carries the cluster to the drivers until the runtime stops: every table change of the
/// networks this host joined goes to [`Controller::table_event`] (one task, so in order for
/// each key), or to the table's [`TableSink`] in `sinks`; every host that comes alive to
/// `discover_new` and every host that dies or leaves (SWIM) to `discover_delete`. If it falls
/// behind the runtime's event channel, it reads the tables and members again and tells only
/// the difference from what it told.
pub async fn route(handle: GossipHandle, controller: Arc<Controller>, sinks: Sinks) {
    let me = handle.addr();
    let mut rx = handle.watch();
    let mut told = Told::default();
    let targets = Targets { controller, sinks };
    resync(&handle, &targets, &mut told).await;
    loop {
        match rx.recv().await {
            Ok(Event::Entry(e)) => {
                let key = (e.network.clone(), e.table.clone(), e.key.clone());
                match e.kind {
                    EntryEventKind::Delete => {
                        told.entries.remove(&key);
                    }
                    _ => {
                        told.entries.insert(key, (e.value.clone(), e.owner.ip()));
                    }
                }
                entry(&targets, &e).await;
            }
            Ok(Event::Member { node, state }) => {
                member(&targets.controller, &mut told, me, node, state).await;
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "the gossip router fell behind; reading the tables again"
                );
                resync(&handle, &targets, &mut told).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn kind(k: EntryEventKind) -> TableEventKind {
    match k {
        EntryEventKind::Create => TableEventKind::Create,
        EntryEventKind::Update => TableEventKind::Update,
        EntryEventKind::Delete => TableEventKind::Delete,
    }
}

async fn entry(targets: &Targets, e: &EntryEvent<SocketAddr>) {
    notify(
        targets,
        TableEvent {
            kind: kind(e.kind),
            network_id: e.network.clone(),
            table: e.table.clone(),
            key: e.key.clone(),
            value: e.value.clone(),
        },
        e.owner.ip(),
    )
    .await;
}

async fn notify(targets: &Targets, event: TableEvent, owner: IpAddr) {
    if let Some(sink) = targets.sinks.get(&event.table) {
        sink.table_event(event, owner).await;
        return;
    }
    match targets.controller.table_event(&event).await {
        Ok(()) => {}
        // A network deleted here while its gossip lingers: nobody to tell.
        Err(e @ plexus_cnm::CnmError::NotFound { .. }) => {
            tracing::debug!(network = %event.network_id, table = %event.table, key = %event.key, error = %e, "a table event of an unknown network");
        }
        Err(e) => {
            tracing::warn!(network = %event.network_id, table = %event.table, key = %event.key, error = %e, "a table event was not taken");
        }
    }
}

async fn member(
    controller: &Controller,
    told: &mut Told,
    me: SocketAddr,
    node: SocketAddr,
    state: MemberState,
) {
    let discovery = NodeDiscovery {
        address: node.ip(),
        self_node: node == me,
    };
    match state {
        MemberState::Alive if told.hosts.insert(node) => {
            tracing::info!(host = %node, "host joined the cluster (gossip)");
            if let Err(e) = controller.node_joined(&discovery).await {
                tracing::warn!(host = %node, error = %e, "a driver could not learn of a host");
            }
        }
        MemberState::Dead | MemberState::Left if told.hosts.remove(&node) => {
            tracing::info!(host = %node, ?state, "host left the cluster (gossip)");
            if let Err(e) = controller.node_left(&discovery).await {
                tracing::warn!(host = %node, error = %e, "a driver could not forget a host");
            }
        }
        _ => {}
    }
}

/// Tells the drivers and sinks the difference between what they were told and what the
/// runtime holds.
async fn resync(handle: &GossipHandle, targets: &Targets, told: &mut Told) {
    let me = handle.addr();
    let mut now: BTreeMap<EntryKey, (Vec<u8>, IpAddr)> = BTreeMap::new();
    for network in handle.networks().into_iter().filter(|n| n.local) {
        for e in handle.table_dump(&network.name) {
            if e.visible && !e.deleted {
                now.insert(
                    (network.name.clone(), e.table, e.key),
                    (e.value, e.owner.ip()),
                );
            }
        }
    }
    let gone: Vec<(EntryKey, (Vec<u8>, IpAddr))> = told
        .entries
        .iter()
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((network_id, table, key), (value, owner)) in gone {
        let event = TableEvent {
            kind: TableEventKind::Delete,
            network_id,
            table,
            key,
            value,
        };
        notify(targets, event, owner).await;
    }
    for ((network_id, table, key), (value, owner)) in &now {
        let kind = match told
            .entries
            .get(&(network_id.clone(), table.clone(), key.clone()))
        {
            None => TableEventKind::Create,
            Some((old, old_owner)) if old != value || old_owner != owner => TableEventKind::Update,
            Some(_) => continue,
        };
        let event = TableEvent {
            kind,
            network_id: network_id.clone(),
            table: table.clone(),
            key: key.clone(),
            value: value.clone(),
        };
        notify(targets, event, *owner).await;
    }
    told.entries = now;
    let mut states: Vec<(SocketAddr, MemberState)> = handle
        .members()
        .into_iter()
        .map(|m| (m.addr, m.state))
        .collect();
    states.push((me, MemberState::Alive));
    let known: BTreeSet<SocketAddr> = states.iter().map(|(a, _)| *a).collect();
    let vanished: Vec<SocketAddr> = told.hosts.difference(&known).copied().collect();
    for node in vanished {
        member(&targets.controller, told, me, node, MemberState::Dead).await;
    }
    for (node, state) in states {
        member(&targets.controller, told, me, node, state).await;
    }
}

#[cfg(test)]
#[path = "plane_tests.rs"]
mod tests;
