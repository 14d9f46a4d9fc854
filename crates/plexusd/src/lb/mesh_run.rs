//! The routing mesh's side of [`Lb`]: after each change of the model, the host's table, the
//! ingress sandbox's and the tasks' return paths are taken to what [`mesh`](super::mesh)
//! computes (only those that changed; all of them in a [`Lb::sync`] pass); this host's
//! ingress sandbox is published to the other hosts and made when the mesh needs it; and the
//! cluster store's services are watched, so a service created on another host is published
//! here at once rather than at the next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use plexus_cnm::{CnmError, Controller, SandboxSpec, Scope, TableEvent, TableEventKind};
use plexus_drivers::INGRESS_SANDBOX;
use plexus_kv::Store;
use plexus_lb::mesh::MeshView;
use plexus_lb::return_path::ReturnView;
use plexus_sys::netns::Netns;

use super::mesh::{self, Gateway};
use super::record::{GatewayRecord, INGRESS_TABLE};
use super::{mesh_kernel, Lb, State};

/// The routing mesh's settings (plexusd's flags).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The namespace published ports answer in: plexusd's own.
    pub host: Netns,
    /// `--ingress-address`: the only local addresses published ports answer on (`None`:
    /// all of them).
    pub addresses: Option<BTreeSet<Ipv4Addr>>,
    /// This host's id (its key in [`INGRESS_TABLE`]).
    pub host_id: String,
}

/// What the mesh's tables hold, as last applied (`None`/absent: not known, applied at the
/// next change).
#[derive(Debug, Default)]
pub(super) struct Applied {
    host: Option<MeshView>,
    gateway: Option<(PathBuf, MeshView)>,
    returns: BTreeMap<String, (PathBuf, ReturnView)>,
    /// This host's ingress sandbox as published: (ingress network, record).
    published: Option<(String, GatewayRecord)>,
}

/// What one [`INGRESS_TABLE`] event does to the other hosts' ingress sandboxes known:
/// `true` when they changed (as `learn` for tasks).
pub(super) fn learn_gateway(
    gateways: &mut BTreeMap<String, Gateway>,
    event: &TableEvent,
    owner: IpAddr,
    me: Option<IpAddr>,
) -> bool {
    let held = gateways.remove(&event.key);
    let new = if event.kind == TableEventKind::Delete || Some(owner) == me {
        None
    } else {
        match GatewayRecord::decode(&event.value) {
            Ok(r) => Some(Gateway {
                owner,
                addr: r.addr,
                mac: r.mac,
            }),
            Err(e) => {
                tracing::warn!(key = %event.key, %owner, error = %e, "a host published an ingress gateway record that does not decode: ignored");
                None
            }
        }
    };
    let changed = held != new;
    if let Some(g) = new {
        gateways.insert(event.key.clone(), g);
    }
    changed
}

impl Lb {
    /// Takes the mesh's tables to the model's views: those that changed, or all (`force`).
    /// Failures are logged and left unrecorded, so the next change or pass tries again.
    pub(super) async fn mesh_update(&self, state: &mut State, force: bool) {
        let model = &state.model;
        if mesh::needs_ingress(model) && mesh::ingress_sandbox(model).is_none() {
            self.ingress_wanted.notify_one();
        }
        let host = mesh::host_view(model, self.mesh.addresses.as_ref());
        let gateway =
            mesh::ingress_sandbox(model).map(|(_, m)| (m.netns.clone(), mesh::gateway_view(model)));
        let returns: BTreeMap<String, (PathBuf, ReturnView)> = model
            .members
            .iter()
            .filter_map(|(id, m)| {
                mesh::return_view(model, id).map(|v| (id.clone(), (m.netns.clone(), v)))
            })
            .collect();
        let members: BTreeSet<String> = model.members.keys().cloned().collect();
        let local_gateway = mesh::local_gateway(model);
        let ingress = model.mesh.ingress.clone();
        // Just restarted, gossip has not brought the other hosts' tasks and ingress
        // sandboxes back: the pass leaves what the kernel holds of them (changes still go).
        let settling = force && self.ingress_settling(ingress.as_deref());

        let applied = &mut state.mesh;
        if force || applied.host.as_ref() != Some(&host) {
            let ns = self.mesh.host.clone();
            let want = host.clone();
            let ok = tokio::task::spawn_blocking(move || mesh_kernel::host(&ns, &want))
                .await
                .unwrap_or(false);
            applied.host = ok.then_some(host);
        }
        match gateway {
            Some(_) if settling => {}
            Some(g) if force || applied.gateway.as_ref() != Some(&g) => {
                let want = g.clone();
                let ok =
                    tokio::task::spawn_blocking(move || mesh_kernel::gateway(&want.0, &want.1))
                        .await
                        .unwrap_or(false);
                applied.gateway = ok.then_some(g);
            }
            Some(_) => {}
            None => applied.gateway = None,
        }
        // A sandbox that left the ingress network (still here) loses its return path.
        let left: Vec<(String, PathBuf)> = applied
            .returns
            .iter()
            .filter(|(id, _)| !returns.contains_key(*id))
            .map(|(id, (p, _))| (id.clone(), p.clone()))
            .collect();
        for (id, path) in left {
            applied.returns.remove(&id);
            if members.contains(&id) {
                mesh_kernel::remove_return(&path).await;
            }
        }
        for (id, want) in returns {
            if settling || (!force && applied.returns.get(&id) == Some(&want)) {
                continue;
            }
            if mesh_kernel::return_path(&want.0, &want.1).await {
                applied.returns.insert(id, want);
            } else {
                applied.returns.remove(&id);
            }
        }
        self.publish_gateway(applied, ingress, local_gateway, force);
    }

    /// Whether the ingress network's gossip table is not compared with a peer's yet, within
    /// [`INHERIT_FOR`](super::INHERIT_FOR) of start-up.
    fn ingress_settling(&self, ingress: Option<&str>) -> bool {
        match (&self.plane, ingress) {
            (Some(plane), Some(network)) => {
                self.started.elapsed() <= super::INHERIT_FOR && !plane.synced(network)
            }
            _ => false,
        }
    }

    /// Publishes this host's ingress sandbox in the ingress network's [`INGRESS_TABLE`] (or
    /// withdraws it).
    fn publish_gateway(
        &self,
        applied: &mut Applied,
        ingress: Option<String>,
        gateway: Option<(Ipv4Addr, [u8; 6])>,
        force: bool,
    ) {
        let Some(plane) = &self.plane else {
            return;
        };
        let want = ingress.zip(gateway.map(|(addr, mac)| GatewayRecord { addr, mac }));
        if !force && applied.published == want {
            return;
        }
        let key = &self.mesh.host_id;
        if let Some((network, _)) = &applied.published {
            if want.as_ref().map(|(n, _)| n) != Some(network) {
                let _ = plane.delete(network, INGRESS_TABLE, key);
            }
        }
        applied.published = None;
        if let Some((network, record)) = want {
            let put = plane
                .join_network(&network)
                .and_then(|()| plane.put(&network, INGRESS_TABLE, key, record.encode()));
            match put {
                Ok(()) => applied.published = Some((network, record)),
                Err(e) => {
                    tracing::warn!(%network, error = %e, "routing mesh: other hosts' tasks cannot answer through this host yet; trying again at the next change")
                }
            }
        }
    }

    /// Starts the mesh's background work: making this host's ingress sandbox when the mesh
    /// needs it, and following the cluster store's services.
    pub fn spawn_mesh(
        self: &Arc<Self>,
        controller: Arc<Controller>,
        cluster: Option<Arc<dyn Store>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let lb = self.clone();
        let c = controller.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                lb.ingress_wanted.notified().await;
                if let Err(e) = ensure_ingress_sandbox(&c).await {
                    tracing::warn!("routing mesh: making the ingress sandbox: {e}; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    lb.ingress_wanted.notify_one();
                }
            }
        }));
        if let Some(store) = cluster {
            let lb = self.clone();
            tasks.push(tokio::spawn(async move {
                lb.follow_cluster_services(controller, store).await
            }));
        }
        tasks
    }

    /// Watches the cluster store's services and reloads those that change.
    async fn follow_cluster_services(&self, controller: Arc<Controller>, store: Arc<dyn Store>) {
        let dir = plexus_cnm::store_layout::services_in(Scope::Global);
        let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        loop {
            let mut stream = match store.watch_tree(&dir).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "routing mesh: watching the cluster's services; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                let list = match item {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "routing mesh: the services' watch ended");
                        break;
                    }
                };
                let now: BTreeMap<String, Vec<u8>> = list
                    .into_iter()
                    .filter_map(|p| {
                        let id = p.key.rsplit('/').next()?.to_string();
                        Some((id, p.value))
                    })
                    .collect();
                let changed: BTreeSet<String> = now
                    .iter()
                    .filter(|(id, v)| seen.get(*id) != Some(*v))
                    .map(|(id, _)| id.clone())
                    .chain(seen.keys().filter(|id| !now.contains_key(*id)).cloned())
                    .collect();
                seen = now;
                if changed.is_empty() {
                    continue;
                }
                if let Err(e) = self.reload_and_apply(&controller, &changed).await {
                    tracing::warn!("routing mesh: following the cluster's services: {e:#}; the periodic pass repairs");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reloads the services `ids` and takes every table they touch to its new view.
    async fn reload_and_apply(
        &self,
        controller: &Controller,
        ids: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let mut state = self.state.lock().await;
        if !state.synced {
            return Ok(());
        }
        let affected = self.reload_services(controller, &mut state, ids).await?;
        self.update(&mut state, affected).await;
        self.mesh_update(&mut state, false).await;
        Ok(())
    }
}

/// Makes this host's ingress sandbox on the ingress network, unless it exists.
async fn ensure_ingress_sandbox(controller: &Controller) -> Result<(), CnmError> {
    match controller.sandbox(INGRESS_SANDBOX).await {
        Ok(_) => return Ok(()),
        Err(CnmError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let Some(ingress) = controller.ingress_network_id().await? else {
        return Ok(());
    };
    let spec = SandboxSpec {
        name: INGRESS_SANDBOX.to_string(),
        networks: vec![(ingress, Default::default())],
        ..Default::default()
    };
    match controller.create_sandbox(spec).await {
        Ok(s) => {
            tracing::info!(sandbox = %s.name, "routing mesh: ingress sandbox made");
            Ok(())
        }
        Err(CnmError::Exists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
