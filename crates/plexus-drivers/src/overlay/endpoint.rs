//! Joining and leaving: an endpoint's veth pair from the network's segment into the sandbox,
//! and its entry in the network's peer table.

use std::collections::BTreeSet;
use std::path::Path;

use plexus_cnm::{DriverError, InterfaceName, Joined};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{PortFlags, Rtnl, VethPair, LOOPBACK_IFINDEX};
use plexus_sys::SysError;

use super::{near_veth, veth_alias, EpState, OverlayDriver, Segment, State, PEER_TABLE};
use crate::sys_ctx;

/// Steps of a join to undo, run in reverse order.
pub(super) enum Undo {
    /// The network's segment was made by this join (and its tables joined).
    Segment,
    /// The endpoint's near veth end in the segment (the far end goes with it).
    Veth(String),
}

impl OverlayDriver {
    pub(super) async fn join_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        let ep = st.endpoints.get(endpoint_id).cloned().ok_or_else(|| {
            DriverError::Failed(format!(
                "endpoint {endpoint_id} is not known to the overlay driver"
            ))
        })?;
        if ep.network_id != network_id {
            return Err(DriverError::Failed(format!(
                "endpoint {endpoint_id} is on network {}, not {network_id}",
                ep.network_id
            )));
        }
        if let Some((key, _)) = &ep.joined {
            return Err(DriverError::Conflict(format!(
                "endpoint {endpoint_id} is already in sandbox {key}"
            )));
        }
        if interface.exact.is_none()
            && (interface.prefix.is_empty()
                || interface.prefix.len() > plexus_sys::rtnl::MAX_IFNAME - 3)
        {
            return Err(DriverError::Invalid(format!(
                "interface prefix {:?}: must be 1 to 12 bytes",
                interface.prefix
            )));
        }
        let mut undo = Vec::new();
        let result = self
            .join_steps(
                st,
                network_id,
                endpoint_id,
                &ep,
                sandbox_key,
                interface,
                &mut undo,
            )
            .await;
        match result {
            Ok(name) => {
                if let Some(e) = st.endpoints.get_mut(endpoint_id) {
                    e.joined = Some((sandbox_key.to_string(), name.clone()));
                }
                tracing::debug!(endpoint = %endpoint_id, sandbox = %sandbox_key, interface = %name, "joined");
                Ok(Joined {
                    interface: Some(name),
                    gateways: Vec::new(),
                    static_routes: Vec::new(),
                    // The network gives no default route (nor does libnetwork's overlay):
                    // the controller gives the sandbox its way out through docker_gwbridge,
                    // unless the network is internal or another one gives a gateway.
                    disable_gateway: true,
                })
            }
            Err(e) => {
                self.undo(st, network_id, undo).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn join_steps(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
        ep: &EpState,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
        undo: &mut Vec<Undo>,
    ) -> Result<String, DriverError> {
        let net = st.networks.get_mut(network_id).ok_or_else(|| {
            DriverError::Failed(format!(
                "network {network_id} is not known to the overlay driver"
            ))
        })?;
        if net.segment.is_none() {
            let segment = self.make_segment(net).await?;
            net.segment = Some(segment);
            undo.push(Undo::Segment);
            self.plane
                .join_network(network_id)
                .map_err(|e| DriverError::Failed(format!("network {}: {e}", net.info.name)))?;
            self.program_all(net).await;
        }
        let Some(segment) = net.segment.as_ref() else {
            return Err(DriverError::Failed(format!(
                "network {network_id}: no segment"
            )));
        };
        let rs = Rtnl::connect(&Netns::open(Path::new(sandbox_key)).map_err(sys_ctx("sandbox"))?)
            .await
            .map_err(sys_ctx("sandbox"))?;
        let name = self
            .plug(segment, network_id, endpoint_id, ep, &rs, interface, undo)
            .await?;
        self.plane
            .put(
                network_id,
                PEER_TABLE,
                endpoint_id,
                ep.record(self.advertise()).encode(),
            )
            .map_err(|e| DriverError::Failed(format!("publish endpoint {endpoint_id}: {e}")))?;
        Ok(name)
    }

    /// Makes the endpoint's veth pair (the far end born in the sandbox), gives the far end
    /// its addresses and brings both ends up. Returns the far end's name.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn plug(
        &self,
        segment: &Segment,
        network_id: &str,
        endpoint_id: &str,
        ep: &EpState,
        rs: &Rtnl,
        interface: InterfaceName<'_>,
        undo: &mut Vec<Undo>,
    ) -> Result<String, DriverError> {
        let near = near_veth(endpoint_id);
        let name = self.make_pair(segment, &near, ep, rs, interface).await?;
        undo.push(Undo::Veth(near.clone()));
        let far = rs
            .require_link(&name)
            .await
            .map_err(sys_ctx(format!("interface {name} in the sandbox")))?;
        for addr in ep.ipv4.iter().chain(ep.ipv6.iter()) {
            rs.add_address(far.index, addr.addr(), addr.prefix_len())
                .await
                .map_err(sys_ctx(format!("address {addr} on {name}")))?;
        }
        let alias = veth_alias(&self.marker, network_id, endpoint_id);
        rs.set_up_marked(far.index, &alias, ep.ipv6.is_some())
            .await
            .map_err(sys_ctx(format!("interface {name} in the sandbox")))?;
        // Loopback is up in a sandbox once it has an endpoint, as the bridge driver has it
        // (the embedded DNS listens on 127.0.0.11); a no-op request when it already is.
        rs.set_up(LOOPBACK_IFINDEX)
            .await
            .map_err(sys_ctx("sandbox lo"))?;
        // The near end is marked with the interface's name last: a marked near end is a
        // finished join.
        segment
            .rtnl
            .activate_port(&near, PortFlags::default(), &format!("{alias}:{name}"))
            .await
            .map_err(sys_ctx(format!("veth {near}")))?;
        Ok(name)
    }

    /// The veth pair in one request: the near end on the segment's bridge, the far end
    /// straight in the sandbox as `interface` says (the guess, or the first free number
    /// after it when the sandbox has that name).
    async fn make_pair(
        &self,
        segment: &Segment,
        near: &str,
        ep: &EpState,
        rs: &Rtnl,
        interface: InterfaceName<'_>,
    ) -> Result<String, DriverError> {
        let mut n = interface.first;
        let mut taken: Option<BTreeSet<String>> = None;
        let mut cleared = false;
        loop {
            let name = match interface.exact {
                Some(exact) => exact.to_string(),
                None => format!("{}{n}", interface.prefix),
            };
            if taken.as_ref().is_some_and(|t| t.contains(&name)) {
                n += 1;
                continue;
            }
            let pair = VethPair {
                name: near,
                master: Some(segment.bridge),
                mac: None,
                mtu: Some(segment.mtu),
                peer_name: &name,
                peer_ns: rs.netns(),
                peer_mac: Some(ep.mac),
                gso_ipv4_max_size: None,
            };
            match segment.rtnl.add_veth_pair(&pair).await {
                Ok(()) => return Ok(name),
                Err(SysError::Exists { .. }) if n <= interface.first + 63 => {
                    // A near end an earlier run left (derived from the id: ours), or the
                    // name is taken in the sandbox.
                    let left = segment
                        .rtnl
                        .link(near)
                        .await
                        .map_err(sys_ctx(format!("veth {near}")))?;
                    match left {
                        Some(l) if !cleared => {
                            cleared = true;
                            segment
                                .rtnl
                                .delete_link(l.index)
                                .await
                                .map_err(sys_ctx(format!("veth {near}")))?;
                        }
                        _ if interface.exact.is_some() => {
                            return Err(DriverError::Conflict(format!(
                                "interface name {name:?} is taken in the sandbox by another link"
                            )))
                        }
                        _ => {
                            if taken.is_none() {
                                let links = rs.links().await.map_err(sys_ctx("sandbox links"))?;
                                taken = Some(links.into_iter().map(|l| l.name).collect());
                            }
                            n += 1;
                        }
                    }
                }
                Err(e) => {
                    return Err(sys_ctx(format!("veth {near} into the sandbox as {name}"))(
                        e,
                    ))
                }
            }
        }
    }

    async fn undo(&self, st: &mut State, network_id: &str, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let Some(net) = st.networks.get_mut(network_id) else {
                return;
            };
            match step {
                Undo::Veth(near) => {
                    if let Some(segment) = &net.segment {
                        delete_named(&segment.rtnl, &near).await;
                    }
                }
                Undo::Segment => {
                    net.peers.clear();
                    if let Some(segment) = net.segment.take() {
                        self.close_segment(network_id, segment).await;
                    }
                }
            }
        }
    }

    pub(super) async fn leave_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let joined = st
            .endpoints
            .get_mut(endpoint_id)
            .and_then(|ep| ep.joined.take());
        let Some(net) = st.networks.get_mut(network_id) else {
            return Ok(());
        };
        if joined.is_none() {
            // Not joined as far as memory goes; a restarted daemon finds the pair by name.
            if let Some(segment) = &net.segment {
                delete_named(&segment.rtnl, &near_veth(endpoint_id)).await;
            }
            return Ok(());
        }
        if let Err(e) = self.plane.delete(network_id, PEER_TABLE, endpoint_id) {
            tracing::warn!(endpoint = %endpoint_id, error = %e, "entry not withdrawn");
        }
        if let Some(segment) = &net.segment {
            delete_named(&segment.rtnl, &near_veth(endpoint_id)).await;
        }
        let others = st
            .endpoints
            .values()
            .any(|e| e.network_id == network_id && e.joined.is_some());
        if !others {
            if let Some(net) = st.networks.get_mut(network_id) {
                net.peers.clear();
                if let Some(segment) = net.segment.take() {
                    self.close_segment(network_id, segment).await;
                }
            }
        }
        tracing::debug!(endpoint = %endpoint_id, "left");
        Ok(())
    }
}

/// Deletes the link `name` if it exists (a veth takes its peer along).
pub(super) async fn delete_named(rtnl: &Rtnl, name: &str) {
    match rtnl.link(name).await {
        Ok(Some(link)) => {
            if let Err(e) = rtnl.delete_link(link.index).await {
                tracing::warn!(link = %name, error = %e, "link not deleted");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(link = %name, error = %e, "link not found"),
    }
}
