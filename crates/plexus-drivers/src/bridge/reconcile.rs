//! Making the kernel match the store: after a restart or a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use plexus_cnm::{DriverError, NetworkInfo};
use plexus_sys::nft::{NetworkRules, PortMapping};

use super::{BridgeDriver, NetState};
use crate::names::{self, Marked};
use crate::sys_ctx;

/// What [`BridgeDriver::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Networks of the store whose data plane was (re)made or adopted.
    pub restored: Vec<String>,
    /// Marked links deleted because the store does not know their network or endpoint.
    pub links: Vec<String>,
    /// nftables bridges no known network has.
    pub bridges: Vec<String>,
    /// nftables subnets no known network has.
    pub subnets: Vec<(IpAddr, u8)>,
    /// Published ports whose owner the store does not know.
    pub ports: Vec<PortMapping>,
}

impl BridgeDriver {
    /// The endpoints whose join finished and whose pair still stands: their host end
    /// (named from the endpoint id) is marked and up. `join` marks the host end and brings it
    /// up last and `leave` unmarks it first, so an endpoint the store records but this set lacks was
    /// cut short by a crash (connect or disconnect), or its sandbox's namespace, and with it
    /// the pair, is gone. The daemon forgets such endpoints before [`BridgeDriver::reconcile`].
    ///
    /// Each live endpoint comes with the name its interface has in the sandbox, as its join
    /// marked it (`None` for a pair marked by an older Plexus): a crash between a join that
    /// had to take another name than the record's guess and the record's correction leaves
    /// the record with the guess, and the daemon corrects it from this.
    pub async fn live_endpoints(&self) -> Result<BTreeMap<String, Option<String>>, DriverError> {
        // Background deletions first: a link being deleted is not live.
        self.reaper.settle().await;
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        Ok(links
            .into_iter()
            .filter(|l| l.up)
            .filter_map(
                |l| match names::parse_alias(&self.marker, l.alias.as_deref()?) {
                    Some(Marked::Veth {
                        endpoint,
                        interface,
                        ..
                    }) if l.name == names::host_veth(&endpoint) => Some((endpoint, interface)),
                    _ => None,
                },
            )
            .collect())
    }

    /// The endpoints whose ports are published in the kernel. Start-up reconciliation rolls
    /// back a recorded endpoint with ports that has none published: a crash came between its
    /// join and its external connectivity, or between revoking that and its leave.
    pub fn publishing_endpoints(&self) -> BTreeSet<String> {
        self.fw.published().into_iter().map(|p| p.owner).collect()
    }

    /// Makes the kernel match the store after a restart or a crash.
    ///
    /// `networks` are the store's networks of this driver (their records carry everything the
    /// data plane needs), `endpoints` the ids of every endpoint in the store. Each network's
    /// bridge, addresses and firewall elements are made or adopted (idempotently) and the
    /// driver's memory restored; then marked links whose network or endpoint the store does not
    /// know are deleted, and so are the nftables elements (bridges, subnets, published ports)
    /// that no known network or endpoint has. Other links are never touched, except one with
    /// no alias at all and a name this driver derives from an id (`plx-`, `plxv`, `plxc` and
    /// 11 hex digits): a daemon died between making and marking it. The bridge driver is the
    /// only user of Plexus's nftables network sets in its namespace.
    pub async fn reconcile(
        &self,
        networks: &[NetworkInfo],
        endpoints: &BTreeSet<String>,
    ) -> Result<Reconciled, DriverError> {
        let mut st = self.state.lock().await;
        // Background deletions first, so the scan below sees the kernel as it will be.
        self.reaper.settle().await;
        let mut out = Reconciled::default();
        let known: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
        // Forget what the store no longer has.
        st.networks.retain(|id, _| known.contains(id.as_str()));
        st.endpoints
            .retain(|id, e| endpoints.contains(id) && known.contains(e.network_id.as_str()));
        let auto_gso = if networks.iter().any(|n| !st.networks.contains_key(&n.id)) {
            Some(self.auto_gso_ipv4_max_size().await?)
        } else {
            None
        };
        for info in networks {
            if !st.networks.contains_key(&info.id) {
                match self.create_network_locked(&mut st, info, auto_gso).await {
                    Ok(()) => out.restored.push(info.id.clone()),
                    Err(e) => {
                        tracing::warn!(network = %info.name, error = %e, "cannot restore network")
                    }
                }
            }
        }
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        for link in &links {
            let Some(mark) = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a))
            else {
                // Made, but not yet marked, when a daemon died: no alias at all and a name
                // this driver derives from an id.
                if link.alias.is_none() && names::is_derived_name(&link.name, link.kind.as_deref())
                {
                    match self.delete_link(link.index).await {
                        Ok(()) => out.links.push(link.name.clone()),
                        Err(e) => {
                            tracing::warn!(link = %link.name, error = %e, "cannot delete unmarked link")
                        }
                    }
                }
                continue;
            };
            let stale = match &mark {
                Marked::Bridge { network } => !known.contains(network.as_str()),
                Marked::Veth {
                    network, endpoint, ..
                } => !known.contains(network.as_str()) || !endpoints.contains(endpoint),
            };
            if !stale {
                continue;
            }
            let r = match mark {
                Marked::Bridge { .. } => self.remove_bridge_link(link).await,
                Marked::Veth { .. } => self.delete_link(link.index).await,
            };
            match r {
                Ok(()) => out.links.push(link.name.clone()),
                Err(e) => tracing::warn!(link = %link.name, error = %e, "cannot delete stale link"),
            }
        }
        // Endpoints' memory after a restart: the veth is in the kernel; ports are by owner.
        let rules: Vec<NetworkRules> = st.networks.values().map(NetState::rules).collect();
        let ports: Vec<PortMapping> = self
            .fw
            .state()
            .map_err(sys_ctx("firewall state"))?
            .ports
            .into_iter()
            .filter(|p| endpoints.contains(&p.owner))
            .collect();
        let removed = self
            .fw
            .reconcile(&rules, &ports)
            .map_err(sys_ctx("firewall reconcile"))?;
        out.bridges = removed.bridges;
        out.subnets = removed.subnets;
        out.ports = removed.ports;
        tracing::info!(
            restored = out.restored.len(),
            links = out.links.len(),
            bridges = out.bridges.len(),
            ports = out.ports.len(),
            "bridge driver reconciled with the store"
        );
        Ok(out)
    }
}
