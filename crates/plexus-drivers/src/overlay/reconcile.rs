//! Reconciliation: the kernel made to match the store (networks and this host's endpoints),
//! after a restart and while running. What the store says exists is made again (a segment,
//! an endpoint's veth pair, its entry in the peer table); what carries the driver's mark, or
//! lies in its run directory, and the store does not know, goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use plexus_cnm::{
    Desired, DesiredEndpoint, DriverError, InterfaceName, LiveEndpoint, ReconcileMode, Reconciled,
};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

use super::endpoint::delete_named;
use super::{
    mac_of, near_veth, netns_name, vni_of, EpState, NetState, OverlayDriver, State, PEER_TABLE,
};

impl OverlayDriver {
    /// The namespaces pinned in the run directory, by name, with a connection to each.
    async fn pinned(&self) -> Vec<(String, Rtnl)> {
        let Ok(dir) = std::fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ns) = Netns::open(&entry.path()) else {
                continue;
            };
            match Rtnl::connect(&ns).await {
                Ok(rtnl) => out.push((name, rtnl)),
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "overlay namespace not read")
                }
            }
        }
        out
    }

    /// Joined endpoints as the kernel shows them: near ends marked with their interface's
    /// name (join marks them last) and up, in every segment.
    pub(super) async fn live(&self) -> Result<BTreeMap<String, LiveEndpoint>, DriverError> {
        let prefix = format!("{}:ovveth:", self.marker);
        let mut out = BTreeMap::new();
        for (_, rtnl) in self.pinned().await {
            let links = rtnl
                .links()
                .await
                .map_err(crate::sys_ctx("overlay namespace links"))?;
            for link in links.iter().filter(|l| l.up) {
                let Some(rest) = link.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
                    continue;
                };
                let fields: Vec<&str> = rest.split(':').collect();
                if let [_network, endpoint, interface] = fields[..] {
                    if link.name == near_veth(endpoint) {
                        out.insert(
                            endpoint.to_string(),
                            LiveEndpoint {
                                interface: Some(interface.to_string()),
                                published: false,
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn reconcile_with(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        let mut st = self.state.lock().await;
        let mut out = Reconciled::default();
        self.restore_networks(&mut st, desired, &mut out).await;
        let wanted: BTreeSet<&str> = desired
            .endpoints
            .iter()
            .map(|d| d.info.endpoint_id.as_str())
            .collect();
        // Endpoints the store no longer has on this host.
        let gone: Vec<(String, String)> = st
            .endpoints
            .iter()
            .filter(|(id, _)| !wanted.contains(id.as_str()))
            .map(|(id, e)| (id.clone(), e.network_id.clone()))
            .collect();
        for (id, network) in gone {
            self.leave_locked(&mut st, &network, &id).await?;
            st.endpoints.remove(&id);
        }
        let mut by_network: BTreeMap<&str, Vec<&DesiredEndpoint>> = BTreeMap::new();
        for d in &desired.endpoints {
            if st.networks.contains_key(&d.info.network_id) {
                by_network.entry(&d.info.network_id).or_default().push(d);
            }
        }
        for (network_id, eps) in &by_network {
            for d in eps {
                if !st.endpoints.contains_key(&d.info.endpoint_id) {
                    let mac = mac_of(&d.info)?;
                    st.endpoints.insert(
                        d.info.endpoint_id.clone(),
                        EpState {
                            network_id: network_id.to_string(),
                            ipv4: d.info.ipv4,
                            ipv6: d.info.ipv6,
                            mac,
                            joined: None,
                        },
                    );
                }
            }
            self.reconcile_network(&mut st, network_id, eps, mode, &mut out)
                .await;
        }
        // Segments with nothing joined here, and namespaces no known network owns.
        let mut keep = BTreeSet::new();
        for (id, net) in st.networks.iter_mut() {
            let joined = by_network.contains_key(id.as_str());
            if joined && net.segment.is_some() {
                keep.insert(netns_name(id));
            } else if let Some(segment) = net.segment.take() {
                net.peers.clear();
                self.close_segment(id, segment).await;
            }
        }
        for (name, rtnl) in self.pinned().await {
            drop(rtnl);
            if !keep.contains(&name) {
                match self.remove_pinned(&name).await {
                    Ok(()) => out.removed.push(format!("overlay namespace {name}")),
                    Err(e) => tracing::warn!(namespace = %name, error = %e, "not removed"),
                }
            }
        }
        Ok(out)
    }

    /// Knows every desired network (its VXLAN id from its options) and forgets the others.
    async fn restore_networks(&self, st: &mut State, desired: &Desired, out: &mut Reconciled) {
        let ids: BTreeSet<&str> = desired.networks.iter().map(|n| n.id.as_str()).collect();
        let stale: Vec<String> = st
            .networks
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect();
        for id in stale {
            if let Some(mut net) = st.networks.remove(&id) {
                if let Some(segment) = net.segment.take() {
                    self.close_segment(&id, segment).await;
                }
            }
        }
        for info in &desired.networks {
            if st.networks.contains_key(&info.id) {
                continue;
            }
            match vni_of(info) {
                Ok((vni, mtu)) => {
                    st.networks.insert(
                        info.id.clone(),
                        NetState {
                            info: info.clone(),
                            vni,
                            mtu,
                            segment: None,
                            peers: BTreeMap::new(),
                        },
                    );
                    out.networks.push(info.id.clone());
                }
                Err(e) => {
                    tracing::warn!(network = %info.name, error = %e, "overlay network not restored")
                }
            }
        }
    }

    /// One network with endpoints on this host: its segment (adopted, or made again), each
    /// endpoint's pair (adopted, or made again while its sandbox exists) and entry, and no
    /// marked pair of an endpoint the store does not know.
    async fn reconcile_network(
        &self,
        st: &mut State,
        network_id: &str,
        eps: &[&DesiredEndpoint],
        mode: ReconcileMode,
        out: &mut Reconciled,
    ) {
        let Some(net) = st.networks.get_mut(network_id) else {
            return;
        };
        if let Some(segment) = &net.segment {
            if !self.segment_intact(segment).await {
                tracing::warn!(network = %net.info.name, "segment damaged; made again");
                net.peers.clear();
                if let Some(segment) = net.segment.take() {
                    self.close_segment(network_id, segment).await;
                }
                for e in st.endpoints.values_mut() {
                    if e.network_id == network_id {
                        e.joined = None;
                    }
                }
            }
        }
        let Some(net) = st.networks.get_mut(network_id) else {
            return;
        };
        if net.segment.is_none() {
            let segment = match self.adopt_segment(net).await {
                Some(s) => s,
                None if eps.iter().any(|d| Path::new(&d.sandbox_key).exists()) => {
                    match self.make_segment(net).await {
                        Ok(s) => {
                            out.repaired
                                .push(format!("overlay segment of network {}", net.info.name));
                            s
                        }
                        Err(e) => {
                            for d in eps {
                                out.unrepaired
                                    .insert(d.info.endpoint_id.clone(), e.to_string());
                            }
                            return;
                        }
                    }
                }
                None => return,
            };
            net.segment = Some(segment);
            if let Err(e) = self.plane.join_network(network_id) {
                tracing::warn!(network = %net.info.name, error = %e, "tables not joined");
            }
            self.program_all(net).await;
        }
        // The kernel's tables against the peers (a segment adopted from an earlier run holds
        // whatever that run programmed).
        if let Some(net) = st.networks.get(network_id) {
            out.repaired.extend(self.sweep(net).await);
        }
        let live = self.live().await.unwrap_or_default();
        let own = self.advertise();
        let published: BTreeMap<String, Vec<u8>> = self
            .plane
            .entries(network_id, PEER_TABLE)
            .into_iter()
            .filter(|(_, _, owner)| *owner == own)
            .map(|(key, value, _)| (key, value))
            .collect();
        for d in eps {
            let id = &d.info.endpoint_id;
            let Some(ep) = st.endpoints.get(id).cloned() else {
                continue;
            };
            let interface = match live.get(id).and_then(|l| l.interface.clone()) {
                Some(name) => name,
                None if !Path::new(&d.sandbox_key).exists() => {
                    out.unrepaired
                        .insert(id.clone(), format!("sandbox {} is gone", d.sandbox_key));
                    continue;
                }
                None => {
                    let name = d.interface.clone().unwrap_or_else(|| "eth0".to_string());
                    match self
                        .replug(st, network_id, id, &ep, &d.sandbox_key, &name)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(endpoint = %id, ?mode, "overlay endpoint made again");
                            out.endpoints.push(id.clone());
                        }
                        Err(e) => {
                            out.unrepaired.insert(id.clone(), e.to_string());
                            continue;
                        }
                    }
                    name
                }
            };
            if let Some(e) = st.endpoints.get_mut(id) {
                e.joined = Some((d.sandbox_key.clone(), interface));
            }
            // Published again only if the table lacks it: a periodic pass sends nothing
            // when nothing changed.
            let record = ep.record(own).encode();
            if published.get(id) != Some(&record) {
                if let Err(e) = self.plane.put(network_id, PEER_TABLE, id, record) {
                    tracing::warn!(endpoint = %id, error = %e, "entry not published");
                }
            }
        }
        // Marked pairs of endpoints the store does not have here.
        let known: BTreeSet<String> = eps.iter().map(|d| near_veth(&d.info.endpoint_id)).collect();
        let prefix = format!("{}:ovveth:", self.marker);
        if let Some(segment) = st.networks.get(network_id).and_then(|n| n.segment.as_ref()) {
            let links = segment.rtnl.links().await.unwrap_or_default();
            for link in links {
                let ours = link
                    .alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&prefix));
                if ours && !known.contains(&link.name) {
                    delete_named(&segment.rtnl, &link.name).await;
                    out.removed.push(format!("veth {}", link.name));
                }
            }
        }
    }

    /// Makes an endpoint's pair again, as its record names its interface.
    async fn replug(
        &self,
        st: &State,
        network_id: &str,
        endpoint_id: &str,
        ep: &EpState,
        sandbox_key: &str,
        interface: &str,
    ) -> Result<(), DriverError> {
        let Some(segment) = st.networks.get(network_id).and_then(|n| n.segment.as_ref()) else {
            return Err(DriverError::Failed(format!(
                "network {network_id}: no segment"
            )));
        };
        let rs =
            Rtnl::connect(&Netns::open(Path::new(sandbox_key)).map_err(crate::sys_ctx("sandbox"))?)
                .await
                .map_err(crate::sys_ctx("sandbox"))?;
        let mut undo = Vec::new();
        let r = self
            .plug(
                segment,
                network_id,
                endpoint_id,
                ep,
                &rs,
                InterfaceName::exact(interface),
                &mut undo,
            )
            .await;
        if r.is_err() {
            delete_named(&segment.rtnl, &near_veth(endpoint_id)).await;
        }
        r.map(|_| ())
    }
}
