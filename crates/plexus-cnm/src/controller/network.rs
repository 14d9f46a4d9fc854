//! Networks: lookup, creation with their IPAM pools, removal, the pre-defined ones, prune.

use std::collections::BTreeMap;

use plexus_ipam::{GatewayRequest, Ipam, PoolRequest, PoolResponse, GLOBAL_SPACE, LOCAL_SPACE};
use plexus_kv::{KvError, Txn};

use super::events::{Event, EventAction};
use super::{check_name, driver_err, encode, new_id, now_rfc3339, Controller};
use crate::driver::NetworkInfo;
use crate::error::{CnmError, Result};
use crate::model::{
    Endpoint, IpamPool, IpamPoolSpec, Network, NetworkSpec, Sandbox, Scope, PREDEFINED_NETWORKS,
};
use crate::store_layout as keys;

/// Docker's bridge option that keeps the IPv4 gateway address off the bridge.
const BRIDGE_INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";

impl Controller {
    /// Every network, sorted by name: this host's local ones and the cluster's global ones
    /// (left out, with a warning, while the cluster store does not answer).
    pub async fn networks(&self) -> Result<Vec<Network>> {
        let mut all: Vec<Network> = self.load_all(keys::NETWORKS).await?;
        for pair in self.store.list_global_lenient(keys::GLOBAL_NETWORKS).await {
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

    /// The network with this exact id or name, local first, then global; `Ok(None)` when
    /// neither store has it. The cluster store is asked only when the local one has no such
    /// network, so local operations never wait for it.
    async fn network_exact(&self, name_or_id: &str) -> Result<Option<Network>> {
        let scopes: &[Scope] = if self.store.cluster_store().is_some() {
            &[Scope::Local, Scope::Global]
        } else {
            &[Scope::Local]
        };
        for &scope in scopes {
            if name_or_id.len() == 64 {
                if let Some((n, _)) = self
                    .load::<Network>(&keys::network_in(scope, name_or_id))
                    .await?
                {
                    return Ok(Some(n));
                }
            }
            if check_name("network", name_or_id).is_ok() {
                if let Some((id, _)) = self
                    .load::<String>(&keys::network_name_in(scope, name_or_id))
                    .await?
                {
                    if let Some((n, _)) =
                        self.load::<Network>(&keys::network_in(scope, &id)).await?
                    {
                        return Ok(Some(n));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The network with this id, name, or unique id prefix (Docker's lookup order).
    pub async fn network(&self, name_or_id: &str) -> Result<Network> {
        let not_found = || CnmError::NotFound {
            kind: "network",
            name: name_or_id.to_string(),
        };
        if name_or_id.is_empty() {
            return Err(not_found());
        }
        if let Some(n) = self.network_exact(name_or_id).await? {
            return Ok(n);
        }
        let matches: Vec<Network> = self
            .networks()
            .await?
            .into_iter()
            .filter(|n| n.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().ok_or_else(not_found)?),
            0 => Err(not_found()),
            _ => Err(CnmError::invalid(
                "network",
                format!(
                    "{name_or_id:?} matches {} networks by id prefix",
                    matches.len()
                ),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn request_pools(
        &self,
        ipam: &dyn Ipam,
        space: &str,
        owner: &str,
        specs: &[IpamPoolSpec],
        v6: bool,
        options: &BTreeMap<String, String>,
        network_options: &BTreeMap<String, String>,
        done: &mut Vec<String>,
    ) -> Result<Vec<IpamPool>> {
        let default = [IpamPoolSpec::default()];
        let specs = if specs.is_empty() {
            &default[..]
        } else {
            specs
        };
        let mut pools = Vec::new();
        for spec in specs {
            let mut request = PoolRequest::new(space, owner);
            if let Some(s) = &spec.subnet {
                request = request.subnet(s);
            }
            if let Some(r) = &spec.ip_range {
                request = request.ip_range(r);
            }
            request.gateway = match &spec.gateway {
                Some(g) => GatewayRequest::Given(g.clone()),
                None => GatewayRequest::Auto,
            };
            for (name, ip) in &spec.aux_addresses {
                request = request.aux(name, ip);
            }
            for (k, v) in options {
                request = request.option(k, v);
            }
            request.network_options = network_options.clone();
            if v6 {
                request = request.v6();
            }
            let PoolResponse {
                pool_id,
                pool,
                gateway,
                aux_addresses,
                ..
            } = ipam.request_pool(request).await?;
            done.push(pool_id.clone());
            pools.push(IpamPool {
                pool_id,
                subnet: pool,
                ip_range: spec.ip_range.clone(),
                gateway,
                aux_addresses,
            });
        }
        Ok(pools)
    }

    pub(super) async fn release_pools(&self, pool_ids: &[String]) {
        for id in pool_ids.iter().rev() {
            if let Err(e) = self.ipam.release_pool(id).await {
                tracing::warn!(pool = %id, error = %e, "cannot release pool while undoing");
            }
        }
    }

    /// Creates a network: checks the request, allocates its pools, has the driver make it,
    /// and records it, undoing everything if a step fails.
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<Network> {
        let _op = self.ops.lock().await;
        self.create_network_locked(spec).await
    }

    /// [`create_network`](Self::create_network) with the operation lock held (also how the
    /// gateway network is made within a connect).
    pub(super) async fn create_network_locked(&self, mut spec: NetworkSpec) -> Result<Network> {
        check_name("network", &spec.name)?;
        if spec.driver.is_empty() {
            spec.driver = self.config.default_driver.clone();
        }
        let driver = self.driver(&spec.driver).await?;
        if spec.driver == "bridge" && spec.ipam_driver == "dhcp" {
            // The LAN's router is the gateway of addresses from the LAN's DHCP server: the
            // bridge must not take its address. Recorded as the option a user would write.
            spec.options
                .entry(BRIDGE_INHIBIT_IPV4.to_string())
                .or_insert_with(|| "true".to_string());
        }
        check_generic_options(&spec.options)?;
        driver
            .validate_options(&spec.options)
            .map_err(|e| driver_err(driver.as_ref(), e))?;
        if spec.ipv4.len() > 1 || spec.ipv6.len() > 1 {
            return Err(CnmError::invalid(
                "subnet",
                "at most one IPv4 and one IPv6 subnet per network",
            ));
        }
        if !spec.ipv6.is_empty() && !spec.enable_ipv6 {
            return Err(CnmError::invalid(
                "subnet",
                "an IPv6 subnet needs --ipv6 (EnableIPv6)",
            ));
        }
        let capability = driver.capability();
        let scope = capability.scope;
        match spec.scope {
            Some(asked) if asked != scope => {
                return Err(CnmError::invalid(
                    "scope",
                    format!(
                        "driver {:?} keeps its networks in the {} scope, not {}",
                        spec.driver,
                        scope.name(),
                        asked.name()
                    ),
                ))
            }
            _ => {}
        }
        if scope == Scope::Global && self.store.cluster_store().is_none() {
            return Err(CnmError::invalid(
                "driver",
                format!(
                    "{:?} is a global-scope driver and this host has no cluster store: start plexusd with --cluster-store",
                    spec.driver
                ),
            ));
        }
        // Names are unique across both scopes, as a host sees them. A local network may be
        // made while the cluster store is away (the clash is then caught when it is back, by
        // lookups preferring the local one).
        let existing = match self.network_exact(&spec.name).await {
            Err(CnmError::Store(e)) if scope == Scope::Local => {
                tracing::warn!(network = %spec.name, error = %e, "cluster store unavailable: the name is checked against local networks only");
                None
            }
            other => other?,
        };
        if existing.is_some() {
            return Err(CnmError::Exists {
                kind: "network",
                name: spec.name,
            });
        }
        if !capability.multiple_networks
            && self
                .networks()
                .await?
                .iter()
                .any(|n| n.driver == spec.driver)
        {
            return Err(CnmError::invalid(
                "driver",
                format!("only one instance of {:?} network is allowed", spec.driver),
            ));
        }
        let id = new_id()?;
        let space = match scope {
            Scope::Local => LOCAL_SPACE,
            Scope::Global => GLOBAL_SPACE,
        };
        let mut pool_ids = Vec::new();
        let (ipv4, ipv6) = if capability.needs_ipam {
            let ipam = self.ipam_for(&spec.ipam_driver).await?;
            let owner = spec.name.clone();
            let v4 = self
                .request_pools(
                    ipam.as_ref(),
                    space,
                    &owner,
                    &spec.ipv4,
                    false,
                    &spec.ipam_options,
                    &spec.options,
                    &mut pool_ids,
                )
                .await;
            let v4 = match v4 {
                Ok(p) => p,
                Err(e) => {
                    self.release_pools(&pool_ids).await;
                    return Err(e);
                }
            };
            let v6 = if spec.enable_ipv6 {
                match self
                    .request_pools(
                        ipam.as_ref(),
                        space,
                        &owner,
                        &spec.ipv6,
                        true,
                        &spec.ipam_options,
                        &spec.options,
                        &mut pool_ids,
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        self.release_pools(&pool_ids).await;
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            (v4, v6)
        } else {
            (Vec::new(), Vec::new())
        };
        let network = Network {
            id: id.clone(),
            name: spec.name.clone(),
            driver: spec.driver.clone(),
            scope,
            ipv4,
            ipv6,
            created: now_rfc3339(),
            spec,
            driver_data: BTreeMap::new(),
        };
        let mut info = NetworkInfo {
            id: id.clone(),
            name: network.name.clone(),
            options: network.spec.options.clone(),
            ipv4: network.ipv4.clone(),
            ipv6: network.ipv6.clone(),
            internal: network.spec.internal,
            enable_ipv6: network.spec.enable_ipv6,
        };
        let mut network = network;
        if capability.scope == Scope::Global {
            // libnetwork: what is unique in the cluster is taken once, here, and kept with
            // the record; the driver gets it back with the options.
            match driver.allocate_network(&info).await {
                Ok(data) => {
                    info.options.extend(data.clone());
                    network.driver_data = data;
                }
                Err(e) => {
                    self.release_pools(&pool_ids).await;
                    return Err(driver_err(driver.as_ref(), e));
                }
            }
        }
        let undo_allocation = || async {
            if !network.driver_data.is_empty() {
                if let Err(e) = driver.free_network(&id, &network.driver_data).await {
                    tracing::warn!(network = %network.name, error = %e, "cannot free the driver's allocation while undoing");
                }
            }
        };
        if let Err(e) = driver.create_network(&info).await {
            undo_allocation().await;
            self.release_pools(&pool_ids).await;
            return Err(driver_err(driver.as_ref(), e));
        }
        let txn = Txn::new()
            .compare_absent(keys::network_name_in(scope, &network.name))
            .put(keys::network_in(scope, &id), encode(&network))
            .put(keys::network_name_in(scope, &network.name), encode(&id));
        let event = Event::network(EventAction::Create, &network);
        if let Err(e) = self.commit(txn, vec![event]).await {
            if let Err(u) = driver.delete_network(&id).await {
                tracing::warn!(network = %network.name, error = %u, "cannot delete the network's data plane while undoing its creation; reconciliation deletes it");
            }
            undo_allocation().await;
            self.release_pools(&pool_ids).await;
            return Err(match e {
                CnmError::Store(KvError::TxnConflict { .. }) => CnmError::Exists {
                    kind: "network",
                    name: network.name,
                },
                other => other,
            });
        }
        tracing::info!(network = %network.name, id = %id, driver = %network.driver, "network created");
        Ok(network)
    }

    /// Endpoints on a network.
    pub async fn endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        let local = self.load_all(&keys::endpoints_of(network_id)).await?;
        if !local.is_empty()
            || self.store.cluster_store().is_none()
            || self
                .load::<Network>(&keys::network(network_id))
                .await?
                .is_some()
        {
            return Ok(local);
        }
        // A global network's endpoints, every host's.
        self.load_all(&keys::endpoints_in(Scope::Global, network_id))
            .await
    }

    /// Deletes a network that has no endpoints.
    pub async fn delete_network(&self, name_or_id: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let network = self.network(name_or_id).await?;
        self.delete_network_locked(&network).await
    }

    pub(super) async fn delete_network_locked(&self, network: &Network) -> Result<()> {
        if network.is_predefined() {
            return Err(CnmError::Predefined {
                name: network.name.clone(),
            });
        }
        self.remove_network_locked(network).await
    }

    /// Removes a network that has no endpoints, pre-defined or not (the caller decides).
    pub(super) async fn remove_network_locked(&self, network: &Network) -> Result<()> {
        let services = self.services_on(network).await?;
        if !services.is_empty() {
            return Err(CnmError::InUseBy {
                what: format!("network {}", network.name),
                by: format!(
                    "service {} (remove the service first)",
                    services.join(", service ")
                ),
            });
        }
        let endpoints = self.endpoints(&network.id).await?;
        if !endpoints.is_empty() {
            let mut by = Vec::new();
            for ep in &endpoints {
                let sandbox = self
                    .load::<Sandbox>(&keys::sandbox(&ep.sandbox_id))
                    .await?
                    .map(|(s, _)| s.name)
                    .unwrap_or_else(|| ep.sandbox_id.clone());
                if ep.egress {
                    by.push(format!(
                        "sandbox {sandbox} through {}, its way out while its other networks give it no default gateway; removed with the sandbox or when it leaves them",
                        ep.name
                    ));
                } else if ep.host.is_empty() || ep.host == self.config.host_id {
                    by.push(format!("sandbox {sandbox}"));
                } else {
                    by.push(format!("sandbox {sandbox} on host {}", ep.host));
                }
            }
            return Err(CnmError::InUse {
                what: format!("network {}", network.name),
                by: by.join(", "),
            });
        }
        let driver = self.driver(&network.driver).await?;
        // Records first: once they are gone nobody can attach; then the data plane; then the
        // pools. A crash in between leaves only what reconciliation removes.
        let (_, index) = self
            .load::<Network>(&keys::network_in(network.scope, &network.id))
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "network",
                name: network.name.clone(),
            })?;
        self.commit(
            Txn::new()
                .compare_index(keys::network_in(network.scope, &network.id), index)
                .delete(keys::network_in(network.scope, &network.id))
                .delete(keys::network_name_in(network.scope, &network.name)),
            vec![Event::network(EventAction::Destroy, network)],
        )
        .await?;
        // Not the caller's error: the records are gone (a retry would be a 404), and what the
        // driver left carries its mark with a network the store no longer knows, which
        // `Driver::reconcile` deletes on the next pass (periodic, or the next start).
        if let Err(e) = driver.delete_network(&network.id).await {
            tracing::warn!(network = %network.name, error = %e, "driver could not delete the network; the next reconciliation pass deletes what is left");
        }
        if !network.driver_data.is_empty() {
            if let Err(e) = driver.free_network(&network.id, &network.driver_data).await {
                tracing::warn!(network = %network.name, error = %e, "driver could not free its allocation");
            }
        }
        let pool_ids: Vec<String> = network
            .ipv4
            .iter()
            .chain(&network.ipv6)
            .map(|p| p.pool_id.clone())
            .collect();
        self.release_pools(&pool_ids).await;
        tracing::info!(network = %network.name, "network deleted");
        Ok(())
    }

    /// Makes the [`PREDEFINED_NETWORKS`] that are missing, as Docker's daemon does at start;
    /// returns the names it made. One is skipped (with a warning) when its driver is not
    /// registered, when its name is taken by a network of another driver, or when its
    /// driver, which allows one network only, already has one under another name.
    pub async fn create_predefined_networks(&self) -> Result<Vec<String>> {
        let mut made = Vec::new();
        let networks = self.networks().await?;
        for (name, driver) in PREDEFINED_NETWORKS {
            if !self.has_driver(driver) {
                tracing::warn!(
                    network = name,
                    driver,
                    "driver not registered: no pre-defined network"
                );
                continue;
            }
            if let Some(other) = networks
                .iter()
                .find(|n| n.name == name || n.driver == driver)
            {
                if !other.is_predefined() {
                    tracing::warn!(network = name, driver, taken_by = %other.name, "pre-defined network not made: its name or its driver's one network is taken");
                }
                continue;
            }
            let spec = NetworkSpec {
                name: name.to_string(),
                driver: driver.to_string(),
                ..Default::default()
            };
            self.create_network(spec).await?;
            made.push(name.to_string());
        }
        Ok(made)
    }

    /// Deletes every network without endpoints, except the pre-defined ones; returns their
    /// names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let _op = self.ops.lock().await;
        let mut pruned = Vec::new();
        for network in self.networks().await? {
            if !network.is_predefined()
                && self.endpoints(&network.id).await?.is_empty()
                && self.services_on(&network).await?.is_empty()
            {
                self.delete_network_locked(&network).await?;
                pruned.push(network.name);
            }
        }
        Ok(pruned)
    }
}

/// The longest DNS TTL a network may set (a day).
const MAX_DNS_TTL: u32 = 86_400;

/// Checks the options every driver shares: the embedded DNS's (`plexus.dns.*`).
fn check_generic_options(options: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (k, v) in options {
        match k.as_str() {
            crate::model::DNS_TTL_OPTION => {
                let ttl: u32 = v.trim().parse().map_err(|_| {
                    CnmError::invalid(
                        format!("{k} option"),
                        format!("{v:?} is not a number of seconds"),
                    )
                })?;
                if ttl > MAX_DNS_TTL {
                    return Err(CnmError::invalid(
                        format!("{k} option"),
                        format!("{ttl} is more than a day ({MAX_DNS_TTL} s)"),
                    ));
                }
            }
            other if other.starts_with("plexus.dns.") => {
                return Err(CnmError::invalid(
                    format!("{other} option"),
                    format!(
                        "unknown; the embedded DNS knows {}",
                        crate::model::DNS_TTL_OPTION
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}
