//! Sandboxes whole: a namespace (made or attached), its networks with their addresses,
//! aliases and published ports, its hostname and DNS settings, created and removed as one
//! operation and one store transaction each, so every front (HTTP API, CLI, CNI, a Docker
//! plugin) is a thin caller of the same code. Creation undoes its steps in reverse when one
//! fails: no address, kernel object or namespace is left.

use std::net::IpAddr;
use std::sync::Arc;

use plexus_kv::{KvError, Txn};

use super::endpoint::{check_endpoint_spec, first_free_interface};
use super::events::{Event, EventAction};
use super::{check_name, driver_err, encode, new_id, Controller};
use crate::driver::{Driver, ExternalConnectivity, InterfaceName};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, EndpointSpec, Network, Sandbox, SandboxSpec};
use crate::namespaces::Namespaces;
use crate::service::Service;
use crate::store_layout as keys;

/// Networks one sandbox creation may connect: its transaction (records, events and their
/// history trimming) must stay within the store's transaction limit.
pub const MAX_SANDBOX_NETWORKS: usize = 16;

/// Endpoints a sandbox removal takes out in its one transaction; beyond, the extra ones are
/// disconnected one by one first.
const MAX_REMOVED_AT_ONCE: usize = 24;

/// One endpoint of a sandbox being created, with how far its data plane got.
struct Made {
    endpoint: Endpoint,
    network: Network,
    driver: Arc<dyn Driver>,
    joined: bool,
    programmed: bool,
}

/// The settings of [`SandboxSpec`] that are only recorded, checked.
struct Settings {
    hostname: Option<String>,
    dns: Vec<IpAddr>,
    dns_search: Vec<String>,
    dns_options: Vec<String>,
}

fn check_settings(spec: &SandboxSpec) -> Result<Settings> {
    if let Some(h) = &spec.hostname {
        // A hostname is at most 64 bytes (HOST_NAME_MAX) of letters, digits, '-' and '.'.
        let ok = !h.is_empty()
            && h.len() <= 64
            && !h.starts_with(['-', '.'])
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(CnmError::invalid(
                "hostname",
                format!("{h:?}: 1 to 64 letters, digits, '-' or '.', not starting with '-' or '.'"),
            ));
        }
    }
    let mut dns = Vec::new();
    for d in &spec.dns {
        dns.push(
            d.parse::<IpAddr>()
                .map_err(|_| CnmError::invalid("dns", format!("{d:?} is not an IP address")))?,
        );
    }
    for d in &spec.dns_search {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !ok {
            return Err(CnmError::invalid(
                "dns-search",
                format!("{d:?} is not a domain name"),
            ));
        }
    }
    for o in &spec.dns_options {
        if o.is_empty() || o.chars().any(char::is_whitespace) {
            return Err(CnmError::invalid(
                "dns-option",
                format!("{o:?}: one resolver option without spaces (ndots:2)"),
            ));
        }
    }
    Ok(Settings {
        hostname: spec.hostname.clone(),
        dns,
        dns_search: spec.dns_search.clone(),
        dns_options: spec.dns_options.clone(),
    })
}

impl Controller {
    /// Makes and removes sandbox namespaces through `namespaces` (the daemon's kernel
    /// implementation, or a fake in tests) instead of refusing to make any.
    pub fn with_namespaces(mut self, namespaces: Arc<dyn Namespaces>) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Creates a sandbox: its namespace (made, or `netns` attached), an endpoint on each of
    /// its networks (addresses, driver endpoint, join, published ports on the first), and
    /// one store transaction with the sandbox, its endpoints and their events. Any failure
    /// undoes the earlier steps in reverse.
    pub async fn create_sandbox(&self, spec: SandboxSpec) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        check_name("sandbox", &spec.name)?;
        let settings = check_settings(&spec)?;
        if spec.networks.len() > MAX_SANDBOX_NETWORKS {
            return Err(CnmError::invalid(
                "networks",
                format!(
                    "{} networks; a sandbox is created with at most {MAX_SANDBOX_NETWORKS} (connect more afterwards)",
                    spec.networks.len()
                ),
            ));
        }
        if !spec.ports.is_empty() && spec.networks.is_empty() {
            return Err(CnmError::invalid(
                "ports",
                "publishing ports needs a network",
            ));
        }
        if self
            .load::<String>(&keys::sandbox_name(&spec.name))
            .await?
            .is_some()
        {
            return Err(CnmError::Exists {
                kind: "sandbox",
                name: spec.name,
            });
        }
        let service = match spec.service.as_deref() {
            Some(name) => Some(self.service_indexed(name).await?),
            None => None,
        };
        let mut spec = spec;
        let ingress = self.ingress_network_id().await?;
        if let Some((service, _)) = &service {
            // A task of a service on the ingress network is on it too: the routing mesh
            // reaches the service's tasks there (Docker swarm attaches them alike).
            if let Some(ingress) = ingress.clone() {
                if service.networks.contains(&ingress) {
                    let mut given = false;
                    for (name, _) in &spec.networks {
                        if self.network(name).await?.id == ingress {
                            given = true;
                        }
                    }
                    if !given {
                        spec.networks.push((ingress, Default::default()));
                    }
                }
            }
        }
        // Every network, driver and endpoint setting checked before anything is made.
        let mut plan: Vec<(Network, u64, Arc<dyn Driver>, EndpointSpec)> = Vec::new();
        for (i, (name, ep)) in spec.networks.iter().enumerate() {
            let network = self.network(name).await?;
            if plan.iter().any(|(n, ..)| n.id == network.id) {
                return Err(CnmError::invalid(
                    format!("networks[{i}]"),
                    format!("network {} is given twice", network.name),
                ));
            }
            let (_, index) = self
                .load::<Network>(&keys::network_in(network.scope, &network.id))
                .await?
                .ok_or_else(|| CnmError::NotFound {
                    kind: "network",
                    name: name.clone(),
                })?;
            let task = match &service {
                Some((s, _)) => s.networks.contains(&network.id),
                None => {
                    spec.name == crate::service::INGRESS_SANDBOX
                        && Some(&network.id) == ingress.as_ref()
                }
            };
            check_endpoint_spec(&network, ep, task)?;
            if let Some(name) = &ep.interface {
                if plan
                    .iter()
                    .any(|(.., e)| e.interface.as_ref() == Some(name))
                {
                    return Err(CnmError::invalid(
                        format!("networks[{i}] interface name"),
                        format!("{name:?} is asked for twice"),
                    ));
                }
            }
            let driver = self.driver(&network.driver).await?;
            let mut ep = ep.clone();
            if i == 0 {
                ep.ports.extend(spec.ports.iter().cloned());
            }
            plan.push((network, index, driver, ep));
        }
        if let Some((service, _)) = &service {
            if !plan.iter().any(|(n, ..)| service.networks.contains(&n.id)) {
                return Err(CnmError::invalid(
                    "service",
                    format!(
                        "sandbox {} would be on none of service {}'s networks ({}): a task must be on at least one",
                        spec.name,
                        service.name,
                        self.network_names(&service.networks).await
                    ),
                ));
            }
        }
        let (key, owned) = match &spec.netns {
            // The runtime mounts it when it sets the container up, after the joins.
            Some(path) if spec.external_key => {
                if !path.starts_with('/') {
                    return Err(CnmError::invalid(
                        "netns",
                        format!("{path:?}: the namespace's path must be absolute"),
                    ));
                }
                (path.clone(), false)
            }
            Some(path) => {
                self.namespaces.check(path).await?;
                (path.clone(), false)
            }
            None if spec.external_key => {
                return Err(CnmError::invalid(
                    "netns",
                    "missing: a sandbox whose namespace the runtime sets up needs its path",
                ))
            }
            None => (self.namespaces.create(&spec.name).await?, true),
        };
        let sandbox = Sandbox {
            id: new_id()?,
            name: spec.name.clone(),
            key,
            owned_netns: owned,
            endpoints: Vec::new(),
            hostname: settings.hostname,
            dns: settings.dns,
            dns_search: settings.dns_search,
            dns_options: settings.dns_options,
            service: service.as_ref().map(|(s, _)| s.id.clone()),
            labels: spec.labels.clone(),
            external_key: spec.external_key,
        };
        let mut made = Vec::new();
        let mut allocated = Vec::new();
        let mut gateway_made = None;
        let result = self
            .create_sandbox_steps(
                sandbox,
                &plan,
                service.as_ref(),
                &mut made,
                &mut allocated,
                &mut gateway_made,
            )
            .await;
        match result {
            Ok(sandbox) => {
                tracing::info!(sandbox = %sandbox.name, netns = %sandbox.key, endpoints = made.len(), "sandbox created");
                Ok(sandbox)
            }
            Err((sandbox, e)) => {
                self.undo_made(&made).await;
                for (pool, addr) in allocated.iter().rev() {
                    if let Err(u) = self.ipam.release_address(pool, *addr).await {
                        tracing::warn!(%addr, error = %u, "cannot release address while undoing");
                    }
                }
                if let Some(network) = gateway_made {
                    self.undo_gateway_network(&network).await;
                }
                if owned {
                    if let Err(u) = self.namespaces.delete(&sandbox.key).await {
                        tracing::warn!(netns = %sandbox.key, error = %u, "cannot remove namespace while undoing");
                    }
                }
                Err(e)
            }
        }
    }

    /// Takes the data plane of endpoints made for a sandbox down again, last made first.
    async fn undo_made(&self, made: &[Made]) {
        for m in made.iter().rev() {
            let (net, ep) = (&m.network.id, &m.endpoint.id);
            if m.programmed {
                if let Err(e) = m.driver.revoke_external_connectivity(net, ep).await {
                    tracing::warn!(endpoint = %ep, error = %e, "cannot revoke external connectivity while undoing");
                }
            }
            if m.joined {
                if let Err(e) = m.driver.leave(net, ep).await {
                    tracing::warn!(endpoint = %ep, error = %e, "cannot leave while undoing");
                }
            }
            if let Err(e) = m.driver.delete_endpoint(net, ep).await {
                tracing::warn!(endpoint = %ep, error = %e, "cannot delete endpoint while undoing");
            }
        }
    }

    /// The steps of [`create_sandbox`](Self::create_sandbox) after its namespace: what they
    /// made is in `made`, `allocated` and `gateway_made` (the gateway network, when made
    /// here) for the caller to undo. The error comes back with the sandbox (its namespace
    /// path).
    async fn create_sandbox_steps(
        &self,
        mut sandbox: Sandbox,
        plan: &[(Network, u64, Arc<dyn Driver>, EndpointSpec)],
        service: Option<&(Service, u64)>,
        made: &mut Vec<Made>,
        allocated: &mut Vec<(String, IpAddr)>,
        gateway_made: &mut Option<Network>,
    ) -> std::result::Result<Sandbox, (Sandbox, CnmError)> {
        for (network, _, driver, spec) in plan {
            if let Err(e) = self
                .make_endpoint(&sandbox, network, driver, spec, false, made, allocated)
                .await
            {
                return Err((sandbox, e));
            }
        }
        let gateway = match self
            .make_egress(&sandbox, made, allocated, gateway_made)
            .await
        {
            Ok(g) => g,
            Err(e) => return Err((sandbox, e)),
        };
        sandbox.endpoints = made.iter().map(|m| m.endpoint.id.clone()).collect();
        let mut txn = Txn::new()
            .compare_absent(keys::sandbox_name(&sandbox.name))
            .put(keys::sandbox(&sandbox.id), encode(&sandbox))
            .put(keys::sandbox_name(&sandbox.name), encode(&sandbox.id));
        let mut events = vec![Event::sandbox(EventAction::Create, &sandbox)];
        let networks = plan
            .iter()
            .map(|(network, index, ..)| (network, index))
            .chain(gateway.as_ref().map(|(network, index)| (network, index)));
        for ((network, index), m) in networks.zip(made.iter()) {
            // The network must still be there: a concurrent delete loses or we do.
            txn = txn
                .compare_index(keys::network_in(network.scope, &network.id), *index)
                .put(
                    keys::endpoint_in(network.scope, &network.id, &m.endpoint.id),
                    encode(&m.endpoint),
                );
            events.push(Event::endpoint(
                EventAction::Connect,
                &m.endpoint,
                network,
                &sandbox.name,
            ));
        }
        if let Some((service, index)) = service {
            // The service must still be there, unchanged: a concurrent remove loses or we do.
            txn = txn.compare_index(keys::service_in(service.scope, &service.id), *index);
            let endpoints: Vec<&Endpoint> = made.iter().map(|m| &m.endpoint).collect();
            let task = self.task_create(service, &sandbox, &endpoints);
            txn = task.apply(txn);
            events.extend(task.events);
        }
        match self.commit(txn, events).await {
            Ok(_) => Ok(sandbox),
            Err(CnmError::Store(KvError::TxnConflict { .. })) => {
                let name = sandbox.name.clone();
                Err((
                    sandbox,
                    CnmError::Exists {
                        kind: "sandbox",
                        name,
                    },
                ))
            }
            Err(e) => Err((sandbox, e)),
        }
    }

    /// The gateway endpoint of a sandbox being created, when its endpoints in `made` give it
    /// no default gateway (egress.rs): made like the others, with the gateway network and its
    /// record's index for the transaction. The gateway network, if made here, is put in
    /// `gateway_made`.
    async fn make_egress(
        &self,
        sandbox: &Sandbox,
        made: &mut Vec<Made>,
        allocated: &mut Vec<(String, IpAddr)>,
        gateway_made: &mut Option<Network>,
    ) -> Result<Option<(Network, u64)>> {
        if sandbox.external_key {
            // The runtime gives its containers their way out.
            return Ok(None);
        }
        let current: Vec<(Endpoint, Network)> = made
            .iter()
            .map(|m| (m.endpoint.clone(), m.network.clone()))
            .collect();
        let (super::egress::Settle::Attach, Some(spec)) = (
            self.egress_settle(&current),
            self.config.gateway_network.as_ref(),
        ) else {
            return Ok(None);
        };
        let steps = async {
            let (network, fresh) = self.gateway_network_locked(spec).await?;
            if fresh {
                *gateway_made = Some(network.clone());
            }
            let (_, index) = self
                .load::<Network>(&keys::network_in(network.scope, &network.id))
                .await?
                .ok_or_else(|| CnmError::NotFound {
                    kind: "network",
                    name: network.name.clone(),
                })?;
            let driver = self.driver(&network.driver).await?;
            let spec = EndpointSpec::default();
            self.make_endpoint(sandbox, &network, &driver, &spec, true, made, allocated)
                .await?;
            Ok((network, index))
        };
        steps.await.map(Some).map_err(|cause| CnmError::Egress {
            sandbox: sandbox.name.clone(),
            network: spec.name.clone(),
            cause: Box::new(cause),
        })
    }

    /// One endpoint of a sandbox being created: addresses, the driver's endpoint, the join,
    /// the way out; pushed to `made` as soon as the driver has it. `egress`: the sandbox's
    /// gateway endpoint (egress.rs).
    #[allow(clippy::too_many_arguments)]
    async fn make_endpoint(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        driver: &Arc<dyn Driver>,
        spec: &EndpointSpec,
        egress: bool,
        made: &mut Vec<Made>,
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<()> {
        let endpoint = self
            .new_endpoint(sandbox, network, driver.as_ref(), spec, egress, allocated)
            .await?;
        let id = endpoint.id.clone();
        made.push(Made {
            endpoint,
            network: network.clone(),
            driver: driver.clone(),
            joined: false,
            programmed: false,
        });
        let prefix = self.interface_prefix(network);
        let current: Vec<(Endpoint, Network)> = made
            .iter()
            .map(|m| (m.endpoint.clone(), m.network.clone()))
            .collect();
        let interface = match spec.interface.as_deref() {
            _ if sandbox.external_key => InterfaceName::handoff(),
            Some(exact) => InterfaceName::exact(exact),
            None => InterfaceName::numbered(&prefix, first_free_interface(&current, &prefix)),
        };
        let joined = driver
            .join(&network.id, &id, &sandbox.key, interface)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e));
        let Some(m) = made.last_mut() else {
            return Err(CnmError::invalid("endpoint", "lost while being made"));
        };
        let joined = joined?;
        m.joined = true;
        m.endpoint.interface = joined.interface;
        m.endpoint.routes = joined.static_routes;
        m.endpoint.disable_gateway = joined.disable_gateway;
        let external = ExternalConnectivity {
            port_bindings: m.endpoint.ports.clone(),
            exposed_ports: Vec::new(),
        };
        driver
            .program_external_connectivity_with(&network.id, &id, &external)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e))?;
        m.programmed = true;
        Ok(())
    }

    /// Removes a sandbox: its endpoints and record in one transaction, their data plane,
    /// addresses, and its namespace if Plexus made it. Returns what was removed.
    pub async fn remove_sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        let sandbox = self.delete_sandbox(name_or_id).await?;
        if sandbox.owned_netns {
            if let Err(e) = self.namespaces.delete(&sandbox.key).await {
                return Err(CnmError::Netns {
                    path: sandbox.key.clone(),
                    message: format!(
                        "sandbox {} removed, but its namespace could not be: {e}",
                        sandbox.name
                    ),
                });
            }
        }
        tracing::info!(sandbox = %sandbox.name, "sandbox removed");
        Ok(sandbox)
    }

    /// The records first (one transaction: endpoints, the sandbox, their events), then the
    /// data plane and the addresses. A crash in between leaves kernel objects and addresses
    /// the store does not mention, which start-up reconciliation removes.
    pub(super) async fn delete_sandbox_locked(&self, sandbox: &Sandbox) -> Result<()> {
        let mut endpoints = self.sandbox_endpoints(sandbox).await?;
        // A task's backends' events ride along: room for them.
        let at_once = if sandbox.service.is_some() {
            MAX_REMOVED_AT_ONCE - crate::service::MAX_SERVICE_NETWORKS
        } else {
            MAX_REMOVED_AT_ONCE
        };
        while endpoints.len() > at_once {
            if let Some((ep, network)) = endpoints.pop() {
                self.disconnect_locked(&sandbox.id, &ep, &network, false)
                    .await?;
            }
        }
        let (current, index) = self.sandbox_indexed(&sandbox.id).await?;
        let mut txn = Txn::new()
            .compare_index(keys::sandbox(&sandbox.id), index)
            .delete(keys::sandbox(&sandbox.id))
            .delete(keys::sandbox_name(&sandbox.name));
        let mut events = Vec::new();
        if let Some(task) = self.task_delete(&current).await? {
            txn = task.apply(txn);
            events.extend(task.events);
        }
        for (ep, network) in endpoints.iter().rev() {
            txn = txn.delete(keys::endpoint_in(network.scope, &network.id, &ep.id));
            events.push(Event::endpoint(
                EventAction::Disconnect,
                ep,
                network,
                &sandbox.name,
            ));
        }
        events.push(Event::sandbox(EventAction::Destroy, sandbox));
        self.commit(txn, events).await?;
        for (ep, network) in endpoints.iter().rev() {
            let driver = self.driver(&network.driver).await?;
            if let Err(e) = driver
                .revoke_external_connectivity(&network.id, &ep.id)
                .await
            {
                tracing::warn!(endpoint = %ep.id, error = %e, "revoking external connectivity failed; reconciliation will clean up");
            }
            if let Err(e) = driver.leave(&network.id, &ep.id).await {
                tracing::warn!(endpoint = %ep.id, error = %e, "leave failed; reconciliation will clean up");
            }
            if let Err(e) = driver.delete_endpoint(&network.id, &ep.id).await {
                tracing::warn!(endpoint = %ep.id, error = %e, "delete endpoint failed; reconciliation will clean up");
            }
            let addrs = ep.ipv4.iter().chain(ep.ipv6.iter());
            for (pool, addr) in ep.pool_ids.iter().zip(addrs) {
                if let Err(e) = self.ipam.release_address(pool, addr.addr()).await {
                    tracing::warn!(addr = %addr, error = %e, "cannot release address");
                }
            }
        }
        Ok(())
    }
}
