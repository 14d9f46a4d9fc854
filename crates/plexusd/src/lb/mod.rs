//! Services' virtual IPs from plexusd's side: keeps, in the namespace of every sandbox of
//! this host, the `ip plexus-lb` table (plexus-lb) holding the services of the sandbox's
//! networks, each with its VIP on that network and its backends there.
//!
//! **The kernel follows the store; reconciliation repairs.** The views are computed from the
//! store's records only (services, their tasks, this host's sandboxes and their endpoints:
//! `model.rs`). Each commit reaches [`Lb`] as a [`CommitObserver`], inside the operation and
//! before it returns: the records the events name are read again, and each sandbox whose
//! view changed gets only what changed, one service at a time ([`plexus_lb::Dispatcher::
//! apply_service`], one atomic batch each, a backend added or removed being element changes
//! of one map). A change the kernel refuses (the table is not what the daemon believed) is
//! followed at once by a reconciliation of that sandbox's table. At start-up, before the
//! API serves, and every `--reconcile-interval`, [`Lb::sync`] reads every sandbox's table
//! and reconciles it to the store's view, so a crash between a commit and its kernel change,
//! a restart, or a table changed by hand is repaired. Stopping or killing plexusd leaves the
//! tables alone: traffic to the VIPs keeps flowing.
//!
//! A sandbox removed takes its table with its namespace; one whose namespace was handed over
//! (and outlives it) has its table deleted. IPv6 VIPs and backends are skipped (plexus-lb is
//! IPv4 only).
//!
//! **Other hosts' backends** (global services), as libnetwork's `service_table`: the service
//! records are in the cluster store, so every host knows each service and its VIPs; the task
//! list travels by gossip. For each task endpoint of this host on a global network, a
//! [`record::TaskRecord`] is put in the network's [`record::SERVICE_TABLE`] (keyed by the
//! endpoint's id) when the task joins and deleted when it leaves; what should be published
//! is computed from the store like the views ([`model::publication`]) and compared with
//! what was, so a restart republishes everything and a pass retries what failed. The other
//! hosts' entries reach [`Lb`] as that table's [`TableSink`]: each change updates
//! [`model::Model::remote`] and takes every sandbox here on the network to its new view.
//! Gossip deletes a host's entries when it leaves the network or is declared dead, so its
//! backends leave the rotation then; the store's task records of other hosts are never
//! load-balanced to ([`model::is_local`]), since they outlive their host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use plexus_cnm::{
    CnmError, CommitObserver, ControlPlane, Controller, Event, EventAction, EventType, TableEvent,
    TableEventKind,
};
use plexus_lb::View;

use crate::gossip::plane::TableSink;

mod kernel;
pub mod mesh;
mod mesh_kernel;
mod mesh_run;
mod metrics;
pub mod model;
pub use plexus_lb::record;

pub use mesh_run::MeshConfig;
pub use metrics::LbMetrics;
use model::{Entry, Member, Model, RemoteTask};

/// plexusd's load balancer.
pub struct Lb {
    state: tokio::sync::Mutex<State>,
    metrics: LbMetrics,
    /// Gossip, when this host runs it: where this host's tasks on global networks are
    /// published and the other hosts' come from.
    plane: Option<Arc<dyn ControlPlane>>,
    /// The routing mesh's settings.
    mesh: MeshConfig,
    /// Woken when the routing mesh needs this host's ingress sandbox and it is missing.
    ingress_wanted: tokio::sync::Notify,
    /// When this daemon started (for [`INHERIT_FOR`]).
    started: std::time::Instant,
}

/// This host's [`record::SERVICE_TABLE`] entries of one service, by (network id, endpoint
/// id): the encoded record.
type Publication = BTreeMap<(String, String), Vec<u8>>;

#[derive(Default)]
struct State {
    model: Model,
    /// What each sandbox's table holds, as last applied or read.
    applied: BTreeMap<String, View>,
    /// Sandboxes whose table is not known (a change failed): reconciled whole at their next
    /// change, and by the next pass.
    dirty: BTreeSet<String>,
    /// Whether a [`Lb::sync`] ran: commits before it (start-up reconciliation's) are left
    /// to it.
    synced: bool,
    /// What this host published, by service id.
    published: BTreeMap<String, Publication>,
    /// What the routing mesh's tables hold.
    mesh: mesh_run::Applied,
}

/// One sandbox's work for the blocking pool.
struct Job {
    sandbox: String,
    name: String,
    netns: PathBuf,
    /// `None`: reconcile the whole table.
    changes: Option<Vec<model::Change>>,
    want: View,
    /// Services whose backends in the table are kept when reconciling (see
    /// [`kernel::inherited`]).
    inherit: BTreeSet<String>,
}

/// How long after start-up a restarted daemon keeps the other hosts' backends its tables
/// hold while gossip has not brought them back (the network's table not yet compared with a
/// peer's): past it, the tables follow what gossip says.
const INHERIT_FOR: Duration = Duration::from_secs(30);

/// What a [`Lb::sync`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Sandboxes whose table was checked.
    pub sandboxes: usize,
    /// Tables that differed from the store and were repaired.
    pub repaired: usize,
    /// Tables that could not be made to match (logged).
    pub failed: usize,
}

/// What this host publishes of `service`'s tasks `tasks` (records that do not encode are
/// logged and left out).
fn publication(
    service: &plexus_cnm::Service,
    tasks: &[plexus_cnm::Task],
    host_id: &str,
) -> Publication {
    model::publication(service, tasks, host_id)
        .into_iter()
        .filter_map(|(k, r)| match r.encode() {
            Ok(b) => Some((k, b)),
            Err(e) => {
                tracing::warn!(service = %service.name, sandbox = %r.sandbox, error = %e, "a task cannot be published to the other hosts");
                None
            }
        })
        .collect()
}

/// One service as the load balancer keeps it.
struct Loaded {
    entries: Vec<Entry>,
    publication: Publication,
    ported: Option<mesh::Ported>,
}

/// The service `id` as the load balancer keeps it; `None` when it is gone.
async fn load_service(controller: &Controller, id: &str) -> Result<Option<Loaded>> {
    let service = match controller.service(id).await {
        Ok(s) => s,
        Err(CnmError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading service {id}")),
    };
    let tasks = controller
        .service_tasks(&service)
        .await
        .with_context(|| format!("reading service {}'s tasks", service.name))?;
    Ok(Some(Loaded {
        entries: model::entries(&service, &tasks, controller.host_id()),
        publication: publication(&service, &tasks, controller.host_id()),
        ported: mesh::ported(&service, &tasks, controller.host_id()),
    }))
}

/// The sandbox `id` with its networks; `None` when it is gone.
async fn load_member(controller: &Controller, id: &str) -> Result<Option<Member>> {
    let sandbox = match controller.sandbox(id).await {
        Ok(s) => s,
        Err(CnmError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading sandbox {id}")),
    };
    let eps = controller
        .sandbox_endpoints(&sandbox)
        .await
        .with_context(|| format!("reading sandbox {}'s endpoints", sandbox.name))?;
    Ok(Some(Member::new(&sandbox, eps.iter().map(|(ep, _)| ep))))
}

/// Everything, from the store, with this host's publications.
async fn load_model(controller: &Controller) -> Result<(Model, BTreeMap<String, Publication>)> {
    let mut model = Model::default();
    let mut published = BTreeMap::new();
    for service in controller.services().await.context("listing services")? {
        let tasks = controller
            .service_tasks(&service)
            .await
            .with_context(|| format!("reading service {}'s tasks", service.name))?;
        model.services.insert(
            service.id.clone(),
            model::entries(&service, &tasks, controller.host_id()),
        );
        published.insert(
            service.id.clone(),
            publication(&service, &tasks, controller.host_id()),
        );
        if let Some(p) = mesh::ported(&service, &tasks, controller.host_id()) {
            model.mesh.services.insert(service.id.clone(), p);
        }
    }
    model.mesh.ingress = controller
        .ingress_network_id()
        .await
        .context("reading the ingress network")?;
    for sandbox in controller.sandboxes().await.context("listing sandboxes")? {
        let eps = controller
            .sandbox_endpoints(&sandbox)
            .await
            .with_context(|| format!("reading sandbox {}'s endpoints", sandbox.name))?;
        model.members.insert(
            sandbox.id.clone(),
            Member::new(&sandbox, eps.iter().map(|(ep, _)| ep)),
        );
    }
    Ok((model, published))
}

impl Lb {
    /// A load balancer that knows nothing yet: [`sync`](Self::sync) before serving.
    pub fn new(
        metrics: LbMetrics,
        plane: Option<Arc<dyn ControlPlane>>,
        mesh: MeshConfig,
    ) -> Arc<Self> {
        Arc::new(Lb {
            state: tokio::sync::Mutex::new(State::default()),
            metrics,
            plane,
            mesh,
            ingress_wanted: tokio::sync::Notify::new(),
            started: std::time::Instant::now(),
        })
    }

    /// The gossip table sinks of the load balancer: [`record::SERVICE_TABLE`] and
    /// [`record::INGRESS_TABLE`].
    pub fn sinks(self: &Arc<Self>) -> crate::gossip::plane::Sinks {
        let sink: Arc<dyn TableSink> = self.clone();
        [
            (record::SERVICE_TABLE.to_string(), sink.clone()),
            (record::INGRESS_TABLE.to_string(), sink),
        ]
        .into()
    }

    /// Takes service `id`'s published entries from what `state` says was published to
    /// `want`: puts what is new or changed (joining the network's gossip first, idempotent:
    /// the overlay driver joins it in its join, which may not have run yet), deletes what is
    /// gone. What fails is logged and left unrecorded, so the next pass tries again.
    fn publish(&self, state: &mut State, id: &str, want: Publication) {
        let Some(plane) = &self.plane else {
            return;
        };
        let had = state.published.remove(id).unwrap_or_default();
        let mut now = Publication::new();
        for (k @ (network, endpoint), bytes) in &had {
            if want.contains_key(k) {
                continue;
            }
            if let Err(e) = plane.delete(network, record::SERVICE_TABLE, endpoint) {
                tracing::warn!(%network, %endpoint, error = %e, "load balancing: other hosts keep this task until this host leaves the network");
                now.insert(k.clone(), bytes.clone());
            }
        }
        for (k, bytes) in want {
            let (network, endpoint) = &k;
            if had.get(&k) == Some(&bytes) {
                now.insert(k, bytes);
                continue;
            }
            let put = plane
                .join_network(network)
                .and_then(|()| plane.put(network, record::SERVICE_TABLE, endpoint, bytes.clone()));
            match put {
                Ok(()) => {
                    now.insert(k, bytes);
                }
                Err(e) => {
                    tracing::warn!(%network, %endpoint, error = %e, "load balancing: other hosts do not load-balance to this task yet; the next pass tries again")
                }
            }
        }
        if !now.is_empty() {
            state.published.insert(id.to_string(), now);
        }
    }

    /// Deletes this host's entries in the [`record::SERVICE_TABLE`] of `networks` that it
    /// does not publish (a task gone while plexusd was down, learnt back from a peer).
    fn withdraw_strays(&self, state: &State, networks: &BTreeSet<String>) {
        let Some(plane) = &self.plane else {
            return;
        };
        let me = plane.advertise_addr();
        let ours: BTreeSet<&(String, String)> =
            state.published.values().flat_map(|p| p.keys()).collect();
        for network in networks {
            for (key, _, owner) in plane.entries(network, record::SERVICE_TABLE) {
                if owner == me && !ours.contains(&(network.clone(), key.clone())) {
                    tracing::info!(%network, endpoint = %key, "load balancing: withdrawing a task this host no longer has");
                    let _ = plane.delete(network, record::SERVICE_TABLE, &key);
                }
            }
        }
    }

    /// Reads the store and every sandbox's table, and repairs each table that differs from
    /// its view: at start-up (before the API serves) and periodically.
    pub async fn sync(&self, controller: &Controller) -> Result<SyncReport> {
        let mut state = self.state.lock().await;
        let (mut model, publications) = load_model(controller).await?;
        // Other hosts' tasks and ingress sandboxes are not in the store: kept from gossip.
        model.remote = std::mem::take(&mut state.model.remote);
        model.mesh.gateways = std::mem::take(&mut state.model.mesh.gateways);
        let jobs: Vec<Job> = model
            .members
            .iter()
            .map(|(id, m)| Job {
                sandbox: id.clone(),
                name: m.name.clone(),
                netns: m.netns.clone(),
                changes: None,
                want: model.view_of(id),
                inherit: self.inherit(&model, m),
            })
            .collect();
        state.model = model;
        // A service gone while plexusd was down or since the last pass: withdrawn.
        let gone: Vec<String> = state
            .published
            .keys()
            .filter(|id| !publications.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.publish(&mut state, &id, Publication::new());
        }
        for (id, want) in publications {
            self.publish(&mut state, &id, want);
        }
        let networks: BTreeSet<String> = state
            .model
            .services
            .values()
            .flatten()
            .map(|e| e.network.clone())
            .chain(state.model.remote.keys().cloned())
            .collect();
        self.withdraw_strays(&state, &networks);
        let outcomes = self.run(jobs).await;
        let mut report = SyncReport::default();
        state.applied.clear();
        state.dirty.clear();
        state.synced = true;
        for (job, (outcome, repaired, held)) in outcomes {
            report.sandboxes += 1;
            report.repaired += usize::from(repaired);
            match outcome {
                kernel::Outcome::Done => {
                    state.applied.insert(job.sandbox, held);
                }
                kernel::Outcome::Gone => {}
                kernel::Outcome::Failed => {
                    report.failed += 1;
                    state.dirty.insert(job.sandbox);
                }
            }
        }
        self.metrics.services(state.model.service_count());
        self.mesh_update(&mut state, true).await;
        Ok(report)
    }

    /// The services of `member`'s view whose other hosts' backends are kept from its table:
    /// those on a network whose gossip table is not compared with a peer's yet, within
    /// [`INHERIT_FOR`] of start-up.
    fn inherit(&self, model: &Model, member: &Member) -> BTreeSet<String> {
        let Some(plane) = &self.plane else {
            return BTreeSet::new();
        };
        if self.started.elapsed() > INHERIT_FOR {
            return BTreeSet::new();
        }
        model
            .services
            .values()
            .flatten()
            .filter(|e| member.networks.contains(&e.network) && !plane.synced(&e.network))
            .map(|e| e.key.clone())
            .collect()
    }

    /// Runs `jobs` on the blocking pool, one sandbox after the other.
    async fn run(&self, jobs: Vec<Job>) -> Vec<(Job, (kernel::Outcome, bool, View))> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let metrics = self.metrics.clone();
        let work = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|job| {
                    let r = match &job.changes {
                        None => kernel::reconcile(
                            &job.name,
                            &job.netns,
                            &job.want,
                            &job.inherit,
                            &metrics,
                        ),
                        Some(ch) => (
                            kernel::apply(&job.name, &job.netns, ch, &job.want, &metrics),
                            false,
                            job.want.clone(),
                        ),
                    };
                    (job, r)
                })
                .collect::<Vec<_>>()
        });
        match work.await {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "load balancing: the kernel work stopped");
                Vec::new()
            }
        }
    }

    /// Re-reads what `events` name and takes every sandbox whose view changed to its new one.
    async fn follow(&self, controller: &Controller, events: &[Arc<Event>]) -> Result<()> {
        let mut services: BTreeSet<String> = BTreeSet::new();
        let mut sandboxes: BTreeSet<String> = BTreeSet::new();
        let mut destroyed: BTreeSet<String> = BTreeSet::new();
        for e in events {
            match (e.kind, e.action) {
                (EventType::Service, _) => {
                    services.insert(e.actor.clone());
                }
                (EventType::Endpoint, _) => {
                    if let Some(sb) = e.attributes.get("container") {
                        sandboxes.insert(sb.clone());
                    }
                }
                (EventType::Sandbox, EventAction::Destroy) => {
                    destroyed.insert(e.actor.clone());
                }
                (EventType::Sandbox, _) => {
                    sandboxes.insert(e.actor.clone());
                }
                _ => {}
            }
        }
        if services.is_empty() && sandboxes.is_empty() && destroyed.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        if !state.synced {
            return Ok(());
        }
        let mut affected: BTreeSet<String> = BTreeSet::new();
        for id in &sandboxes {
            if destroyed.contains(id) {
                continue;
            }
            match load_member(controller, id).await? {
                Some(m) => {
                    state.model.members.insert(id.clone(), m);
                    affected.insert(id.clone());
                }
                None => {
                    destroyed.insert(id.clone());
                }
            }
        }
        let mut left = Vec::new();
        for id in &destroyed {
            state.applied.remove(id);
            state.dirty.remove(id);
            if let Some(m) = state.model.members.remove(id) {
                // A namespace Plexus made goes with the sandbox, and its table with it.
                if !m.owned {
                    left.push((m.name, m.netns));
                }
            }
        }
        if !left.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for (name, netns) in left {
                    kernel::remove(&name, &netns);
                }
            })
            .await;
        }
        affected.extend(
            self.reload_services(controller, &mut state, &services)
                .await?,
        );
        self.update(&mut state, affected).await;
        self.mesh_update(&mut state, false).await;
        Ok(())
    }

    /// Reads the services `ids` again, publishes this host's tasks of them, and returns the
    /// sandboxes whose view may have changed.
    async fn reload_services(
        &self,
        controller: &Controller,
        state: &mut State,
        ids: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>> {
        let mut affected = BTreeSet::new();
        if !ids.is_empty() && state.model.mesh.ingress.is_none() {
            // Made by a service of another host, or of this one just now.
            state.model.mesh.ingress = controller
                .ingress_network_id()
                .await
                .context("reading the ingress network")?;
        }
        for id in ids {
            let mut networks = state.model.networks_of(id);
            match load_service(controller, id).await? {
                Some(loaded) => {
                    networks.extend(loaded.entries.iter().map(|e| e.network.clone()));
                    state.model.services.insert(id.clone(), loaded.entries);
                    match loaded.ported {
                        Some(p) => state.model.mesh.services.insert(id.clone(), p),
                        None => state.model.mesh.services.remove(id),
                    };
                    self.publish(state, id, loaded.publication);
                }
                None => {
                    state.model.services.remove(id);
                    state.model.mesh.services.remove(id);
                    self.publish(state, id, Publication::new());
                }
            }
            affected.extend(state.model.members_on(&networks));
        }
        Ok(affected)
    }

    /// Takes each sandbox of `affected` to its view: only the services that changed, or
    /// the whole table if it is not known.
    async fn update(&self, state: &mut State, affected: BTreeSet<String>) {
        let mut jobs = Vec::new();
        for id in affected {
            let Some(m) = state.model.members.get(&id) else {
                continue;
            };
            let want = state.model.view_of(&id);
            let changes = if state.dirty.contains(&id) {
                None
            } else {
                let from = state.applied.get(&id).cloned().unwrap_or_default();
                let ch = model::changes(&from, &want);
                if ch.is_empty() {
                    continue;
                }
                Some(ch)
            };
            jobs.push(Job {
                sandbox: id,
                name: m.name.clone(),
                netns: m.netns.clone(),
                changes,
                want,
                inherit: BTreeSet::new(),
            });
        }
        for (job, (outcome, _, held)) in self.run(jobs).await {
            match outcome {
                kernel::Outcome::Done => {
                    state.dirty.remove(&job.sandbox);
                    state.applied.insert(job.sandbox, held);
                }
                kernel::Outcome::Gone => {
                    state.applied.remove(&job.sandbox);
                }
                kernel::Outcome::Failed => {
                    state.applied.remove(&job.sandbox);
                    state.dirty.insert(job.sandbox);
                }
            }
        }
        self.metrics.services(state.model.service_count());
    }

    /// Runs [`sync`](Self::sync) every `every` until the runtime stops; a failed pass is
    /// logged and the next one tries again.
    pub fn spawn_periodic(
        self: &Arc<Self>,
        controller: Arc<Controller>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let lb = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: the start-up pass just ran.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match lb.sync(&controller).await {
                    Ok(r) if r.repaired > 0 || r.failed > 0 => {
                        tracing::info!(
                            sandboxes = r.sandboxes,
                            repaired = r.repaired,
                            failed = r.failed,
                            "load-balancing tables reconciled with the store"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(
                            "load-balancing reconciliation: {e:#}; trying again next interval"
                        )
                    }
                }
            }
        })
    }
}

#[async_trait]
impl CommitObserver for Lb {
    async fn committed(&self, controller: &Controller, events: &[Arc<Event>]) {
        if let Err(e) = self.follow(controller, events).await {
            // The change is committed; the next pass reads everything again.
            self.metrics.update("error", None);
            tracing::warn!("load balancing: following a change: {e:#}; the periodic pass repairs");
        }
    }
}

/// What one [`record::SERVICE_TABLE`] event does to the other hosts' tasks known: `true`
/// when they changed. `me`: this host's gossip address (its own entries teach nothing). A
/// value that does not decode is ignored with a warning, and what was held under its key
/// goes (its owner replaced it).
fn learn(
    remote: &mut BTreeMap<String, BTreeMap<String, RemoteTask>>,
    event: &TableEvent,
    owner: std::net::IpAddr,
    me: Option<std::net::IpAddr>,
) -> bool {
    let tasks = remote.entry(event.network_id.clone()).or_default();
    let held = tasks.remove(&event.key);
    let new = if event.kind == TableEventKind::Delete || Some(owner) == me {
        None
    } else {
        match record::TaskRecord::decode(&event.value) {
            Ok(r) => Some(RemoteTask {
                owner,
                service_id: r.service_id,
                addr: r.addr,
            }),
            Err(e) => {
                tracing::warn!(network = %event.network_id, key = %event.key, %owner, error = %e, "a host published a service task record that does not decode: ignored");
                None
            }
        }
    };
    let changed = held != new;
    if let Some(t) = new {
        tasks.insert(event.key.clone(), t);
    }
    if tasks.is_empty() {
        remote.remove(&event.network_id);
    }
    changed
}

#[async_trait]
impl TableSink for Lb {
    async fn table_event(&self, event: TableEvent, owner: std::net::IpAddr) {
        let me = self.plane.as_ref().map(|p| p.advertise_addr());
        let mut state = self.state.lock().await;
        if event.table == record::INGRESS_TABLE {
            if mesh_run::learn_gateway(&mut state.model.mesh.gateways, &event, owner, me)
                && state.synced
            {
                self.mesh_update(&mut state, false).await;
            }
            return;
        }
        if !learn(&mut state.model.remote, &event, owner, me) {
            return;
        }
        // Before the first sync, that sync applies it.
        if !state.synced {
            return;
        }
        let affected = state
            .model
            .members_on(&[event.network_id.clone()].into())
            .into_iter()
            .collect();
        self.update(&mut state, affected).await;
        self.mesh_update(&mut state, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: TableEventKind, key: &str, value: Vec<u8>) -> TableEvent {
        TableEvent {
            kind,
            network_id: "net1".into(),
            table: record::SERVICE_TABLE.into(),
            key: key.into(),
            value,
        }
    }

    fn task(addr: [u8; 4]) -> Vec<u8> {
        record::TaskRecord {
            service_id: "ab".repeat(32),
            service_name: "web".into(),
            vips: vec![[10, 0, 0, 2].into()],
            addr: addr.into(),
            sandbox: "t".into(),
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn other_hosts_tasks_come_and_go_own_and_garbage_ignored() {
        let (h2, me) = (
            "192.0.2.2".parse().unwrap(),
            Some("192.0.2.1".parse().unwrap()),
        );
        let mut r = BTreeMap::new();
        assert!(learn(
            &mut r,
            &event(TableEventKind::Create, "e1", task([10, 0, 0, 5])),
            h2,
            me
        ));
        assert_eq!(r["net1"]["e1"].addr, std::net::Ipv4Addr::new(10, 0, 0, 5));
        assert!(!learn(
            &mut r,
            &event(TableEventKind::Update, "e1", task([10, 0, 0, 5])),
            h2,
            me
        ));
        assert!(learn(
            &mut r,
            &event(TableEventKind::Update, "e1", task([10, 0, 0, 6])),
            h2,
            me
        ));
        // This host's own entry: nothing.
        assert!(!learn(
            &mut r,
            &event(TableEventKind::Create, "e9", task([10, 0, 0, 9])),
            me.unwrap(),
            me
        ));
        // Garbage replacing a held entry: it goes.
        assert!(learn(
            &mut r,
            &event(TableEventKind::Update, "e1", vec![1, 0xff]),
            h2,
            me
        ));
        assert!(r.is_empty());
        assert!(learn(
            &mut r,
            &event(TableEventKind::Create, "e1", task([10, 0, 0, 5])),
            h2,
            me
        ));
        assert!(learn(
            &mut r,
            &event(TableEventKind::Delete, "e1", vec![]),
            h2,
            me
        ));
        assert!(!learn(
            &mut r,
            &event(TableEventKind::Delete, "e1", vec![]),
            h2,
            me
        ));
        assert!(r.is_empty());
    }
}
