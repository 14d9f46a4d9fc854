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
//! IPv4 only). Backends on other hosts (global services) are not load-balanced to yet:
//! [`model::is_local`] is where they will be admitted, with their host's liveness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use plexus_cnm::{CnmError, CommitObserver, Controller, Event, EventAction, EventType};
use plexus_lb::View;

mod kernel;
mod metrics;
pub mod model;
pub mod record;

pub use metrics::LbMetrics;
use model::{Entry, Member, Model};

/// plexusd's load balancer.
pub struct Lb {
    state: tokio::sync::Mutex<State>,
    metrics: LbMetrics,
}

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
}

/// One sandbox's work for the blocking pool.
struct Job {
    sandbox: String,
    name: String,
    netns: PathBuf,
    /// `None`: reconcile the whole table.
    changes: Option<Vec<model::Change>>,
    want: View,
}

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

/// The entries of the service `id`; `None` when it is gone.
async fn load_service(controller: &Controller, id: &str) -> Result<Option<Vec<Entry>>> {
    let service = match controller.service(id).await {
        Ok(s) => s,
        Err(CnmError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading service {id}")),
    };
    let tasks = controller
        .service_tasks(&service)
        .await
        .with_context(|| format!("reading service {}'s tasks", service.name))?;
    Ok(Some(model::entries(&service, &tasks, controller.host_id())))
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
    Ok(Some(Member::new(
        &sandbox,
        eps.into_iter().map(|(ep, _)| ep.network_id),
    )))
}

/// Everything, from the store.
async fn load_model(controller: &Controller) -> Result<Model> {
    let mut model = Model::default();
    for service in controller.services().await.context("listing services")? {
        let tasks = controller
            .service_tasks(&service)
            .await
            .with_context(|| format!("reading service {}'s tasks", service.name))?;
        model.services.insert(
            service.id.clone(),
            model::entries(&service, &tasks, controller.host_id()),
        );
    }
    for sandbox in controller.sandboxes().await.context("listing sandboxes")? {
        let eps = controller
            .sandbox_endpoints(&sandbox)
            .await
            .with_context(|| format!("reading sandbox {}'s endpoints", sandbox.name))?;
        model.members.insert(
            sandbox.id.clone(),
            Member::new(&sandbox, eps.into_iter().map(|(ep, _)| ep.network_id)),
        );
    }
    Ok(model)
}

impl Lb {
    /// A load balancer that knows nothing yet: [`sync`](Self::sync) before serving.
    pub fn new(metrics: LbMetrics) -> Arc<Self> {
        Arc::new(Lb {
            state: tokio::sync::Mutex::new(State::default()),
            metrics,
        })
    }

    /// Reads the store and every sandbox's table, and repairs each table that differs from
    /// its view: at start-up (before the API serves) and periodically.
    pub async fn sync(&self, controller: &Controller) -> Result<SyncReport> {
        let mut state = self.state.lock().await;
        let model = load_model(controller).await?;
        let jobs: Vec<Job> = model
            .members
            .iter()
            .map(|(id, m)| Job {
                sandbox: id.clone(),
                name: m.name.clone(),
                netns: m.netns.clone(),
                changes: None,
                want: model.view_of(id),
            })
            .collect();
        state.model = model;
        let outcomes = self.run(jobs).await;
        let mut report = SyncReport::default();
        state.applied.clear();
        state.dirty.clear();
        state.synced = true;
        for (job, (outcome, repaired)) in outcomes {
            report.sandboxes += 1;
            report.repaired += usize::from(repaired);
            match outcome {
                kernel::Outcome::Done => {
                    state.applied.insert(job.sandbox, job.want);
                }
                kernel::Outcome::Gone => {}
                kernel::Outcome::Failed => {
                    report.failed += 1;
                    state.dirty.insert(job.sandbox);
                }
            }
        }
        self.metrics.services(state.model.service_count());
        Ok(report)
    }

    /// Runs `jobs` on the blocking pool, one sandbox after the other.
    async fn run(&self, jobs: Vec<Job>) -> Vec<(Job, (kernel::Outcome, bool))> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let metrics = self.metrics.clone();
        let work = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|job| {
                    let r = match &job.changes {
                        None => kernel::reconcile(&job.name, &job.netns, &job.want, &metrics),
                        Some(ch) => (
                            kernel::apply(&job.name, &job.netns, ch, &job.want, &metrics),
                            false,
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
        for id in &services {
            let mut networks = state.model.networks_of(id);
            match load_service(controller, id).await? {
                Some(entries) => {
                    networks.extend(entries.iter().map(|e| e.network.clone()));
                    state.model.services.insert(id.clone(), entries);
                }
                None => {
                    state.model.services.remove(id);
                }
            }
            affected.extend(state.model.members_on(&networks));
        }
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
            });
        }
        for (job, (outcome, _)) in self.run(jobs).await {
            match outcome {
                kernel::Outcome::Done => {
                    state.dirty.remove(&job.sandbox);
                    state.applied.insert(job.sandbox, job.want);
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
        Ok(())
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
