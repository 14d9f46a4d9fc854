//! Services: create, update, remove, the lookups, and their virtual IPs. Every operation is
//! one store transaction with its event; a virtual IP is taken from the network's IPAM
//! before the record and given back after it is gone, with an intent record (local) around
//! both so a crash in between leaks nothing (`reconcile_services_locked` in task.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use plexus_kv::{KvError, Txn};
use serde::{Deserialize, Serialize};

use super::events::{Event, EventAction};
use super::{check_name, encode, new_id, now_rfc3339, Controller};
use crate::error::{CnmError, Result};
use crate::model::{Network, Scope};
use crate::service::{
    check_ports, EndpointMode, NetworkBackends, PublishedPort, Service, ServiceSpec, ServiceUpdate,
    SessionAffinity, Task, VirtualIp, MAX_SERVICE_NETWORKS,
};
use crate::store_layout as keys;

/// Whether `ports` has one published in ingress mode (the routing mesh).
pub(crate) fn has_ingress_ports(ports: &[PublishedPort]) -> bool {
    ports
        .iter()
        .any(|p| p.mode == crate::service::PublishMode::Ingress)
}

/// Virtual IPs of a service being taken or given back by this host: written before the
/// record changes, deleted once the addresses are where the record says. At start-up,
/// every address an intent lists that the service's record does not hold is released.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VipIntent {
    /// The service's scope (where its record is).
    pub scope: Scope,
    /// (IPAM pool, address).
    pub addrs: Vec<(String, IpAddr)>,
}

impl Controller {
    pub(super) fn scopes(&self) -> &'static [Scope] {
        if self.store.cluster_store().is_some() {
            &[Scope::Local, Scope::Global]
        } else {
            &[Scope::Local]
        }
    }

    /// Every service (this host's local ones and, with a cluster store, the global ones),
    /// sorted by name.
    pub async fn services(&self) -> Result<Vec<Service>> {
        let mut all: Vec<Service> = self.load_all(&keys::services_in(Scope::Local)).await?;
        for pair in self
            .store
            .list_global_lenient(&keys::services_in(Scope::Global))
            .await
        {
            all.push(
                serde_json::from_slice(&pair.value).map_err(|e| CnmError::Corrupt {
                    key: pair.key.clone(),
                    reason: e.to_string(),
                })?,
            );
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The service with this id, name, or unique id prefix.
    pub async fn service(&self, name_or_id: &str) -> Result<Service> {
        Ok(self.service_indexed(name_or_id).await?.0)
    }

    pub(super) async fn service_indexed(&self, name_or_id: &str) -> Result<(Service, u64)> {
        let not_found = || CnmError::NotFound {
            kind: "service",
            name: name_or_id.to_string(),
        };
        if name_or_id.is_empty() {
            return Err(not_found());
        }
        for &scope in self.scopes() {
            if name_or_id.len() == 64 {
                if let Some(found) = self
                    .load::<Service>(&keys::service_in(scope, name_or_id))
                    .await?
                {
                    return Ok(found);
                }
            }
            if check_name("service", name_or_id).is_ok() {
                if let Some((id, _)) = self
                    .load::<String>(&keys::service_name_in(scope, name_or_id))
                    .await?
                {
                    if let Some(found) = self.load::<Service>(&keys::service_in(scope, &id)).await?
                    {
                        return Ok(found);
                    }
                }
            }
        }
        let matches: Vec<Service> = self
            .services()
            .await?
            .into_iter()
            .filter(|s| s.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => {
                let id = matches[0].id.clone();
                let scope = matches[0].scope;
                self.load::<Service>(&keys::service_in(scope, &id))
                    .await?
                    .ok_or_else(not_found)
            }
            n => Err(CnmError::invalid(
                "service",
                format!("{name_or_id:?} matches {n} services by id prefix"),
            )),
        }
    }

    /// The tasks of `service`, sorted by sandbox name.
    pub async fn service_tasks(&self, service: &Service) -> Result<Vec<Task>> {
        let dir = keys::tasks_in(service.scope, &service.id);
        let mut tasks: Vec<Task> = match service.scope {
            Scope::Local => self.load_all(&dir).await?,
            Scope::Global => {
                let mut out = Vec::new();
                for pair in self.store.list_global_lenient(&dir).await {
                    out.push(serde_json::from_slice(&pair.value).map_err(|e| {
                        CnmError::Corrupt {
                            key: pair.key.clone(),
                            reason: e.to_string(),
                        }
                    })?);
                }
                out
            }
        };
        tasks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tasks)
    }

    /// A service's networks, each with its virtual IPs and backends there: what the data
    /// plane programs and the DNS answers. Read from the store, so it is what the last
    /// committed event left.
    pub async fn service_backends(&self, name_or_id: &str) -> Result<Vec<NetworkBackends>> {
        let service = self.service(name_or_id).await?;
        let tasks = self.service_tasks(&service).await?;
        Ok(backends_of(&service, &tasks))
    }

    /// Creates a service: checks everything, takes its virtual IPs (vip mode), records it
    /// with its `create` event in one transaction; gives the addresses back if a step fails.
    pub async fn create_service(&self, spec: ServiceSpec) -> Result<Service> {
        let _op = self.ops.lock().await;
        check_name("service", &spec.name)?;
        let affinity = check_affinity(&spec.affinity)?;
        check_ports(&spec.ports)?;
        let mut networks = self.service_networks(&spec.networks).await?;
        let scope = networks[0].0.scope;
        if scope == Scope::Global && has_ingress_ports(&spec.ports) {
            let ingress = self.ingress_network_locked().await?;
            if !networks.iter().any(|(n, _)| n.id == ingress.0.id) {
                if networks.len() >= MAX_SERVICE_NETWORKS {
                    return Err(CnmError::invalid(
                        "networks",
                        format!("a service publishing ingress ports is also on the ingress network: at most {} others", MAX_SERVICE_NETWORKS - 1),
                    ));
                }
                networks.push(ingress);
            }
        }
        for &s in self.scopes() {
            if self
                .load::<String>(&keys::service_name_in(s, &spec.name))
                .await?
                .is_some()
            {
                return Err(CnmError::Exists {
                    kind: "service",
                    name: spec.name,
                });
            }
        }
        self.check_ports_free(&spec.ports, None).await?;
        let now = now_rfc3339();
        let mut service = Service {
            id: new_id()?,
            name: spec.name.clone(),
            scope,
            networks: networks.iter().map(|(n, _)| n.id.clone()).collect(),
            endpoint_mode: spec.endpoint_mode,
            vips: Vec::new(),
            ports: spec.ports.clone(),
            affinity,
            labels: spec.labels.clone(),
            created: now.clone(),
            updated: now,
            version: 1,
        };
        if service.endpoint_mode == EndpointMode::Vip {
            service.vips = self.take_vips(&service, &networks).await?;
        }
        let mut txn = Txn::new()
            .compare_absent(keys::service_name_in(scope, &service.name))
            .compare_absent(keys::service_in(scope, &service.id))
            .put(keys::service_in(scope, &service.id), encode(&service))
            .put(
                keys::service_name_in(scope, &service.name),
                encode(&service.id),
            );
        for (n, index) in &networks {
            // Each network must still be there: a concurrent delete loses or we do.
            txn = txn.compare_index(keys::network_in(n.scope, &n.id), *index);
        }
        if !service.vips.is_empty() {
            txn = txn.delete(keys::service_vips(&service.id));
        }
        let event = Event::service(EventAction::Create, &service);
        if let Err(e) = self.commit(txn, vec![event]).await {
            self.give_back(&service.id, &service.vips).await;
            return Err(match e {
                CnmError::Store(KvError::TxnConflict { .. }) => CnmError::Exists {
                    kind: "service",
                    name: service.name,
                },
                e => e,
            });
        }
        tracing::info!(service = %service.name, mode = service.endpoint_mode.as_str(), vips = service.vips.len(), "service created");
        Ok(service)
    }

    /// Changes a service (ports, affinity, endpoint mode, labels) in one transaction with
    /// its `update` event; a switch to `vip` takes virtual IPs first, one to `dnsrr` gives
    /// them back after.
    pub async fn update_service(&self, name_or_id: &str, update: ServiceUpdate) -> Result<Service> {
        let _op = self.ops.lock().await;
        let (old, index) = self.service_indexed(name_or_id).await?;
        let mut new = old.clone();
        for (i, (port, proto)) in update.ports_rm.iter().enumerate() {
            let before = new.ports.len();
            new.ports
                .retain(|p| !(p.published == *port && &p.protocol == proto));
            if new.ports.len() == before {
                return Err(CnmError::invalid(
                    format!("publish-rm[{i}]"),
                    format!("service {} does not publish {port}/{proto}", old.name),
                ));
            }
        }
        for (i, p) in update.ports_add.iter().enumerate() {
            p.check(&format!("publish-add[{i}]"))?;
            new.ports
                .retain(|q| !(q.published == p.published && q.protocol == p.protocol));
            new.ports.push(p.clone());
        }
        check_ports(&new.ports)?;
        if old.scope == Scope::Global && has_ingress_ports(&new.ports) {
            let on_ingress = match self.ingress_network_id().await? {
                Some(id) => old.networks.contains(&id),
                None => false,
            };
            if !on_ingress {
                return Err(CnmError::invalid(
                    "publish-add",
                    format!(
                        "service {} is not on the ingress network: its tasks were made without it; publish in mode=host, or create the service with its ingress ports",
                        old.name
                    ),
                ));
            }
        }
        let added: Vec<PublishedPort> = new
            .ports
            .iter()
            .filter(|p| !old.ports.contains(p))
            .cloned()
            .collect();
        self.check_ports_free(&added, Some(&old.id)).await?;
        if let Some(a) = &update.affinity {
            new.affinity = check_affinity(a)?;
        }
        for k in &update.labels_rm {
            new.labels.remove(k);
        }
        new.labels.extend(update.labels_add.clone());
        if let Some(mode) = update.endpoint_mode {
            new.endpoint_mode = mode;
        }
        let mut released = Vec::new();
        match (old.endpoint_mode, new.endpoint_mode) {
            (EndpointMode::Dnsrr, EndpointMode::Vip) => {
                let mut networks = Vec::new();
                for id in &old.networks {
                    let (n, index) = self
                        .load::<Network>(&keys::network_in(old.scope, id))
                        .await?
                        .ok_or_else(|| CnmError::NotFound {
                            kind: "network",
                            name: id.clone(),
                        })?;
                    networks.push((n, index));
                }
                new.vips = self.take_vips(&new, &networks).await?;
            }
            (EndpointMode::Vip, EndpointMode::Dnsrr) => {
                released = std::mem::take(&mut new.vips);
                // Before the record changes: a crash after it gives them back at start-up.
                self.write_intent(&new, &released).await?;
            }
            _ => {}
        }
        new.version = old.version.saturating_add(1);
        new.updated = now_rfc3339();
        let key = keys::service_in(old.scope, &old.id);
        let mut txn = Txn::new()
            .compare_index(key.clone(), index)
            .put(key, encode(&new));
        let taken = new.vips.iter().any(|v| !old.vips.contains(v));
        if taken {
            txn = txn.delete(keys::service_vips(&old.id));
        }
        let event = Event::service(EventAction::Update, &new);
        if let Err(e) = self.commit(txn, vec![event]).await {
            if taken {
                self.give_back(&old.id, &new.vips).await;
            } else {
                self.drop_intent(&old.id).await;
            }
            return Err(e);
        }
        if !released.is_empty() {
            self.give_back(&old.id, &released).await;
        }
        tracing::info!(service = %new.name, version = new.version, "service updated");
        Ok(new)
    }

    /// Removes a service. One with tasks is refused, naming them, unless `force`, which
    /// first detaches each task (its sandbox stays, a task of no service). Its virtual IPs
    /// are given back once its record is gone.
    pub async fn remove_service(&self, name_or_id: &str, force: bool) -> Result<Service> {
        let _op = self.ops.lock().await;
        let (service, _) = self.service_indexed(name_or_id).await?;
        let tasks = self.service_tasks(&service).await?;
        if !tasks.is_empty() && !force {
            let names: Vec<String> = tasks
                .iter()
                .map(|t| {
                    if t.host.is_empty() || t.host == self.config.host_id {
                        t.name.clone()
                    } else {
                        format!("{} (host {})", t.name, t.host)
                    }
                })
                .collect();
            return Err(CnmError::InUseBy {
                what: format!("service {}", service.name),
                by: format!(
                    "tasks {} (remove those sandboxes first, or use --force to detach them)",
                    names.join(", ")
                ),
            });
        }
        for task in &tasks {
            self.detach_task_locked(&service, task).await?;
        }
        let (service, index) = self.service_indexed(&service.id).await?;
        if !service.vips.is_empty() {
            self.write_intent(&service, &service.vips).await?;
        }
        let key = keys::service_in(service.scope, &service.id);
        let txn = Txn::new()
            .compare_index(key.clone(), index)
            .delete(key)
            .delete(keys::service_name_in(service.scope, &service.name));
        if let Err(e) = self
            .commit(txn, vec![Event::service(EventAction::Destroy, &service)])
            .await
        {
            self.drop_intent(&service.id).await;
            return Err(e);
        }
        self.give_back(&service.id, &service.vips).await;
        tracing::info!(service = %service.name, "service removed");
        Ok(service)
    }

    /// The names of the networks `ids` (an id when one is gone), comma-separated.
    pub(super) async fn network_names(&self, ids: &[String]) -> String {
        let mut names = Vec::new();
        for id in ids {
            match self.network(id).await {
                Ok(n) => names.push(n.name),
                Err(_) => names.push(id.clone()),
            }
        }
        names.join(", ")
    }

    /// The services on `network` (by name).
    pub(super) async fn services_on(&self, network: &Network) -> Result<Vec<String>> {
        let all: Vec<Service> = self.load_all(&keys::services_in(network.scope)).await?;
        Ok(all
            .into_iter()
            .filter(|s| s.networks.contains(&network.id))
            .map(|s| s.name)
            .collect())
    }

    /// The networks of a service being created, checked, with their records' indexes.
    /// The ingress network as it is, or one made from [`ControllerConfig::ingress_network`]
    /// (`super::ControllerConfig`), with its index. Made by two hosts at once, one loses the
    /// name's compare-and-swap and reads the other's.
    async fn ingress_network_locked(&self) -> Result<(Network, u64)> {
        let Some(spec) = self.config.ingress_network.clone() else {
            return Err(CnmError::invalid(
                "ports",
                "ingress-mode published ports of a global service need the routing mesh, which runs with gossip (--cluster-advertise); publish in mode=host",
            ));
        };
        for attempt in 0..2 {
            if let Some(found) = self.load_global_network_named(&spec.name).await? {
                return Ok(found);
            }
            if attempt == 0 {
                match self.create_network_locked(spec.clone()).await {
                    Ok(n) => {
                        tracing::info!(network = %n.name, "ingress network made for the routing mesh");
                    }
                    Err(CnmError::Exists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(CnmError::NotFound {
            kind: "network",
            name: spec.name,
        })
    }

    /// The ingress network's id, when it exists (made by the first global service with an
    /// ingress-mode published port, on any host).
    pub async fn ingress_network_id(&self) -> Result<Option<String>> {
        let Some(spec) = &self.config.ingress_network else {
            return Ok(None);
        };
        Ok(self
            .load_global_network_named(&spec.name)
            .await?
            .map(|(n, _)| n.id))
    }

    async fn load_global_network_named(&self, name: &str) -> Result<Option<(Network, u64)>> {
        if self.store.cluster_store().is_none() {
            return Ok(None);
        }
        let Some((id, _)) = self
            .load::<String>(&keys::network_name_in(Scope::Global, name))
            .await?
        else {
            return Ok(None);
        };
        self.load::<Network>(&keys::network_in(Scope::Global, &id))
            .await
    }

    async fn service_networks(&self, names: &[String]) -> Result<Vec<(Network, u64)>> {
        if names.is_empty() {
            return Err(CnmError::invalid(
                "networks",
                "a service needs at least one network",
            ));
        }
        if names.len() > MAX_SERVICE_NETWORKS {
            return Err(CnmError::invalid(
                "networks",
                format!(
                    "{} networks; a service is on at most {MAX_SERVICE_NETWORKS}",
                    names.len()
                ),
            ));
        }
        let mut out: Vec<(Network, u64)> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let network = self.network(name).await?;
            if out.iter().any(|(n, _)| n.id == network.id) {
                return Err(CnmError::invalid(
                    format!("networks[{i}]"),
                    format!("network {} is given twice", network.name),
                ));
            }
            if matches!(network.driver.as_str(), "host" | "null") {
                return Err(CnmError::invalid(
                    format!("networks[{i}]"),
                    format!(
                        "network {} (driver {}) cannot carry a service",
                        network.name, network.driver
                    ),
                ));
            }
            if let Some((first, _)) = out.first() {
                if first.scope != network.scope {
                    return Err(CnmError::invalid(
                        format!("networks[{i}]"),
                        format!(
                            "network {} is {}-scope but {} is {}-scope: a service's networks are all of one scope",
                            network.name,
                            network.scope.name(),
                            first.name,
                            first.scope.name()
                        ),
                    ));
                }
            }
            let (_, index) = self
                .load::<Network>(&keys::network_in(network.scope, &network.id))
                .await?
                .ok_or_else(|| CnmError::NotFound {
                    kind: "network",
                    name: name.clone(),
                })?;
            out.push((network, index));
        }
        Ok(out)
    }

    /// Refuses a published port another service (other than `except`) publishes with the
    /// same protocol, whatever the modes, or one a sandbox publishes on this host (`-p`).
    async fn check_ports_free(&self, ports: &[PublishedPort], except: Option<&str>) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let mut taken: BTreeMap<(u16, String), String> = BTreeMap::new();
        for s in self.services().await? {
            if Some(s.id.as_str()) == except {
                continue;
            }
            for p in &s.ports {
                taken.insert(
                    (p.published, p.protocol.clone()),
                    format!("service {}", s.name),
                );
            }
        }
        for n in self.networks().await?.iter().filter(|n| n.scope.is_local()) {
            for ep in self.endpoints(&n.id).await? {
                for p in &ep.ports {
                    let end = p.host_port_end.max(p.host_port);
                    for port in p.host_port..=end {
                        taken
                            .entry((port, p.proto.clone()))
                            .or_insert_with(|| format!("sandbox {} (-p)", ep.name));
                    }
                }
            }
        }
        for (i, p) in ports.iter().enumerate() {
            if let Some(by) = taken.get(&(p.published, p.protocol.clone())) {
                return Err(CnmError::InUseBy {
                    what: format!("ports[{i}] published port {}/{}", p.published, p.protocol),
                    by: by.clone(),
                });
            }
        }
        Ok(())
    }

    /// Takes a virtual IP on each network (IPv4 and, on an IPv6 network, IPv6) and records
    /// the intent; gives back what it took when a step fails.
    async fn take_vips(
        &self,
        service: &Service,
        networks: &[(Network, u64)],
    ) -> Result<Vec<VirtualIp>> {
        let mut vips: Vec<VirtualIp> = Vec::new();
        let mut taken = Vec::new();
        let steps = async {
            for (n, _) in networks {
                if n.ipv4.is_empty() && n.ipv6.is_empty() {
                    return Err(CnmError::invalid(
                        "endpoint mode",
                        format!(
                            "network {} has no address pool for a virtual IP: use --endpoint-mode dnsrr",
                            n.name
                        ),
                    ));
                }
                for pools in [&n.ipv4, &n.ipv6] {
                    if let Some((pool_id, addr)) =
                        self.allocate(pools, None, None, &mut taken).await?
                    {
                        vips.push(VirtualIp {
                            network_id: n.id.clone(),
                            pool_id,
                            addr,
                        });
                    }
                }
            }
            self.write_intent(service, &vips).await
        };
        if let Err(e) = steps.await {
            for (pool, addr) in taken.iter().rev() {
                if let Err(u) = self.ipam.release_address(pool, *addr).await {
                    tracing::warn!(%addr, error = %u, "cannot release a virtual IP while undoing");
                }
            }
            return Err(e);
        }
        Ok(vips)
    }

    async fn write_intent(&self, service: &Service, vips: &[VirtualIp]) -> Result<()> {
        let intent = VipIntent {
            scope: service.scope,
            addrs: vips
                .iter()
                .map(|v| (v.pool_id.clone(), v.addr.addr()))
                .collect(),
        };
        self.store
            .txn(Txn::new().put(keys::service_vips(&service.id), encode(&intent)))
            .await?;
        Ok(())
    }

    async fn drop_intent(&self, service_id: &str) {
        let mut txn = Txn::new().delete(keys::service_vips(service_id));
        txn.relaxed = true;
        if let Err(e) = self.store.txn(txn).await {
            tracing::warn!(service = %service_id, error = %e, "cannot delete a virtual-IP intent; start-up reconciliation will");
        }
    }

    /// Releases `vips`, then the intent that lists them.
    async fn give_back(&self, service_id: &str, vips: &[VirtualIp]) {
        for v in vips.iter().rev() {
            if let Err(e) = self.ipam.release_address(&v.pool_id, v.addr.addr()).await {
                tracing::warn!(addr = %v.addr, error = %e, "cannot release a virtual IP; start-up reconciliation will");
                return;
            }
        }
        self.drop_intent(service_id).await;
    }
}

fn check_affinity(a: &SessionAffinity) -> Result<SessionAffinity> {
    let timeout = (a.timeout_seconds != 0).then_some(a.timeout_seconds);
    SessionAffinity::new(a.mode, timeout)
}

/// The backends of `service` per network, from its tasks.
pub(crate) fn backends_of(service: &Service, tasks: &[Task]) -> Vec<NetworkBackends> {
    let wanted: BTreeSet<&str> = service.networks.iter().map(String::as_str).collect();
    let mut out: Vec<NetworkBackends> = service
        .networks
        .iter()
        .map(|id| NetworkBackends {
            network_id: id.clone(),
            vips: service.vips_on(id).map(|v| v.addr).collect(),
            backends: Vec::new(),
        })
        .collect();
    let mut tasks: Vec<&Task> = tasks.iter().collect();
    tasks.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
    for t in tasks {
        for b in &t.backends {
            if !wanted.contains(b.network_id.as_str()) {
                continue;
            }
            if let Some(nb) = out.iter_mut().find(|nb| nb.network_id == b.network_id) {
                nb.backends.push((t.sandbox_id.clone(), b.clone()));
            }
        }
    }
    out
}
