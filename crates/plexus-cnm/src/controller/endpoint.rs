//! Endpoints: connect (addresses, the driver's endpoint and join, the record) and
//! disconnect, each undone in reverse when a step fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_ipam::api::DATA_DNS_SERVERS;
use plexus_ipam::AddressRequest;
use plexus_kv::Txn;

use super::events::{Event, EventAction};
use super::{check_name, driver_err, encode, new_id, Controller};
use crate::driver::{Driver, EndpointInfo, ExternalConnectivity, InterfaceName};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, EndpointSpec, IpamPool, Network, Sandbox, Scope};
use crate::store_layout as keys;

impl Controller {
    /// Connects a sandbox to a network: allocates its addresses, has the driver make the
    /// endpoint and put it into the sandbox, and records it — or undoes all of it.
    pub async fn connect(
        &self,
        sandbox: &str,
        network: &str,
        spec: EndpointSpec,
    ) -> Result<Endpoint> {
        let _op = self.ops.lock().await;
        let (sandbox, _) = self.sandbox_indexed(sandbox).await?;
        let network = self.network(network).await?;
        let driver = self.driver(&network.driver).await?;
        check_endpoint_spec(&network, &spec, false)?;
        // One read of the sandbox's endpoints serves both this check and the interface name
        // the join tries first.
        let current = self.sandbox_endpoints(&sandbox).await?;
        if current.iter().any(|(ep, _)| ep.network_id == network.id) {
            return Err(CnmError::Exists {
                kind: "endpoint",
                name: format!("{} on network {}", sandbox.name, network.name),
            });
        }

        let mut allocated: Vec<(String, IpAddr)> = Vec::new();
        let result = self
            .connect_steps(
                &sandbox,
                &network,
                driver.as_ref(),
                spec,
                false,
                &current,
                &mut allocated,
            )
            .await;
        if result.is_err() {
            for (pool, addr) in allocated.iter().rev() {
                if let Err(e) = self.ipam.release_address(pool, *addr).await {
                    tracing::warn!(%addr, error = %e, "cannot release address while undoing");
                }
            }
        }
        let endpoint = result?;
        // The sandbox's way out follows its networks (egress.rs): this one may give no
        // default gateway, or give one that makes the gateway endpoint unneeded. A sandbox
        // that cannot be given its way out is not connected.
        if let Err(e) = self.settle_egress_locked(&sandbox.id).await {
            if let Err(u) = self
                .disconnect_locked(&sandbox.id, &endpoint, &network, false)
                .await
            {
                tracing::warn!(endpoint = %endpoint.id, error = %u, "cannot undo the connect; reconciliation removes what is left");
            }
            return Err(e);
        }
        Ok(endpoint)
    }

    pub(super) async fn allocate(
        &self,
        pools: &[IpamPool],
        preferred: Option<&String>,
        mac: Option<&String>,
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Option<(String, IpNet)>> {
        Ok(self
            .allocate_with_data(pools, preferred, mac, allocated)
            .await?
            .map(|(pool, addr, _)| (pool, addr)))
    }

    /// [`allocate`](Self::allocate), with the IPAM driver's data (a lease's DNS servers).
    async fn allocate_with_data(
        &self,
        pools: &[IpamPool],
        preferred: Option<&String>,
        mac: Option<&String>,
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Option<(String, IpNet, BTreeMap<String, String>)>> {
        let Some(pool) = pools.first() else {
            return Ok(None);
        };
        let mut request = match preferred {
            Some(ip) => AddressRequest::preferred(&pool.pool_id, ip),
            None => AddressRequest::next(&pool.pool_id),
        };
        request.mac_address = mac.cloned();
        let response = self.ipam.request_address(request).await?;
        allocated.push((pool.pool_id.clone(), response.address.addr()));
        Ok(Some((
            pool.pool_id.clone(),
            response.address,
            response.data,
        )))
    }

    /// The MAC an endpoint of `network` is made with: the one asked for, or, when the
    /// network's IPAM driver needs the MAC before the address (a DHCP server leases to a MAC),
    /// a random locally administered one, as libnetwork makes for such drivers; `None` lets
    /// the network's driver choose.
    async fn endpoint_mac(&self, network: &Network, spec: &EndpointSpec) -> Result<Option<String>> {
        if spec.mac.is_some() || (network.ipv4.is_empty() && network.ipv6.is_empty()) {
            return Ok(spec.mac.clone());
        }
        let ipam = self.ipam_for(&network.spec.ipam_driver).await?;
        if !ipam.capabilities().await?.requires_mac_address {
            return Ok(None);
        }
        let mut mac = [0u8; 6];
        let id = new_id()?;
        for (i, b) in mac.iter_mut().enumerate() {
            *b = u8::from_str_radix(id.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        mac[0] = (mac[0] & 0xfc) | 0x02;
        Ok(Some(
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ))
    }

    /// The first steps of every new endpoint, for connect and for a sandbox made whole: its
    /// addresses (pushed to `allocated`, for the caller's undo), the driver's endpoint, and
    /// its record as it will be stored, with no interface name yet. `egress`: it is the
    /// sandbox's way out through the gateway network (egress.rs), named as Docker names it.
    pub(super) async fn new_endpoint(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        driver: &dyn Driver,
        spec: &EndpointSpec,
        egress: bool,
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Endpoint> {
        let mac = self.endpoint_mac(network, spec).await?;
        let v4 = self
            .allocate_with_data(&network.ipv4, spec.ipv4.as_ref(), mac.as_ref(), allocated)
            .await?;
        let v6 = self
            .allocate_with_data(&network.ipv6, spec.ipv6.as_ref(), mac.as_ref(), allocated)
            .await?;
        // DNS servers that came with the addresses (a DHCP lease's), v4's first, once each.
        let mut dns: Vec<IpAddr> = Vec::new();
        for data in v4.iter().chain(v6.iter()).map(|(_, _, d)| d) {
            let listed = data.get(DATA_DNS_SERVERS).map(String::as_str).unwrap_or("");
            for ip in listed.split(',').filter_map(|s| s.trim().parse().ok()) {
                if !dns.contains(&ip) {
                    dns.push(ip);
                }
            }
        }
        if network.scope == Scope::Global {
            // A global network is created on the host that made it; every other host's
            // driver learns of it (with its allocation) here, before an endpoint is made on it.
            driver
                .create_network(&super::reconcile::network_info(network))
                .await
                .map_err(|e| driver_err(driver, e))?;
        }
        let id = new_id()?;
        let info = EndpointInfo {
            network_id: network.id.clone(),
            endpoint_id: id.clone(),
            ipv4: v4.as_ref().map(|(_, a, _)| *a),
            ipv6: v6.as_ref().map(|(_, a, _)| *a),
            mac,
            ports: spec.ports.clone(),
            options: spec.options.clone(),
        };
        let created = driver
            .create_endpoint(&info)
            .await
            .map_err(|e| driver_err(driver, e))?;
        Ok(Endpoint {
            id,
            name: if egress {
                super::egress::endpoint_name(&sandbox.id)
            } else {
                sandbox.name.clone()
            },
            network_id: network.id.clone(),
            sandbox_id: sandbox.id.clone(),
            ipv4: info.ipv4,
            ipv6: info.ipv6,
            pool_ids: v4
                .iter()
                .chain(v6.iter())
                .map(|(p, _, _)| p.clone())
                .collect(),
            mac: created.mac,
            interface: None,
            aliases: spec.aliases.clone(),
            ports: created.ports,
            scope: network.scope,
            host: self.endpoint_host(network),
            options: spec.options.clone(),
            routes: Vec::new(),
            disable_gateway: false,
            dns,
            egress,
        })
    }

    /// The prefix of the network's interface names in sandboxes (`eth`, or the network's
    /// `com.docker.network.container_iface_prefix`).
    pub(super) fn interface_prefix(&self, network: &Network) -> String {
        network
            .spec
            .options
            .get("com.docker.network.container_iface_prefix")
            .cloned()
            .unwrap_or_else(|| self.config.interface_prefix.clone())
    }

    /// Connects `sandbox` to `network` once checked: see [`new_endpoint`](Self::new_endpoint)
    /// for `egress`; addresses taken are in `allocated` for the caller to release when it
    /// fails, all else is undone here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn connect_steps(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        driver: &dyn Driver,
        spec: EndpointSpec,
        egress: bool,
        current: &[(Endpoint, Network)],
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Endpoint> {
        let mut endpoint = self
            .new_endpoint(sandbox, network, driver, &spec, egress, allocated)
            .await?;
        let id = endpoint.id.clone();
        let prefix = self.interface_prefix(network);
        let interface = match spec.interface.as_deref() {
            _ if sandbox.external_key => InterfaceName::handoff(),
            Some(exact) => InterfaceName::exact(exact),
            None => InterfaceName::numbered(&prefix, first_free_interface(current, &prefix)),
        };
        endpoint.interface = Some(interface.guess());
        // The record and the driver's kernel work go on at once, so the record's disk flush
        // (about a millisecond) hides behind the join. A crash can then leave a record whose
        // join never finished: start-up reconciliation finds such endpoints lost (see
        // `Controller::reconcile`) and rolls them back.
        let (recorded, joined) = tokio::join!(
            self.record_endpoint(sandbox, network, &endpoint),
            driver.join(&network.id, &id, &sandbox.key, interface),
        );
        match (recorded, joined) {
            (Ok(()), Ok(joined)) => {
                // Last, the way out (published ports): start-up reconciliation rolls back an
                // endpoint whose ports a crash left unpublished, as one whose join never
                // finished.
                let external = ExternalConnectivity {
                    port_bindings: endpoint.ports.clone(),
                    exposed_ports: Vec::new(),
                };
                if let Err(e) = driver
                    .program_external_connectivity_with(&network.id, &id, &external)
                    .await
                {
                    self.undo_connect(driver, &sandbox.id, &endpoint, network, true, true)
                        .await;
                    return Err(driver_err(driver, e));
                }
                let routes_differ = !joined.static_routes.is_empty() || joined.disable_gateway;
                if joined.interface != endpoint.interface || routes_differ {
                    // The sandbox had the name already (not from Plexus), or the join has
                    // routes to record: record what the driver did.
                    endpoint.interface = joined.interface;
                    endpoint.routes = joined.static_routes;
                    endpoint.disable_gateway = joined.disable_gateway;
                    self.rewrite_endpoint(&endpoint).await?;
                }
            }
            (Ok(()), Err(e)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, network, true, false)
                    .await;
                return Err(driver_err(driver, e));
            }
            (Err(e), Ok(_)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, network, false, true)
                    .await;
                return Err(e);
            }
            (Err(_), Err(e)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, network, false, false)
                    .await;
                return Err(driver_err(driver, e));
            }
        }
        tracing::info!(sandbox = %sandbox.name, network = %network.name, endpoint = %id, "connected");
        Ok(endpoint)
    }

    /// The owner recorded in an endpoint of `network`: this host on a global network
    /// (other hosts see the record), nothing on a local one (always this host's).
    pub(super) fn endpoint_host(&self, network: &Network) -> String {
        match network.scope {
            Scope::Local => String::new(),
            Scope::Global => self.config.host_id.clone(),
        }
    }

    /// Undoes a connect cut short once its endpoint was made: the record if `recorded`, the
    /// join if `joined`, then the endpoint. What fails here start-up reconciliation removes.
    pub(super) async fn undo_connect(
        &self,
        driver: &dyn Driver,
        sandbox_id: &str,
        endpoint: &Endpoint,
        network: &Network,
        recorded: bool,
        joined: bool,
    ) {
        if recorded {
            if let Err(u) = self
                .unrecord_endpoint(sandbox_id, endpoint, network, false)
                .await
            {
                tracing::warn!(endpoint = %endpoint.id, error = %u, "cannot remove the record of a failed connect; start-up reconciliation will");
            }
        }
        if joined {
            if let Err(e) = driver.leave(&endpoint.network_id, &endpoint.id).await {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "cannot leave while undoing a connect; reconciliation deletes what is left");
            }
        }
        if let Err(e) = driver
            .delete_endpoint(&endpoint.network_id, &endpoint.id)
            .await
        {
            tracing::warn!(endpoint = %endpoint.id, error = %e, "cannot delete the endpoint while undoing a connect; reconciliation deletes what is left");
        }
    }

    /// Replaces an endpoint's record (same sandbox list).
    pub(super) async fn rewrite_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let key = keys::endpoint_in(endpoint.scope, &endpoint.network_id, &endpoint.id);
        let (_, index) = self
            .load::<Endpoint>(&key)
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "endpoint",
                name: endpoint.id.clone(),
            })?;
        self.store
            .txn(
                Txn::new()
                    .compare_index(key.clone(), index)
                    .put(key, encode(endpoint)),
            )
            .await?;
        Ok(())
    }

    /// Removes an endpoint's record and its place in its sandbox's list, with its
    /// `disconnect` event. `relaxed` asks for no disk flush of its own (a durable write
    /// follows), but a transaction with an event is always durable (see `commit`).
    pub(super) async fn unrecord_endpoint(
        &self,
        sandbox_id: &str,
        endpoint: &Endpoint,
        network: &Network,
        relaxed: bool,
    ) -> Result<()> {
        let (mut sandbox, index) = self.sandbox_indexed(sandbox_id).await?;
        sandbox.endpoints.retain(|e| e != &endpoint.id);
        let task = self
            .task_endpoint_change(&sandbox, network, endpoint, false)
            .await?;
        let mut txn = Txn::new()
            .compare_index(keys::sandbox(sandbox_id), index)
            .delete(keys::endpoint_in(
                endpoint.scope,
                &endpoint.network_id,
                &endpoint.id,
            ))
            .put(keys::sandbox(sandbox_id), encode(&sandbox));
        txn.relaxed = relaxed;
        let mut events = vec![Event::endpoint(
            EventAction::Disconnect,
            endpoint,
            network,
            &sandbox.name,
        )];
        if let Some(task) = task {
            txn = task.apply(txn);
            events.extend(task.events);
        }
        self.commit(txn, events).await?;
        Ok(())
    }

    pub(super) async fn record_endpoint(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        endpoint: &Endpoint,
    ) -> Result<()> {
        let (mut current, index) = self.sandbox_indexed(&sandbox.id).await?;
        let (_, net_index) = self
            .load::<Network>(&keys::network_in(network.scope, &network.id))
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "network",
                name: network.name.clone(),
            })?;
        current.endpoints.push(endpoint.id.clone());
        let task = self
            .task_endpoint_change(&current, network, endpoint, true)
            .await?;
        let mut events = vec![Event::endpoint(
            EventAction::Connect,
            endpoint,
            network,
            &sandbox.name,
        )];
        let txn = Txn::new()
            .compare_index(keys::sandbox(&sandbox.id), index)
            // The network must still exist: a concurrent delete loses or we do.
            .compare_index(keys::network_in(network.scope, &network.id), net_index)
            .compare_absent(keys::endpoint_in(network.scope, &network.id, &endpoint.id))
            .put(
                keys::endpoint_in(network.scope, &network.id, &endpoint.id),
                encode(endpoint),
            )
            .put(keys::sandbox(&sandbox.id), encode(&current));
        let txn = match task {
            Some(task) => {
                events.extend(task.events.iter().cloned());
                task.apply(txn)
            }
            None => txn,
        };
        self.commit(txn, events).await?;
        Ok(())
    }

    /// Disconnects a sandbox from a network.
    pub async fn disconnect(&self, sandbox: &str, network: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let (sandbox, network, endpoint) = self.endpoint_on(sandbox, network).await?;
        if endpoint.egress {
            return Err(self.refuse_egress_disconnect(&sandbox, &endpoint));
        }
        self.disconnect_locked(&sandbox.id, &endpoint, &network, false)
            .await?;
        // Its way out follows (egress.rs): no longer needed, or needed now that a network
        // with a gateway is gone. The disconnect is done either way; a pass retries.
        if let Err(e) = self.settle_egress_locked(&sandbox.id).await {
            tracing::warn!(sandbox = %sandbox.name, error = %e, "cannot settle the sandbox's way out after the disconnect; the next reconciliation pass tries again");
        }
        Ok(())
    }

    /// The endpoint of `sandbox` on `network` (names or ids), with both.
    pub(super) async fn endpoint_on(
        &self,
        sandbox: &str,
        network: &str,
    ) -> Result<(Sandbox, Network, Endpoint)> {
        let (sandbox, _) = self.sandbox_indexed(sandbox).await?;
        let network = self.network(network).await?;
        let endpoint =
            self.endpoint_of(&sandbox, &network)
                .await?
                .ok_or_else(|| CnmError::NotFound {
                    kind: "endpoint",
                    name: format!("{} on network {}", sandbox.name, network.name),
                })?;
        Ok((sandbox, network, endpoint))
    }

    /// What the data plane holds for the endpoint of `sandbox` on `network`, as its driver
    /// reports it (libnetwork's `EndpointOperInfo`; the bridge driver: its MAC and published
    /// ports).
    pub async fn endpoint_oper_info(
        &self,
        sandbox: &str,
        network: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        let (_, network, endpoint) = self.endpoint_on(sandbox, network).await?;
        let driver = self.driver(&network.driver).await?;
        driver
            .endpoint_oper_info(&network.id, &endpoint.id)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e))
    }

    /// `relaxed`: the record's removal needs no disk flush of its own (the caller's next
    /// durable write follows).
    pub(super) async fn disconnect_locked(
        &self,
        sandbox_id: &str,
        endpoint: &Endpoint,
        network: &Network,
        relaxed: bool,
    ) -> Result<()> {
        let driver = self.driver(&network.driver).await?;
        // The record goes while the driver takes the data plane down (as in connect): the
        // driver takes it out of service in an order that start-up reconciliation reads as
        // "gone" however a crash cuts it short.
        //
        // A failed step is not the caller's error: the record is gone whatever the kernel
        // said (a retry would be a 404), and what the step left behind carries the driver's
        // mark with an endpoint the store no longer knows, which `Driver::reconcile` deletes
        // on the next pass (periodic, or the next start). Each step still runs, so one
        // failure leaves as little as possible.
        let data_plane = async {
            if let Err(e) = driver
                .revoke_external_connectivity(&network.id, &endpoint.id)
                .await
            {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "revoking external connectivity failed; the next reconciliation pass unpublishes the ports");
            }
            if let Err(e) = driver.leave(&network.id, &endpoint.id).await {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "leave failed; the next reconciliation pass deletes the interface");
            }
            if let Err(e) = driver.delete_endpoint(&network.id, &endpoint.id).await {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "delete endpoint failed; the next reconciliation pass deletes what is left");
            }
        };
        let (unrecorded, ()) = tokio::join!(
            self.unrecord_endpoint(sandbox_id, endpoint, network, relaxed),
            data_plane
        );
        unrecorded?;
        let addrs = endpoint.ipv4.iter().chain(endpoint.ipv6.iter());
        for (pool, addr) in endpoint.pool_ids.iter().zip(addrs) {
            if let Err(e) = self.ipam.release_address(pool, addr.addr()).await {
                tracing::warn!(addr = %addr, error = %e, "cannot release address");
            }
        }
        Ok(())
    }
}

/// Checks what a connect asks for on `network` before anything is allocated.
/// `task`: the sandbox is a task of a service on `network` (or the host's ingress sandbox
/// on the ingress network), which may join it without `--attachable`.
pub(super) fn check_endpoint_spec(
    network: &Network,
    spec: &EndpointSpec,
    task: bool,
) -> Result<()> {
    if network.scope == Scope::Global && !network.spec.attachable && !task {
        // Docker: only a swarm service's tasks join a cluster network made without
        // --attachable; a standalone container is refused.
        return Err(CnmError::invalid(
            "network",
            format!(
                "network {} is not manually attachable: create it with --attachable",
                network.name
            ),
        ));
    }
    for alias in &spec.aliases {
        check_name("alias", alias)?;
    }
    if spec.ipv4.is_some() && network.spec.ipv4.iter().all(|p| p.subnet.is_none()) {
        // Docker: a user-chosen address needs a user-chosen subnet.
        return Err(CnmError::invalid(
            "ip",
            "user specified IP address is supported only when connecting to networks with user configured subnets",
        ));
    }
    if spec.ipv6.is_some() && !network.spec.enable_ipv6 {
        return Err(CnmError::invalid(
            "ip6",
            "the network does not have IPv6 enabled",
        ));
    }
    if let Some(name) = &spec.interface {
        // The kernel's rule for link names (IFNAMSIZ, no '/' or whitespace).
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if bad {
            return Err(CnmError::invalid(
                "interface name",
                format!("{name:?} is not a link name (1 to 15 bytes, no '/', ':' or spaces)"),
            ));
        }
    }
    Ok(())
}

/// The first number for `prefix` that none of a sandbox's endpoints (`current`) has in its
/// interface name: the name a join tries first.
pub(super) fn first_free_interface(current: &[(Endpoint, Network)], prefix: &str) -> u32 {
    let used: BTreeSet<&str> = current
        .iter()
        .filter_map(|(ep, _)| ep.interface.as_deref())
        .collect();
    (0u32..)
        .find(|n| !used.contains(format!("{prefix}{n}").as_str()))
        .unwrap_or(0)
}
