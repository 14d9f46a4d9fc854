//! An endpoint's veth pair: made at join straight into the sandbox, configured there,
//! retired at leave.

use std::collections::BTreeSet;
use std::net::IpAddr;

use plexus_cnm::{DriverError, InterfaceName, Joined};
use plexus_sys::rtnl::{PortFlags, Route, Rtnl, VethPair, LOOPBACK_IFINDEX};
use plexus_sys::SysError;

use super::{BridgeDriver, EpState, InSandbox, NetState, State};
use crate::names::{self, Marked};
use crate::sandbox::{self, sandbox_rtnl, wait_usable};
use crate::sys_ctx;

/// How a new pair's sandbox end is named.
#[derive(Debug, Clone, Copy)]
pub(super) enum Naming<'a> {
    /// A join's: the controller's guess, or the first free name after it.
    Free(InterfaceName<'a>),
    /// Exactly this name (a repair makes the recorded interface again).
    Exact(&'a str),
}

impl BridgeDriver {
    /// Whether an endpoint's bridge port needs hairpin mode: only with published ports (so a
    /// sandbox reaches its own through a host address) and only where `br_netfilter` may be
    /// on (the driver turns it off in namespaces it owns, and then the path is routed).
    pub(super) fn needs_hairpin(&self, publishes: bool) -> bool {
        publishes && !self.owns_namespace
    }

    /// Makes the veth pair of a joining endpoint in one request: the host end on the bridge
    /// (down, unmarked: [`BridgeDriver::join_locked`] brings it into service last), the other
    /// end straight inside the sandbox as `interface`'s guess or, if the kernel says that is
    /// taken, the first free `<prefix><n>` after it (then the sandbox's links are listed).
    /// Returns the sandbox-side name.
    pub(super) async fn make_pair(
        &self,
        net: &NetState,
        endpoint_id: &str,
        ep: &EpState,
        rs: &Rtnl,
        naming: Naming<'_>,
    ) -> Result<String, DriverError> {
        let host_name = names::host_veth(endpoint_id);
        let (mut n, last) = match naming {
            Naming::Free(i) => (i.first, i.first + 63),
            Naming::Exact(_) => (0, 0),
        };
        let mut taken: Option<BTreeSet<String>> = None;
        let mut cleared_host_end = false;
        loop {
            let name = match naming {
                Naming::Free(i) => format!("{}{n}", i.prefix),
                Naming::Exact(name) => name.to_string(),
            };
            if taken.as_ref().is_some_and(|t| t.contains(&name)) {
                n += 1;
                continue;
            }
            let pair = VethPair {
                name: &host_name,
                master: Some(net.bridge_index),
                mac: Some(net.bridge_mac),
                mtu: net.opts.mtu,
                peer_name: &name,
                peer_ns: rs.netns(),
                peer_mac: Some(ep.mac),
                gso_ipv4_max_size: net.gso_ipv4_max_size,
            };
            match self.rtnl.add_veth_pair(&pair).await {
                Ok(()) => return Ok(name),
                Err(SysError::Exists { .. }) if n <= last => {
                    // Either the sandbox has the name (not through us, or it took it
                    // meanwhile), or a host end of an earlier run of this endpoint is left
                    // over (ours: derived from its id).
                    let left = self
                        .rtnl
                        .link(&host_name)
                        .await
                        .map_err(sys_ctx(format!("veth {host_name}")))?;
                    match left {
                        Some(l) if !cleared_host_end => {
                            cleared_host_end = true;
                            self.delete_link(l.index).await?;
                        }
                        _ if matches!(naming, Naming::Exact(_)) => {
                            return Err(DriverError::Conflict(format!(
                                "interface name {name:?} is taken in the sandbox by another link"
                            )));
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
                    return Err(sys_ctx(format!(
                        "veth {host_name} into the sandbox as {name}"
                    ))(e))
                }
            }
        }
    }

    /// Takes a joined endpoint's veth pair out of service at once and deletes it in the
    /// background. First the host end loses its mark: from then on start-up reconciliation
    /// counts the endpoint as gone (and deletes the link as unmarked), whatever else a crash
    /// cuts short. Then the sandbox side is renamed off its name and brought down, which
    /// drops its routes and frees the name for the next join; deleting the host end later
    /// takes the pair away. Returns the connection to the sandbox, if it could be opened.
    pub(super) async fn retire_veth(&self, endpoint_id: &str, at: &InSandbox) -> Option<Rtnl> {
        let host_name = names::host_veth(endpoint_id);
        if let Err(e) = self.rtnl.set_alias_named(&host_name, "").await {
            tracing::debug!(endpoint = %endpoint_id, error = %e, "host end not unmarked");
        }
        if at.handed_off {
            // Its other end is the runtime's (moved, renamed): deleting the host end takes
            // it along wherever it is.
            self.reaper.delete(host_name, String::new());
            return None;
        }
        let retired = async {
            let rs = sandbox_rtnl(&at.key).await?;
            rs.retire(at.ifindex, &names::peer_veth(endpoint_id))
                .await
                .map(|()| rs)
        }
        .await;
        self.reaper.delete(host_name, String::new());
        match retired {
            Ok(rs) => Some(rs),
            Err(e) => {
                // The sandbox (or its interface) is gone already: the host end goes anyway.
                tracing::debug!(endpoint = %endpoint_id, interface = %at.ifname, error = %e, "sandbox interface not retired");
                None
            }
        }
    }

    /// Deletes an endpoint's veth pair wherever its other end is (links marked as this
    /// endpoint's only; the host end's mark also names the sandbox-side interface).
    pub(super) async fn delete_veth(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        for name in [names::host_veth(endpoint_id), names::peer_veth(endpoint_id)] {
            let link = self
                .rtnl
                .link(&name)
                .await
                .map_err(sys_ctx(format!("link {name}")))?;
            let Some(link) = link else { continue };
            let mark = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a));
            if matches!(mark, Some(Marked::Veth { network, endpoint, .. })
                if network == network_id && endpoint == endpoint_id)
            {
                self.delete_link(link.index).await?;
            }
        }
        Ok(())
    }

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
                "endpoint {endpoint_id} is not known to the bridge driver"
            ))
        })?;
        if ep.network_id != network_id {
            return Err(DriverError::Failed(format!(
                "endpoint {endpoint_id} is on network {}, not {network_id}",
                ep.network_id
            )));
        }
        let net = st.networks.get(network_id).cloned().ok_or_else(|| {
            DriverError::Failed(format!(
                "network {network_id} is not known to the bridge driver"
            ))
        })?;
        if let Some(at) = &ep.joined {
            return Err(DriverError::Conflict(format!(
                "endpoint {endpoint_id} is already in sandbox {}",
                at.key
            )));
        }
        if interface.handoff {
            return self
                .hand_off_locked(st, &net, &ep, endpoint_id, sandbox_key)
                .await;
        }
        let prefix = interface.prefix;
        let bad_prefix = prefix.is_empty() || prefix.len() > plexus_sys::rtnl::MAX_IFNAME - 3;
        if interface.exact.is_none() && bad_prefix {
            return Err(DriverError::Invalid(format!(
                "interface prefix {prefix:?}: must be 1 to 12 bytes"
            )));
        }
        let alias = names::veth_alias(&self.marker, &ep.network_id, endpoint_id);
        // Room for the host end's mark, which adds the interface name.
        if alias.len() + 1 + plexus_sys::rtnl::MAX_IFNAME > names::MAX_ALIAS {
            return Err(DriverError::Invalid(format!(
                "endpoint id {endpoint_id:?} is too long"
            )));
        }
        let rs = sandbox_rtnl(sandbox_key)
            .await
            .map_err(sys_ctx("sandbox"))?;
        // An exact name (CNI's CNI_IFNAME) is that name or a conflict, never another.
        let naming = match interface.exact {
            Some(exact) => Naming::Exact(exact),
            None => Naming::Free(interface),
        };
        let (name, ifindex, gateways) = self.plug(&net, &ep, endpoint_id, &rs, naming).await?;
        if let Some(e) = st.endpoints.get_mut(endpoint_id) {
            e.joined = Some(InSandbox {
                key: sandbox_key.to_string(),
                ifname: name.clone(),
                ifindex,
                handed_off: false,
            });
            e.gateways = gateways.clone();
        }
        tracing::debug!(endpoint = %endpoint_id, sandbox = %sandbox_key, interface = %name, "joined");
        Ok(Joined {
            interface: Some(name),
            gateways,
            ..Joined::default()
        })
    }

    /// A join that hands the interface over ([`InterfaceName::handoff`]): the pair made in
    /// the driver's own namespace, the host end on the bridge and in service, the other end
    /// named [`names::peer_veth`], marked, down and bare for the runtime to move into
    /// `sandbox_key` and configure. The gateways are the runtime's to route through.
    async fn hand_off_locked(
        &self,
        st: &mut State,
        net: &NetState,
        ep: &EpState,
        endpoint_id: &str,
        sandbox_key: &str,
    ) -> Result<Joined, DriverError> {
        let name = names::peer_veth(endpoint_id);
        self.make_pair(net, endpoint_id, ep, &self.rtnl, Naming::Exact(&name))
            .await?;
        let host_name = names::host_veth(endpoint_id);
        let done = async {
            let what = format!("veth {name}");
            let peer = self
                .rtnl
                .require_link(&name)
                .await
                .map_err(sys_ctx(&what))?;
            let alias = names::veth_alias(&self.marker, &ep.network_id, endpoint_id);
            self.rtnl
                .set_alias_named(&name, &alias)
                .await
                .map_err(sys_ctx(&what))?;
            let host_alias =
                names::host_veth_alias(&self.marker, &ep.network_id, endpoint_id, &name);
            self.rtnl
                .activate_port(&host_name, self.port_flags(net, ep), &host_alias)
                .await
                .map_err(sys_ctx(format!("veth {host_name}")))?;
            Ok::<_, DriverError>(peer.index)
        }
        .await;
        let ifindex = match done {
            Ok(ifindex) => ifindex,
            Err(e) => {
                // Deleting the host end takes the other along.
                if let Err(u) = self.delete_veth(&ep.network_id, endpoint_id).await {
                    tracing::warn!(error = %u, "cannot delete veth after failed hand-off");
                }
                if let Ok(Some(l)) = self.rtnl.link(&host_name).await {
                    if let Err(u) = self.delete_link(l.index).await {
                        tracing::warn!(error = %u, "cannot delete veth after failed hand-off");
                    }
                }
                return Err(e);
            }
        };
        let mut gateways = Vec::new();
        if !net.info.internal {
            let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
            let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
            gateways.extend(
                v4.into_iter()
                    .chain(v6)
                    .filter_map(|p| p.gateway.map(|g| g.addr())),
            );
        }
        if let Some(e) = st.endpoints.get_mut(endpoint_id) {
            e.joined = Some(InSandbox {
                key: sandbox_key.to_string(),
                ifname: name.clone(),
                ifindex,
                handed_off: true,
            });
            // Routes are the runtime's: none of them is the driver's to hand over on leave.
            e.gateways.clear();
        }
        tracing::debug!(endpoint = %endpoint_id, sandbox = %sandbox_key, interface = %name, "interface made for the sandbox's runtime");
        Ok(Joined {
            interface: Some(name),
            gateways,
            ..Joined::default()
        })
    }

    /// Makes an endpoint's veth pair into the sandbox `rs` and brings it into service:
    /// what a join does, and what periodic reconciliation does again for a pair deleted
    /// behind Plexus's back. On failure the pair is deleted again. Returns the interface's
    /// name and index in the sandbox and the gateways it routes through.
    pub(super) async fn plug(
        &self,
        net: &NetState,
        ep: &EpState,
        endpoint_id: &str,
        rs: &Rtnl,
        naming: Naming<'_>,
    ) -> Result<(String, u32, Vec<IpAddr>), DriverError> {
        let name = self.make_pair(net, endpoint_id, ep, rs, naming).await?;
        let host_name = names::host_veth(endpoint_id);
        let port = self.port_flags(net, ep);
        let done = async {
            let (ifindex, gateways) = self.configure(net, ep, endpoint_id, rs, &name).await?;
            // Last, the host end: marked and up. Start-up reconciliation takes an endpoint
            // whose host end is not both for one whose join never finished.
            let host_alias =
                names::host_veth_alias(&self.marker, &ep.network_id, endpoint_id, &name);
            self.rtnl
                .activate_port(&host_name, port, &host_alias)
                .await
                .map_err(sys_ctx(format!("veth {host_name}")))?;
            if let Some(IpAddr::V6(v6)) = ep.ipv6.map(|a| a.addr()) {
                // Usable once the pair has its carrier (both ends up).
                wait_usable(rs, ifindex, v6).await;
            }
            Ok::<_, DriverError>((ifindex, gateways))
        }
        .await;
        match done {
            Ok((ifindex, gateways)) => Ok((name, ifindex, gateways)),
            Err(e) => {
                // Ours (just made, named from the endpoint id), marked or not; deleting the
                // host end takes the sandbox side along.
                let gone = match self.rtnl.link(&host_name).await {
                    Ok(Some(l)) => self.delete_link(l.index).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(sys_ctx(format!("veth {host_name}"))(e)),
                };
                if let Err(e) = gone {
                    tracing::warn!(error = %e, "cannot delete veth after failed join");
                }
                Err(e)
            }
        }
    }

    /// The bridge port flags of an endpoint's host end.
    pub(super) fn port_flags(&self, net: &NetState, ep: &EpState) -> PortFlags {
        PortFlags {
            isolated: !net.opts.enable_icc,
            hairpin: self.needs_hairpin(!ep.ports.is_empty()),
        }
    }

    /// Sets up a freshly made pair inside the sandbox: addresses, the interface (marked and
    /// up), loopback and the default route. Returns the interface's index and the gateways it
    /// routed through.
    pub(super) async fn configure(
        &self,
        net: &NetState,
        ep: &EpState,
        endpoint_id: &str,
        rs: &Rtnl,
        name: &str,
    ) -> Result<(u32, Vec<IpAddr>), DriverError> {
        let what = format!("sandbox interface {name}");
        let link = rs.require_link(name).await.map_err(sys_ctx(&what))?;
        sandbox::add_addresses(rs, link.index, name, ep.ipv4, ep.ipv6).await?;
        let alias = names::veth_alias(&self.marker, &ep.network_id, endpoint_id);
        rs.set_up_marked(link.index, &alias, ep.ipv6.is_some())
            .await
            .map_err(sys_ctx(&what))?;
        // Loopback is up in a sandbox once it has an endpoint; a no-op request then.
        rs.set_up(LOOPBACK_IFINDEX)
            .await
            .map_err(sys_ctx("sandbox lo"))?;
        let mut routes = Vec::new();
        if !net.info.internal {
            let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
            let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
            for gw in v4.into_iter().chain(v6).filter_map(|p| p.gateway) {
                let route = Route {
                    destination: None,
                    gateway: Some(gw.addr()),
                    oif: Some(link.index),
                };
                routes.push((route, gw.addr()));
            }
        }
        let gateways = sandbox::add_default_routes(rs, routes).await?;
        Ok((link.index, gateways))
    }

    /// Gives the sandbox at `key` a default route through another joined, non-internal
    /// endpoint of this driver, as Docker moves the gateway when the gateway endpoint leaves.
    /// `sandbox`: the connection to it, if the caller has one.
    pub(super) async fn hand_over_default_route(
        &self,
        st: &mut State,
        key: &str,
        sandbox: Option<Rtnl>,
    ) -> Result<(), DriverError> {
        let next = st.endpoints.iter().find_map(|(id, e)| {
            // The sandbox first: a string compare, where the network lookup hashes (this
            // walks every endpoint of the driver).
            let at = e
                .joined
                .as_ref()
                .filter(|at| at.key == key && !at.handed_off)?;
            let net = st.networks.get(&e.network_id)?;
            (!net.info.internal).then(|| (id.clone(), at.ifindex, net.clone(), e.clone()))
        });
        let Some((id, ifindex, net, ep)) = next else {
            return Ok(());
        };
        let rs = match sandbox {
            Some(rs) => rs,
            None => sandbox_rtnl(key).await.map_err(sys_ctx("sandbox"))?,
        };
        let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
        let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
        let mut added = Vec::new();
        for gw in v4.into_iter().chain(v6).filter_map(|p| p.gateway) {
            let route = Route {
                destination: None,
                gateway: Some(gw.addr()),
                oif: Some(ifindex),
            };
            match rs.add_route(&route).await {
                Ok(()) => added.push(gw.addr()),
                Err(SysError::Exists { .. }) => {}
                Err(e) => return Err(sys_ctx(format!("default route via {gw}"))(e)),
            }
        }
        if let Some(e) = st.endpoints.get_mut(&id) {
            e.gateways.extend(added);
        }
        Ok(())
    }

    pub(super) async fn delete_endpoint_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        self.unpublish_locked(st, endpoint_id)?;
        match st.endpoints.get(endpoint_id).map(|ep| ep.joined.clone()) {
            Some(Some(at)) => {
                self.retire_veth(endpoint_id, &at).await;
            }
            // Never joined, or left already: it has no pair.
            Some(None) => {}
            None => self.delete_veth(network_id, endpoint_id).await?,
        }
        st.endpoints.remove(endpoint_id);
        Ok(())
    }
}
