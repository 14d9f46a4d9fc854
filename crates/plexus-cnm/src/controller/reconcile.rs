//! Reconciliation: making every driver's kernel objects match the store, at start-up (rolling
//! back what a crash cut short) and periodically (making again what was removed behind
//! Plexus's back), and what that asks of the records: forgetting endpoints whose data plane is
//! gone, correcting interface names a crash left in records.

use std::collections::{BTreeMap, BTreeSet};

use plexus_kv::Txn;

use super::Controller;
use crate::driver::{EndpointInfo, NetworkInfo};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, Network};
use crate::reconcile::{Desired, DesiredEndpoint, ReconcileMode, ReconcileReport};
use crate::store_layout as keys;

/// What a driver is told about a recorded network: as at its creation, the options with what
/// [`Driver::allocate_network`](crate::Driver::allocate_network) took (a VXLAN id).
pub(super) fn network_info(n: &Network) -> NetworkInfo {
    let mut options = n.spec.options.clone();
    options.extend(n.driver_data.clone());
    NetworkInfo {
        id: n.id.clone(),
        name: n.name.clone(),
        options,
        ipv4: n.ipv4.clone(),
        ipv6: n.ipv6.clone(),
        internal: n.spec.internal,
        enable_ipv6: n.spec.enable_ipv6,
    }
}

/// What a driver is told of a recorded endpoint in the sandbox at `sandbox_key`.
fn desired_endpoint(ep: &Endpoint, (sandbox_key, handed_off): (String, bool)) -> DesiredEndpoint {
    DesiredEndpoint {
        sandbox_key,
        handed_off,
        interface: ep.interface.clone(),
        info: EndpointInfo {
            network_id: ep.network_id.clone(),
            endpoint_id: ep.id.clone(),
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            mac: ep.mac.clone(),
            ports: ep.ports.clone(),
            options: ep.options.clone(),
        },
    }
}

impl Controller {
    /// Makes every registered driver's kernel objects match the store, holding the operation
    /// lock so a pass never meets a connect or disconnect half done.
    ///
    /// Per driver, over this host's endpoints (another host's endpoints of a global network
    /// are that host's to reconcile): its live endpoints are read ([`Driver::live_endpoints`]); in
    /// [`ReconcileMode::Startup`] a recorded endpoint that is not live, or that has ports
    /// none of which is published, is rolled back (a crash cut its connect or disconnect
    /// short; only its records go). Interface names the kernel marks differently from the
    /// record are corrected. Then the driver reconciles with the store's networks and the
    /// endpoints kept ([`Driver::reconcile`]). A driver whose pass fails is reported in
    /// [`ReconcileReport::failed`] and the others still run; a store error ends the pass.
    ///
    /// [`Driver::live_endpoints`]: crate::Driver::live_endpoints
    /// [`Driver::reconcile`]: crate::Driver::reconcile
    pub async fn reconcile(&self, mode: ReconcileMode) -> Result<ReconcileReport> {
        let _op = self.ops.lock().await;
        let networks = self.networks().await?;
        let sandboxes = self.sandboxes().await?;
        // Endpoints some sandbox lists: a global endpoint's record is written before its
        // sandbox's (two stores), so one no sandbox lists is what a failed or cut-short
        // connect left in the cluster store.
        let listed: BTreeSet<&str> = sandboxes
            .iter()
            .flat_map(|s| s.endpoints.iter().map(String::as_str))
            .collect();
        let sandbox_keys: BTreeMap<String, (String, bool)> = sandboxes
            .iter()
            .map(|s| (s.id.clone(), (s.key.clone(), s.external_key)))
            .collect();
        let mut report = ReconcileReport::default();
        // This host's endpoints the pass keeps, by sandbox, for settling the sandboxes' way
        // out at the end; `None` once a driver's endpoints could not be read.
        let mut kept: Option<BTreeMap<String, Vec<(Endpoint, Network)>>> = Some(BTreeMap::new());
        for (name, driver) in self.drivers.iter() {
            let live = match driver.live_endpoints().await {
                Ok(live) => live,
                Err(e) => {
                    tracing::warn!(driver = name, error = %e, "cannot read the driver's live endpoints");
                    report.failed.insert(name.to_string(), e.to_string());
                    kept = None;
                    continue;
                }
            };
            let mut desired = Desired::default();
            let mut lost = Vec::new();
            for network in networks.iter().filter(|n| n.driver == name) {
                desired.networks.push(network_info(network));
                for ep in self.endpoints(&network.id).await? {
                    // Another host's endpoint of a global network: its data plane is there.
                    if !(ep.host.is_empty() || ep.host == self.config.host_id) {
                        continue;
                    }
                    let state = live.as_ref().map(|l| l.get(&ep.id));
                    let unfinished = match state {
                        None => false,
                        Some(None) => true,
                        Some(Some(l)) => !ep.ports.is_empty() && !l.published,
                    };
                    let unlisted = !listed.contains(ep.id.as_str());
                    if mode == ReconcileMode::Startup && (unfinished || unlisted) {
                        lost.push((ep, network.clone()));
                        continue;
                    }
                    let mut ep = ep;
                    if let Some(Some(actual)) = state.flatten().map(|l| l.interface.as_ref()) {
                        if ep.interface.as_ref() != Some(actual) {
                            tracing::warn!(endpoint = %ep.id, recorded = ?ep.interface, %actual, "correcting the interface name a crash left in the record");
                            self.set_interface_locked(&ep, actual).await?;
                            report.renamed.push((ep.id.clone(), actual.clone()));
                            ep.interface = Some(actual.clone());
                        }
                    }
                    if let Some(kept) = kept.as_mut() {
                        kept.entry(ep.sandbox_id.clone())
                            .or_default()
                            .push((ep.clone(), network.clone()));
                    }
                    let key = sandbox_keys.get(&ep.sandbox_id).cloned();
                    desired
                        .endpoints
                        .push(desired_endpoint(&ep, key.unwrap_or_default()));
                }
            }
            if !lost.is_empty() {
                tracing::warn!(
                    driver = name,
                    endpoints = lost.len(),
                    "rolling back endpoints without a finished join (a crash during connect or disconnect, or a sandbox namespace deleted meanwhile)"
                );
                self.forget_endpoints_locked(&lost).await?;
                report
                    .forgotten
                    .extend(lost.into_iter().map(|(ep, _)| ep.id));
            }
            match driver.reconcile(&desired, mode).await {
                Ok(done) if done.is_empty() => {}
                Ok(done) => {
                    report.drivers.insert(name.to_string(), done);
                }
                Err(e) => {
                    tracing::warn!(driver = name, error = %e, "driver reconciliation failed");
                    report.failed.insert(name.to_string(), e.to_string());
                }
            }
        }
        // Last, with every driver's kernel state made again: the sandboxes' way out
        // (egress.rs), which a crash between a connect or disconnect and its settling left
        // undone. Not when some driver's endpoints are unknown: they may want or give one.
        if let Some(kept) = kept {
            self.reconcile_egress_locked(&sandboxes, &kept, &mut report)
                .await;
        }
        // Services at start only: their records change with the operations, which a
        // periodic pass never meets half done.
        if mode == ReconcileMode::Startup {
            let sandboxes = self.sandboxes().await?;
            let (vips, tasks) = self.reconcile_services_locked(&sandboxes).await?;
            report.vips_released = vips;
            report.tasks_mended = tasks;
        }
        Ok(report)
    }

    /// Tells a driver resolved from a plugin (after a restart, at its first use) what the
    /// store holds of its networks and this host's endpoints, so it knows again where their
    /// interfaces are: start-up reconciliation covers only the registered drivers. Nothing
    /// is rolled back here; the plugin keeps its own state.
    pub(super) async fn adopt_plugin_driver(&self, name: &str, driver: &dyn crate::Driver) {
        let desired = match self.plugin_desired(name).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(driver = name, error = %e, "cannot read the plugin driver's networks");
                return;
            }
        };
        if desired.networks.is_empty() {
            return;
        }
        if let Err(e) = driver.reconcile(&desired, ReconcileMode::Startup).await {
            tracing::warn!(driver = name, error = %e, "plugin driver reconciliation failed");
        }
    }

    async fn plugin_desired(&self, name: &str) -> Result<Desired> {
        let sandbox_keys: BTreeMap<String, (String, bool)> = self
            .sandboxes()
            .await?
            .into_iter()
            .map(|s| (s.id, (s.key, s.external_key)))
            .collect();
        let mut desired = Desired::default();
        for network in self.networks().await?.iter().filter(|n| n.driver == name) {
            desired.networks.push(network_info(network));
            for ep in self.endpoints(&network.id).await? {
                if !(ep.host.is_empty() || ep.host == self.config.host_id) {
                    continue;
                }
                let Some(key) = sandbox_keys.get(&ep.sandbox_id) else {
                    continue;
                };
                desired.endpoints.push(desired_endpoint(&ep, key.clone()));
            }
        }
        Ok(desired)
    }

    /// Records `interface` as the name of `endpoint`'s interface in its sandbox: what
    /// start-up reconciliation does when the data plane marks another name than the record
    /// (a crash after a join that had to take another name than the guess written with the
    /// record, before the record was corrected).
    pub async fn set_interface(&self, endpoint: &Endpoint, interface: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        self.set_interface_locked(endpoint, interface).await
    }

    async fn set_interface_locked(&self, endpoint: &Endpoint, interface: &str) -> Result<()> {
        let mut endpoint = endpoint.clone();
        endpoint.interface = Some(interface.to_string());
        self.rewrite_endpoint(&endpoint).await
    }

    /// Forgets endpoints whose data plane is gone without a disconnect: the driver found no
    /// finished join for them at start-up (a crash during connect or disconnect, or a sandbox
    /// namespace deleted behind Plexus's back). Only the records go (the driver deletes what
    /// is left of their data plane as unknown, IPAM reconciliation frees their addresses).
    async fn forget_endpoints_locked(&self, endpoints: &[(Endpoint, Network)]) -> Result<()> {
        for (ep, network) in endpoints {
            match self
                .unrecord_endpoint(&ep.sandbox_id, ep, network, false)
                .await
            {
                Ok(()) => {}
                // Its sandbox is gone: only the endpoint's own record is left.
                Err(CnmError::NotFound { .. }) => {
                    self.store
                        .txn(Txn::new().delete(keys::endpoint_in(ep.scope, &ep.network_id, &ep.id)))
                        .await?;
                }
                Err(e) => return Err(e),
            }
            // Global addresses are not reconciled at start (other hosts allocate from the
            // same space meanwhile): this host gives back its own endpoint's here. Local
            // ones go with the local IPAM reconciliation.
            if ep.scope == crate::model::Scope::Global {
                let addrs = ep.ipv4.iter().chain(ep.ipv6.iter());
                for (pool, addr) in ep.pool_ids.iter().zip(addrs) {
                    if let Err(e) = self.ipam.release_address(pool, addr.addr()).await {
                        tracing::warn!(%addr, error = %e, "cannot release a rolled-back endpoint's global address");
                    }
                }
            }
            tracing::info!(endpoint = %ep.id, sandbox = %ep.name, network = %ep.network_id, "endpoint rolled back: its join never finished, its interface is gone or no sandbox lists it");
        }
        Ok(())
    }
}
