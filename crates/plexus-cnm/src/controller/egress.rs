//! The way out of a sandbox whose networks give it no default gateway (an overlay's join gives
//! none), as libnetwork's `needDefaultGW`, `setupDefaultGW` and `clearDefaultGW`.
//!
//! When such a sandbox has no other endpoint that gives it a default gateway, the controller
//! attaches it to the gateway network ([`ControllerConfig::gateway_network`], Docker's
//! `docker_gwbridge`: a local bridge network with masquerade and no traffic between its
//! sandboxes, made on first need) through an endpoint named `gateway_<first 12 characters of the
//! sandbox id>` and marked [`Endpoint::egress`], whose join gives the sandbox its default route.
//! The endpoint is removed when the sandbox no longer needs it: it left the last network that
//! wanted it, or joined one that gives a gateway; sandbox removal takes it with the others.
//!
//! Every connect and disconnect settles the way out in the same operation (a connect whose
//! sandbox cannot be given one is undone whole); reconciliation settles what a crash left
//! between the two steps.
//!
//! [`ControllerConfig::gateway_network`]: super::ControllerConfig::gateway_network

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Controller;
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, EndpointSpec, Network, NetworkSpec, Sandbox, Scope};
use crate::reconcile::ReconcileReport;
use crate::store_layout as keys;

/// How many characters of the sandbox id name its gateway endpoint (Docker's `gwEPlen`).
const ID_CHARS: usize = 12;

/// The name of a sandbox's gateway endpoint: `gateway_<first 12 characters of its id>`.
pub(super) fn endpoint_name(sandbox_id: &str) -> String {
    format!(
        "gateway_{}",
        sandbox_id.get(..ID_CHARS).unwrap_or(sandbox_id)
    )
}

/// What a sandbox's way out needs, given its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Settle {
    /// It needs the gateway network and is not on it.
    Attach,
    /// Its gateway endpoint is no longer needed.
    Detach(Box<(Endpoint, Network)>),
    /// It is as it should be.
    Nothing,
}

/// Whether an endpoint is on the gateway network `gateway`: made for the way out, or a user's
/// own endpoint on that network (which serves as well, and is left alone).
fn on_gateway(gateway: &str, ep: &Endpoint, net: &Network) -> bool {
    ep.egress || (net.scope == Scope::Local && net.name == gateway)
}

/// libnetwork's `needDefaultGW`, then what to do about it: among the endpoints not on the
/// gateway network, not on `host` or `null` networks and not on `--internal` ones, one that
/// gives no default gateway (its join said so) asks for the way out, and one that gives one
/// (a default route of its own) makes it unneeded.
pub(super) fn settle(gateway: &str, endpoints: &[(Endpoint, Network)]) -> Settle {
    let (mut wanted, mut given) = (false, false);
    for (ep, net) in endpoints {
        if on_gateway(gateway, ep, net)
            || matches!(net.driver.as_str(), "host" | "null")
            || net.spec.internal
        {
            continue;
        }
        let default_route = ep.routes.iter().any(|r| r.destination.prefix_len() == 0);
        if ep.disable_gateway && !default_route {
            wanted = true;
        } else {
            given = true;
        }
    }
    let need = wanted && !given;
    let on = endpoints
        .iter()
        .any(|(ep, net)| on_gateway(gateway, ep, net));
    match endpoints.iter().find(|(ep, _)| ep.egress) {
        Some(found) if !need => Settle::Detach(Box::new(found.clone())),
        _ if need && !on => Settle::Attach,
        _ => Settle::Nothing,
    }
}

impl Controller {
    /// What the sandbox's way out needs, with these endpoints; nothing when no gateway network
    /// is configured.
    pub(super) fn egress_settle(&self, endpoints: &[(Endpoint, Network)]) -> Settle {
        match &self.config.gateway_network {
            Some(spec) => settle(&spec.name, endpoints),
            None => Settle::Nothing,
        }
    }

    /// The sandbox's endpoints when every one it lists can be read: `None` while the cluster
    /// store is away (a global network's endpoints cannot be), when nothing may be decided.
    async fn complete_endpoints(
        &self,
        sandbox: &Sandbox,
    ) -> Result<Option<Vec<(Endpoint, Network)>>> {
        let eps = self.sandbox_endpoints(sandbox).await?;
        Ok((eps.len() == sandbox.endpoints.len()).then_some(eps))
    }

    /// The gateway network: the local network of `spec`'s name as it is, or else one made from
    /// `spec`; with whether this call made it (for the caller's undo).
    pub(super) async fn gateway_network_locked(
        &self,
        spec: &NetworkSpec,
    ) -> Result<(Network, bool)> {
        if let Some((id, _)) = self
            .load::<String>(&keys::network_name_in(Scope::Local, &spec.name))
            .await?
        {
            if let Some((network, _)) = self
                .load::<Network>(&keys::network_in(Scope::Local, &id))
                .await?
            {
                return Ok((network, false));
            }
        }
        let network = self.create_network_locked(spec.clone()).await?;
        tracing::info!(network = %network.name, "gateway network made for sandboxes whose networks give no default gateway");
        Ok((network, true))
    }

    /// Removes a gateway network this operation made, when what it was made for failed.
    pub(super) async fn undo_gateway_network(&self, network: &Network) {
        if let Err(e) = self.remove_network_locked(network).await {
            tracing::warn!(network = %network.name, error = %e, "cannot remove the gateway network made by a failed operation");
        }
    }

    /// Settles the way out of the sandbox `sandbox_id` after a connect or disconnect changed
    /// its endpoints. Attaching that fails is the caller's error (everything it made undone);
    /// a failed detach is logged, for reconciliation to finish.
    pub(super) async fn settle_egress_locked(&self, sandbox_id: &str) -> Result<()> {
        if self.config.gateway_network.is_none() {
            return Ok(());
        }
        let (sandbox, _) = self.sandbox_indexed(sandbox_id).await?;
        if sandbox.external_key {
            // The runtime gives its containers their way out.
            return Ok(());
        }
        let Some(current) = self.complete_endpoints(&sandbox).await? else {
            tracing::warn!(sandbox = %sandbox.name, "not every endpoint of the sandbox can be read (cluster store away?): its way out is settled later");
            return Ok(());
        };
        match self.egress_settle(&current) {
            Settle::Attach => self.attach_egress_locked(&sandbox, &current).await,
            Settle::Detach(found) => {
                self.detach_egress_locked(&sandbox, &found.0, &found.1)
                    .await;
                Ok(())
            }
            Settle::Nothing => Ok(()),
        }
    }

    /// Attaches `sandbox` (with its `current` endpoints) to the gateway network, made if
    /// missing; on failure nothing of it is left (the network too, if made here), and the
    /// error says what the way out was for.
    async fn attach_egress_locked(
        &self,
        sandbox: &Sandbox,
        current: &[(Endpoint, Network)],
    ) -> Result<()> {
        let Some(spec) = self.config.gateway_network.as_ref() else {
            return Ok(());
        };
        let wrap = |cause: CnmError| CnmError::Egress {
            sandbox: sandbox.name.clone(),
            network: spec.name.clone(),
            cause: Box::new(cause),
        };
        let (network, made) = self.gateway_network_locked(spec).await.map_err(wrap)?;
        let mut allocated: Vec<(String, IpAddr)> = Vec::new();
        let result = match self.driver(&network.driver).await {
            Ok(driver) => {
                self.connect_steps(
                    sandbox,
                    &network,
                    driver.as_ref(),
                    EndpointSpec::default(),
                    true,
                    current,
                    &mut allocated,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(ep) => {
                tracing::info!(sandbox = %sandbox.name, network = %network.name, endpoint = %ep.name, "way out attached");
                Ok(())
            }
            Err(e) => {
                for (pool, addr) in allocated.iter().rev() {
                    if let Err(u) = self.ipam.release_address(pool, *addr).await {
                        tracing::warn!(%addr, error = %u, "cannot release address while undoing");
                    }
                }
                if made {
                    self.undo_gateway_network(&network).await;
                }
                Err(wrap(e))
            }
        }
    }

    /// Removes the sandbox's gateway endpoint, no longer needed; a failure is logged (the
    /// next reconciliation pass removes it).
    async fn detach_egress_locked(&self, sandbox: &Sandbox, ep: &Endpoint, network: &Network) {
        match self
            .disconnect_locked(&sandbox.id, ep, network, false)
            .await
        {
            Ok(()) => {
                tracing::info!(sandbox = %sandbox.name, network = %network.name, endpoint = %ep.name, "way out removed: no longer needed")
            }
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.name, endpoint = %ep.name, error = %e, "cannot remove the gateway endpoint; the next reconciliation pass will")
            }
        }
    }

    /// Refuses a user's disconnect of a gateway endpoint: it goes with what it is for.
    pub(super) fn refuse_egress_disconnect(&self, sandbox: &Sandbox, ep: &Endpoint) -> CnmError {
        CnmError::invalid(
            "network",
            format!(
                "endpoint {} is sandbox {}'s way out, there because its other networks give it no default gateway; it is removed when the sandbox leaves them, gets a network with a gateway, or is removed",
                ep.name, sandbox.name
            ),
        )
    }

    /// Reconciliation's part: settles the way out of every sandbox whose endpoints are all
    /// known (`kept`, this host's endpoints the pass keeps, by sandbox id), as a crash between
    /// a connect or disconnect and its settling left it. Failures are logged; the next pass
    /// tries again.
    pub(super) async fn reconcile_egress_locked(
        &self,
        sandboxes: &[Sandbox],
        kept: &BTreeMap<String, Vec<(Endpoint, Network)>>,
        report: &mut ReconcileReport,
    ) {
        if self.config.gateway_network.is_none() {
            return;
        }
        let forgotten: BTreeSet<&str> = report.forgotten.iter().map(String::as_str).collect();
        let none = Vec::new();
        let mut settled = Vec::new();
        for sandbox in sandboxes.iter().filter(|s| !s.external_key) {
            let eps = kept.get(&sandbox.id).unwrap_or(&none);
            let known: BTreeSet<&str> = eps.iter().map(|(ep, _)| ep.id.as_str()).collect();
            let complete = sandbox
                .endpoints
                .iter()
                .all(|id| known.contains(id.as_str()) || forgotten.contains(id.as_str()));
            if !complete {
                continue;
            }
            match self.egress_settle(eps) {
                Settle::Nothing => {}
                Settle::Attach => {
                    // Its record now, without the endpoints rolled back in this pass.
                    let fresh = match self.sandbox_indexed(&sandbox.id).await {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(sandbox = %sandbox.name, error = %e, "cannot read the sandbox to give it its way out");
                            continue;
                        }
                    };
                    match self.attach_egress_locked(&fresh, eps).await {
                        Ok(()) => settled.push(sandbox.id.clone()),
                        Err(e) => {
                            tracing::warn!(sandbox = %sandbox.name, error = %e, "cannot give the sandbox its way out; the next pass tries again")
                        }
                    }
                }
                Settle::Detach(found) => {
                    self.detach_egress_locked(sandbox, &found.0, &found.1).await;
                    settled.push(sandbox.id.clone());
                }
            }
        }
        report.gateways.extend(settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::StaticRoute;

    fn net(name: &str, driver: &str, internal: bool) -> Network {
        Network {
            id: format!("{name}-id"),
            name: name.into(),
            driver: driver.into(),
            scope: Scope::Local,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            spec: NetworkSpec {
                name: name.into(),
                internal,
                ..Default::default()
            },
            created: String::new(),
            driver_data: BTreeMap::new(),
        }
    }

    fn ep(id: &str, no_gateway: bool, egress: bool) -> Endpoint {
        Endpoint {
            id: id.into(),
            name: id.into(),
            network_id: String::new(),
            sandbox_id: "0123456789abcdef".into(),
            ipv4: None,
            ipv6: None,
            pool_ids: Vec::new(),
            mac: None,
            interface: None,
            aliases: Vec::new(),
            ports: Vec::new(),
            scope: Scope::Local,
            host: String::new(),
            options: BTreeMap::new(),
            routes: Vec::new(),
            disable_gateway: no_gateway,
            dns: Vec::new(),
            egress,
        }
    }

    const GW: &str = "docker_gwbridge";

    #[test]
    fn a_network_without_a_gateway_asks_for_the_way_out() {
        let overlay = (ep("o", true, false), net("o", "overlay", false));
        assert_eq!(settle(GW, std::slice::from_ref(&overlay)), Settle::Attach);
        // Internal: no way out wanted.
        let internal = (ep("i", true, false), net("i", "overlay", true));
        assert_eq!(settle(GW, &[internal]), Settle::Nothing);
        // A bridge network gives a gateway: nothing needed.
        let bridge = (ep("b", false, false), net("b", "bridge", false));
        assert_eq!(
            settle(GW, &[overlay.clone(), bridge.clone()]),
            Settle::Nothing
        );
        // Host and null networks neither give nor want one.
        let none = (ep("n", false, false), net("none", "null", false));
        assert_eq!(settle(GW, &[overlay.clone(), none]), Settle::Attach);
        // A join's own default route counts as a gateway.
        let mut routed = ep("r", true, false);
        routed.routes.push(StaticRoute {
            destination: "0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}")),
            next_hop: None,
        });
        let routed = (routed, net("r", "overlay", false));
        assert_eq!(settle(GW, &[overlay, routed]), Settle::Nothing);
        assert_eq!(endpoint_name("0123456789abcdef"), "gateway_0123456789ab");
    }

    #[test]
    fn the_gateway_endpoint_goes_when_no_longer_needed() {
        let overlay = (ep("o", true, false), net("o", "overlay", false));
        let gateway = (ep("g", false, true), net(GW, "bridge", false));
        // Needed and there: nothing to do.
        assert_eq!(
            settle(GW, &[overlay.clone(), gateway.clone()]),
            Settle::Nothing
        );
        // Alone: removed.
        assert_eq!(
            settle(GW, std::slice::from_ref(&gateway)),
            Settle::Detach(Box::new(gateway.clone()))
        );
        // Another network gives a gateway: removed.
        let bridge = (ep("b", false, false), net("b", "bridge", false));
        assert_eq!(
            settle(GW, &[overlay.clone(), gateway.clone(), bridge]),
            Settle::Detach(Box::new(gateway))
        );
        // A user's own endpoint on the gateway network serves, and is not removed.
        let mine = (ep("m", false, false), net(GW, "bridge", false));
        assert_eq!(settle(GW, &[overlay, mine.clone()]), Settle::Nothing);
        assert_eq!(settle(GW, &[mine]), Settle::Nothing);
    }
}
