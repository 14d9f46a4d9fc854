//! Making the kernel match the store: after a restart or a crash (start-up), and while
//! running (periodic: what was deleted behind Plexus's back is made again).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use plexus_cnm::{Desired, DesiredEndpoint, DriverError, ReconcileMode, Reconciled};
use plexus_sys::rtnl::{Link, Rtnl};

use super::endpoint::Naming;
use super::parent::PARENT_MARKS;
use super::{device_alias, EpState, InSandbox, Kind, MacvlanDriver, State};
use crate::names::{self, Marked};
use crate::sandbox::sandbox_rtnl;
use crate::sys_ctx;

/// What a marked link of these drivers is, read from its mark.
enum Mine {
    /// A parent the driver of this kind made for a network.
    Parent { network: String },
    /// An endpoint's device.
    Device { network: String, endpoint: String },
}

impl MacvlanDriver {
    /// What `link` is to this driver, if its mark says it is this driver's.
    fn mine(&self, link: &Link) -> Option<Mine> {
        let Marked::Other { kind, fields } =
            names::parse_alias(self.marker(), link.alias.as_deref()?)?
        else {
            return None;
        };
        match fields.as_slice() {
            [k, network] if PARENT_MARKS.contains(&kind.as_str()) && k == self.kind.name() => {
                Some(Mine::Parent {
                    network: network.clone(),
                })
            }
            [network, endpoint] if kind == self.kind.name() => Some(Mine::Device {
                network: network.clone(),
                endpoint: endpoint.clone(),
            }),
            _ => None,
        }
    }

    /// Makes the kernel match the store.
    ///
    /// Each of `desired`'s networks is restored in memory, adopting the parent the driver
    /// made for it (or making it again); in [`ReconcileMode::Periodic`] a parent the driver
    /// made that is gone is made again. In both modes every recorded endpoint whose sandbox
    /// still exists gets its device back under its recorded name if it is missing (with its
    /// MAC, addresses and routes), and is adopted if it is there; a device left unmarked under
    /// that name by a daemon that died between making and marking it is made again. Then
    /// marked links the store does not know are deleted: parents in the host namespace, and
    /// devices in the host namespace and in the sandboxes of the store's endpoints (a sandbox
    /// with none of this driver's endpoints keeps what it has until it goes). Other links
    /// are never touched.
    pub(super) async fn reconcile_with(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        let mut st = self.shared.state.lock().await;
        let mut out = Reconciled::default();
        let kind = self.kind;
        let known: BTreeSet<&str> = desired.networks.iter().map(|n| n.id.as_str()).collect();
        let endpoints: BTreeSet<&str> = desired
            .endpoints
            .iter()
            .map(|e| e.info.endpoint_id.as_str())
            .collect();
        // Forget what the store no longer has; the other kind's networks share the memory.
        st.networks
            .retain(|id, n| n.kind != kind || known.contains(id.as_str()));
        let others: BTreeSet<String> = st
            .networks
            .iter()
            .filter(|(_, n)| n.kind != kind)
            .map(|(id, _)| id.clone())
            .collect();
        st.endpoints.retain(|id, e| {
            others.contains(&e.network_id)
                || (endpoints.contains(id.as_str()) && known.contains(e.network_id.as_str()))
        });
        for info in &desired.networks {
            if !st.networks.contains_key(&info.id) {
                match self.create_network_locked(&mut st, info).await {
                    Ok(()) => out.networks.push(info.id.clone()),
                    Err(e) => {
                        tracing::warn!(network = %info.name, driver = kind.name(), error = %e, "cannot restore network")
                    }
                }
            }
        }
        if mode == ReconcileMode::Periodic {
            let nets: Vec<_> = st
                .networks
                .values()
                .filter(|n| n.kind == kind)
                .cloned()
                .collect();
            for net in nets {
                match self.repair_parent(&net).await {
                    Ok(true) => {
                        tracing::warn!(network = %net.info.name, parent = %net.parent.name, "the network's parent was deleted behind Plexus's back; made again");
                        out.repaired.push(format!("parent {}", net.parent.name));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(network = %net.info.name, parent = %net.parent.name, error = %e, "cannot make the parent again")
                    }
                }
            }
        }
        // One connection per sandbox for the whole pass.
        let mut sandboxes: HashMap<String, Rtnl> = HashMap::new();
        for d in &desired.endpoints {
            let id = &d.info.endpoint_id;
            match self.restore_endpoint(&mut st, d, &mut sandboxes).await {
                Ok(Some(name)) => {
                    tracing::warn!(endpoint = %id, sandbox = %d.sandbox_key, interface = %name, "endpoint's device was missing; made again");
                    out.endpoints.push(id.clone());
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!(endpoint = %id, %why, "endpoint not repaired");
                    out.unrepaired.insert(id.clone(), why);
                }
            }
        }
        // While running, a kind with no network has made nothing since start-up's pass (whose
        // scan removed what an earlier run left): no link dump of the host namespace, which
        // holds a veth end per bridge endpoint.
        let idle = mode == ReconcileMode::Periodic && !st.networks.values().any(|n| n.kind == kind);
        if !idle {
            self.remove_stale(&known, &endpoints, &sandboxes, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Adopts an endpoint's device, or makes it again if it is missing; returns the
    /// interface's name if it was made, or why it could not be.
    async fn restore_endpoint(
        &self,
        st: &mut State,
        d: &DesiredEndpoint,
        sandboxes: &mut HashMap<String, Rtnl>,
    ) -> Result<Option<String>, String> {
        let id = &d.info.endpoint_id;
        let net = st
            .networks
            .get(&d.info.network_id)
            .cloned()
            .ok_or("its network is not restored")?;
        let key = &d.sandbox_key;
        if key.is_empty() || !Path::new(key).exists() {
            return Err(format!("its sandbox's namespace {key:?} is gone"));
        }
        let name = d
            .interface
            .as_deref()
            .ok_or("its record names no interface")?;
        let ep = match st.endpoints.get(id) {
            Some(ep) => ep.clone(),
            // A restarted daemon keeps no endpoints in memory: from the record.
            None => EpState {
                network_id: d.info.network_id.clone(),
                ipv4: d.info.ipv4,
                ipv6: d.info.ipv6,
                mac: match self.kind {
                    Kind::Macvlan if !net.passthru() => {
                        Some(names::endpoint_mac(&d.info).map_err(|e| e.to_string())?)
                    }
                    _ => None,
                },
                joined: None,
                gateways: Vec::new(),
            },
        };
        let rs = match sandboxes.get(key) {
            Some(rs) => rs.clone(),
            None => {
                let rs = sandbox_rtnl(key)
                    .await
                    .map_err(|e| format!("sandbox {key}: {e}"))?;
                sandboxes.insert(key.clone(), rs.clone());
                rs
            }
        };
        let alias = device_alias(self.marker(), self.kind, &d.info.network_id, id);
        let (ifindex, gateways, made) = match rs.link(name).await.map_err(|e| e.to_string())? {
            Some(l) if l.alias.as_deref() == Some(alias.as_str()) => {
                if !l.up {
                    rs.set_up(l.index).await.map_err(|e| e.to_string())?;
                }
                (l.index, ep.gateways.clone(), false)
            }
            Some(l) if l.alias.is_some() || l.kind.as_deref() != Some(self.kind.name()) => {
                return Err(format!(
                    "its interface name {name:?} is taken in the sandbox by another link"
                ))
            }
            other => {
                if let Some(l) = other {
                    // Made, not yet marked, when a daemon died.
                    rs.delete_link(l.index).await.map_err(|e| e.to_string())?;
                }
                let (_, ifindex, gateways) = self
                    .plug(&net, &ep, id, &rs, Naming::Exact(name))
                    .await
                    .map_err(|e| e.to_string())?;
                (ifindex, gateways, true)
            }
        };
        let e = st.endpoints.entry(id.clone()).or_insert(ep);
        e.joined = Some(InSandbox {
            key: key.clone(),
            ifname: name.to_string(),
            ifindex,
        });
        e.gateways = gateways;
        Ok(made.then(|| name.to_string()))
    }

    /// Deletes marked parents whose network the store does not know, and marked devices
    /// whose network or endpoint it does not know, in the host namespace and in `sandboxes`
    /// (those of the store's endpoints, as the pass reached them).
    async fn remove_stale(
        &self,
        known: &BTreeSet<&str>,
        endpoints: &BTreeSet<&str>,
        sandboxes: &HashMap<String, Rtnl>,
        out: &mut Reconciled,
    ) -> Result<(), DriverError> {
        let stale = |mine: &Mine| match mine {
            Mine::Parent { network } => !known.contains(network.as_str()),
            Mine::Device { network, endpoint } => {
                !known.contains(network.as_str()) || !endpoints.contains(endpoint.as_str())
            }
        };
        let links = self.rtnl().links().await.map_err(sys_ctx("list links"))?;
        for link in &links {
            if self.mine(link).is_some_and(|m| stale(&m)) {
                match self.delete_link(link.index).await {
                    Ok(()) => out.removed.push(format!("link {}", link.name)),
                    Err(e) => {
                        tracing::warn!(link = %link.name, error = %e, "cannot delete stale link")
                    }
                }
            }
        }
        for (key, rs) in sandboxes {
            self.remove_stale_in(rs, key, &stale, out).await;
        }
        Ok(())
    }

    async fn remove_stale_in(
        &self,
        rs: &Rtnl,
        key: &str,
        stale: &impl Fn(&Mine) -> bool,
        out: &mut Reconciled,
    ) {
        let links = match rs.links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(sandbox = %key, error = %e, "cannot list the sandbox's links");
                return;
            }
        };
        for link in links {
            let device = matches!(self.mine(&link), Some(m @ Mine::Device { .. }) if stale(&m));
            if !device {
                continue;
            }
            match rs.delete_link(link.index).await {
                Ok(()) | Err(plexus_sys::SysError::NotFound { .. }) => {
                    out.removed.push(format!("link {} in {key}", link.name))
                }
                Err(e) => {
                    tracing::warn!(link = %link.name, sandbox = %key, error = %e, "cannot delete stale device")
                }
            }
        }
    }
}
