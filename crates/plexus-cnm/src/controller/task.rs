//! Tasks: a sandbox as a task of a service, and its backends (its addresses on the
//! service's networks) kept in step with its endpoints. Each change rides in the
//! transaction of the endpoint change that causes it (sandbox create and remove, connect,
//! disconnect), with a `service` `connect`/`disconnect` event per backend, so what the data
//! plane follows is always what the store says. Start-up reconciliation mends what a crash
//! between the two stores (a global service's tasks are in the cluster store) left.

use std::collections::{BTreeMap, BTreeSet};

use plexus_kv::Txn;

use super::events::{Event, EventAction};
use super::service::VipIntent;
use super::{encode, Controller};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, Network, Sandbox, Scope};
use crate::service::{Backend, Service, Task};
use crate::store_layout as keys;

/// A change to one task record, for the caller's transaction.
pub(super) struct TaskChange {
    key: String,
    /// The record's index, or `None` to create it.
    index: Option<u64>,
    /// The new record, or `None` to delete it.
    task: Option<Task>,
    /// The backends' events.
    pub events: Vec<Event>,
}

impl TaskChange {
    /// Adds the record's comparison and write to `txn`.
    pub(super) fn apply(&self, txn: Txn) -> Txn {
        let txn = match self.index {
            Some(i) => txn.compare_index(self.key.clone(), i),
            None => txn.compare_absent(self.key.clone()),
        };
        match &self.task {
            Some(t) => txn.put(self.key.clone(), encode(t)),
            None => txn.delete(self.key.clone()),
        }
    }
}

/// The backend of an endpoint.
fn backend(ep: &Endpoint) -> Backend {
    Backend {
        network_id: ep.network_id.clone(),
        endpoint_id: ep.id.clone(),
        ipv4: ep.ipv4,
        ipv6: ep.ipv6,
    }
}

/// The backends `endpoints` give `service`, in the service's network order.
pub(super) fn backends_from(service: &Service, endpoints: &[&Endpoint]) -> Vec<Backend> {
    service
        .networks
        .iter()
        .filter_map(|n| {
            endpoints
                .iter()
                .find(|ep| &ep.network_id == n && !ep.egress)
        })
        .map(|ep| backend(ep))
        .collect()
}

impl Controller {
    /// The service `sandbox` is a task of, with its record's index, and its task record
    /// with its index; `None` when it is no task, or its service or task is gone (removed
    /// with `--force` elsewhere).
    async fn task_of(&self, sandbox: &Sandbox) -> Result<Option<(Service, Task, u64)>> {
        let Some(service_id) = &sandbox.service else {
            return Ok(None);
        };
        for &scope in self.scopes() {
            let Some((service, _)) = self
                .load::<Service>(&keys::service_in(scope, service_id))
                .await?
            else {
                continue;
            };
            let key = keys::task_in(scope, service_id, &sandbox.id);
            return Ok(self
                .load::<Task>(&key)
                .await?
                .map(|(task, index)| (service, task, index)));
        }
        Ok(None)
    }

    /// A new task: `sandbox` (already carrying the service's id) with its endpoints in
    /// `made`, for its creation's transaction; the service's record must still be at
    /// `service_index`.
    pub(super) fn task_create(
        &self,
        service: &Service,
        sandbox: &Sandbox,
        endpoints: &[&Endpoint],
    ) -> TaskChange {
        let task = Task {
            service_id: service.id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: sandbox.name.clone(),
            host: match service.scope {
                Scope::Local => String::new(),
                Scope::Global => self.config.host_id.clone(),
            },
            backends: backends_from(service, endpoints),
        };
        let events = task
            .backends
            .iter()
            .map(|b| Event::backend(EventAction::Connect, service, &task, b))
            .collect();
        TaskChange {
            key: keys::task_in(service.scope, &service.id, &sandbox.id),
            index: None,
            task: Some(task),
            events,
        }
    }

    /// The change an endpoint of `sandbox` on `network` coming (`joined`) or going makes to
    /// its task; `None` when the sandbox is no task or the network none of its service's.
    pub(super) async fn task_endpoint_change(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        endpoint: &Endpoint,
        joined: bool,
    ) -> Result<Option<TaskChange>> {
        if endpoint.egress || sandbox.service.is_none() {
            return Ok(None);
        }
        let Some((service, mut task, index)) = self.task_of(sandbox).await? else {
            return Ok(None);
        };
        if !service.networks.contains(&network.id) {
            return Ok(None);
        }
        let b = backend(endpoint);
        let event = if joined {
            task.backends.retain(|x| x.network_id != network.id);
            task.backends.push(b.clone());
            let order = |x: &Backend| service.networks.iter().position(|n| n == &x.network_id);
            task.backends.sort_by_key(order);
            Event::backend(EventAction::Connect, &service, &task, &b)
        } else {
            task.backends.retain(|x| x.endpoint_id != endpoint.id);
            Event::backend(EventAction::Disconnect, &service, &task, &b)
        };
        Ok(Some(TaskChange {
            key: keys::task_in(service.scope, &service.id, &sandbox.id),
            index: Some(index),
            task: Some(task),
            events: vec![event],
        }))
    }

    /// The removal of `sandbox`'s task with its sandbox; `None` when it is none.
    pub(super) async fn task_delete(&self, sandbox: &Sandbox) -> Result<Option<TaskChange>> {
        let Some((service, task, index)) = self.task_of(sandbox).await? else {
            return Ok(None);
        };
        let events = task
            .backends
            .iter()
            .map(|b| Event::backend(EventAction::Disconnect, &service, &task, b))
            .collect();
        Ok(Some(TaskChange {
            key: keys::task_in(service.scope, &service.id, &sandbox.id),
            index: Some(index),
            task: None,
            events,
        }))
    }

    /// Detaches `task` from `service` (`service rm --force`): its record goes with its
    /// backends' `disconnect` events, and its sandbox, when it is this host's, is a task of
    /// no service any more (another host's sandbox learns it at its next start).
    pub(super) async fn detach_task_locked(&self, service: &Service, task: &Task) -> Result<()> {
        let key = keys::task_in(service.scope, &service.id, &task.sandbox_id);
        let Some((task, index)) = self.load::<Task>(&key).await? else {
            return Ok(());
        };
        let mut txn = Txn::new().compare_index(key.clone(), index).delete(key);
        let mine = task.host.is_empty() || task.host == self.config.host_id;
        if mine {
            if let Some((mut sandbox, sb_index)) = self
                .load::<Sandbox>(&keys::sandbox(&task.sandbox_id))
                .await?
            {
                if sandbox.service.as_deref() == Some(service.id.as_str()) {
                    sandbox.service = None;
                    txn = txn
                        .compare_index(keys::sandbox(&sandbox.id), sb_index)
                        .put(keys::sandbox(&sandbox.id), encode(&sandbox));
                }
            }
        }
        let events = task
            .backends
            .iter()
            .map(|b| Event::backend(EventAction::Disconnect, service, &task, b))
            .collect();
        self.commit(txn, events).await?;
        tracing::info!(service = %service.name, sandbox = %task.name, "task detached from its service");
        Ok(())
    }

    /// Start-up reconciliation of services: gives back the virtual IPs intents list that
    /// no service record holds (a crash mid-create, -update or -remove), then makes this
    /// host's task records match its sandboxes (a crash between the cluster store's part
    /// of a transaction and the local part, or a service removed elsewhere). Returns how
    /// many addresses and task records it mended.
    pub(super) async fn reconcile_services_locked(
        &self,
        sandboxes: &[Sandbox],
    ) -> Result<(usize, usize)> {
        let mut released = 0;
        for pair in self.store.list(keys::SERVICE_VIPS).await? {
            let service_id = pair.key.rsplit('/').next().unwrap_or_default().to_string();
            let intent: VipIntent =
                serde_json::from_slice(&pair.value).map_err(|e| CnmError::Corrupt {
                    key: pair.key.clone(),
                    reason: e.to_string(),
                })?;
            let held: BTreeSet<_> = match self
                .load::<Service>(&keys::service_in(intent.scope, &service_id))
                .await?
            {
                Some((s, _)) => s.vips.iter().map(|v| v.addr.addr()).collect(),
                None => BTreeSet::new(),
            };
            for (pool, addr) in &intent.addrs {
                if held.contains(addr) {
                    continue;
                }
                match self.ipam.release_address(pool, *addr).await {
                    Ok(()) => released += 1,
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot release a leaked virtual IP")
                    }
                }
            }
            self.store.txn(Txn::new().delete(pair.key.clone())).await?;
            tracing::info!(service = %service_id, "virtual-IP intent of a cut-short operation resolved");
        }
        let by_id: BTreeMap<&str, &Sandbox> =
            sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut mended = 0;
        let services = self.services().await?;
        let mut tasked = BTreeSet::new();
        for service in &services {
            for task in self.service_tasks(service).await? {
                if !(task.host.is_empty() || task.host == self.config.host_id) {
                    continue;
                }
                let key = keys::task_in(service.scope, &service.id, &task.sandbox_id);
                let sandbox = by_id
                    .get(task.sandbox_id.as_str())
                    .filter(|s| s.service.as_deref() == Some(service.id.as_str()));
                let Some(sandbox) = sandbox else {
                    self.detach_task_locked(service, &task).await?;
                    mended += 1;
                    continue;
                };
                tasked.insert(sandbox.id.clone());
                let endpoints: Vec<Endpoint> = self
                    .sandbox_endpoints(sandbox)
                    .await?
                    .into_iter()
                    .map(|(ep, _)| ep)
                    .collect();
                let refs: Vec<&Endpoint> = endpoints.iter().collect();
                let backends = backends_from(service, &refs);
                if backends != task.backends {
                    let Some((_, index)) = self.load::<Task>(&key).await? else {
                        continue;
                    };
                    let mut events = Vec::new();
                    for b in task.backends.iter().filter(|b| !backends.contains(b)) {
                        events.push(Event::backend(EventAction::Disconnect, service, &task, b));
                    }
                    for b in backends.iter().filter(|b| !task.backends.contains(b)) {
                        events.push(Event::backend(EventAction::Connect, service, &task, b));
                    }
                    let fixed = Task { backends, ..task };
                    self.commit(
                        Txn::new()
                            .compare_index(key.clone(), index)
                            .put(key, encode(&fixed)),
                        events,
                    )
                    .await?;
                    mended += 1;
                }
            }
        }
        // Sandboxes that name a service with no task of theirs: the service was removed
        // (elsewhere, with --force) or the task's part of the transaction was lost.
        let live: BTreeSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
        for sandbox in sandboxes {
            let Some(service_id) = &sandbox.service else {
                continue;
            };
            if tasked.contains(&sandbox.id) {
                continue;
            }
            let service = services.iter().find(|s| &s.id == service_id);
            let (mut current, index) = self.sandbox_indexed(&sandbox.id).await?;
            let mut txn = Txn::new().compare_index(keys::sandbox(&sandbox.id), index);
            let mut events = Vec::new();
            match service {
                Some(service) if live.contains(service_id.as_str()) => {
                    let endpoints: Vec<Endpoint> = self
                        .sandbox_endpoints(&current)
                        .await?
                        .into_iter()
                        .map(|(ep, _)| ep)
                        .collect();
                    let refs: Vec<&Endpoint> = endpoints.iter().collect();
                    let change = self.task_create(service, &current, &refs);
                    txn = change.apply(txn);
                    events = change.events;
                }
                _ => {
                    current.service = None;
                    txn = txn.put(keys::sandbox(&sandbox.id), encode(&current));
                }
            }
            self.commit(txn, events).await?;
            mended += 1;
        }
        if released + mended > 0 {
            tracing::info!(
                released,
                tasks = mended,
                "services reconciled with the sandboxes"
            );
        }
        Ok((released, mended))
    }
}
