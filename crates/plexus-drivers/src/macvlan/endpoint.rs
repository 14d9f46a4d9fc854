//! An endpoint's device: made at join straight inside the sandbox on its network's parent,
//! configured there, deleted at leave.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use plexus_cnm::{DriverError, InterfaceName, Joined, StaticRoute};
use plexus_sys::rtnl::{Route, Rtnl, SubLink, LOOPBACK_IFINDEX};
use plexus_sys::SysError;

use super::{device_alias, EpState, InSandbox, MacvlanDriver, NetState, State};
use crate::sandbox::{self, sandbox_rtnl};
use crate::{names, sys_ctx};

/// How a new device is named in its sandbox.
#[derive(Debug, Clone, Copy)]
pub(super) enum Naming<'a> {
    /// A join's: the controller's guess, or the first free name after it.
    Free(InterfaceName<'a>),
    /// Exactly this name (an exact join, or a repair making the recorded interface again).
    Exact(&'a str),
}

/// The default routes an endpoint of `net` gives its sandbox through the device `oif`, each
/// with what [`EpState::gateways`] records of it: the gateway's address, or the unspecified
/// address for a route out the device with no gateway (ipvlan `l3`, `l3s`). None on an
/// `--internal` network.
fn default_routes(net: &NetState, ep: &EpState, oif: u32) -> Vec<(Route, IpAddr)> {
    if net.info.internal {
        return Vec::new();
    }
    let mut out = Vec::new();
    if net.routes_on_link() {
        let any4 = ep.ipv4.map(|_| IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let any6 = ep.ipv6.map(|_| IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        for any in any4.into_iter().chain(any6) {
            let route = Route {
                destination: Some((any, 0)),
                gateway: None,
                oif: Some(oif),
            };
            out.push((route, any));
        }
        return out;
    }
    let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
    let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
    for gw in v4.into_iter().chain(v6).filter_map(|p| p.gateway) {
        let route = Route {
            destination: None,
            gateway: Some(gw.addr()),
            oif: Some(oif),
        };
        out.push((route, gw.addr()));
    }
    out
}

/// What a join tells the controller of an endpoint's routes: ipvlan `l3`/`l3s` route
/// everything out the device and give no gateway (Docker's `default dev eth0`).
fn routing(net: &NetState, ep: &EpState, gateways: &[IpAddr]) -> Joined {
    let given: Vec<IpAddr> = gateways
        .iter()
        .copied()
        .filter(|g| !g.is_unspecified())
        .collect();
    if net.info.internal || !net.routes_on_link() {
        return Joined {
            gateways: given,
            ..Joined::default()
        };
    }
    let any4 = ep.ipv4.map(|_| IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let any6 = ep.ipv6.map(|_| IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let static_routes = any4
        .into_iter()
        .chain(any6)
        .filter_map(|any| IpNet::new(any, 0).ok())
        .map(|destination| StaticRoute {
            destination,
            next_hop: None,
        })
        .collect();
    Joined {
        gateways: given,
        static_routes,
        disable_gateway: true,
        ..Joined::default()
    }
}

impl MacvlanDriver {
    pub(super) async fn join_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        let kind = self.kind.name();
        let ep = st.endpoints.get(endpoint_id).cloned().ok_or_else(|| {
            DriverError::Failed(format!(
                "endpoint {endpoint_id} is not known to the {kind} driver"
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
                "network {network_id} is not known to the {kind} driver"
            ))
        })?;
        if let Some(at) = &ep.joined {
            return Err(DriverError::Conflict(format!(
                "endpoint {endpoint_id} is already in sandbox {}",
                at.key
            )));
        }
        if net.passthru() {
            let holder = st.endpoints.iter().find(|(id, e)| {
                e.network_id == network_id && id.as_str() != endpoint_id && e.joined.is_some()
            });
            if let Some((holder, _)) = holder {
                return Err(DriverError::Conflict(format!(
                    "macvlan_mode=passthru: parent {} of network {:?} is taken by endpoint {holder}; \
                     a passthru network has one endpoint at a time",
                    net.parent.name, net.info.name
                )));
            }
        }
        let prefix = interface.prefix;
        let bad_prefix = prefix.is_empty() || prefix.len() > plexus_sys::rtnl::MAX_IFNAME - 3;
        if interface.exact.is_none() && bad_prefix {
            return Err(DriverError::Invalid(format!(
                "interface prefix {prefix:?}: must be 1 to 12 bytes"
            )));
        }
        if device_alias(self.marker(), self.kind, network_id, endpoint_id).len() > names::MAX_ALIAS
        {
            return Err(DriverError::Invalid(format!(
                "endpoint id {endpoint_id:?} is too long"
            )));
        }
        let rs = sandbox_rtnl(sandbox_key)
            .await
            .map_err(sys_ctx("sandbox"))?;
        let naming = match interface.exact {
            Some(exact) => Naming::Exact(exact),
            None => Naming::Free(interface),
        };
        let (name, ifindex, gateways) = self.plug(&net, &ep, endpoint_id, &rs, naming).await?;
        let mut joined = routing(&net, &ep, &gateways);
        joined.interface = Some(name.clone());
        if let Some(e) = st.endpoints.get_mut(endpoint_id) {
            e.joined = Some(InSandbox {
                key: sandbox_key.to_string(),
                ifname: name.clone(),
                ifindex,
            });
            e.gateways = gateways;
        }
        tracing::debug!(endpoint = %endpoint_id, sandbox = %sandbox_key, interface = %name, driver = kind, "joined");
        Ok(joined)
    }

    /// Makes an endpoint's device in the sandbox `rs` on its network's parent and brings it
    /// into service: what a join does, and what reconciliation does again for a device that
    /// is gone. On failure the device is deleted again. Returns its name and index in the
    /// sandbox and the default routes it gave ([`EpState::gateways`]).
    pub(super) async fn plug(
        &self,
        net: &NetState,
        ep: &EpState,
        endpoint_id: &str,
        rs: &Rtnl,
        naming: Naming<'_>,
    ) -> Result<(String, u32, Vec<IpAddr>), DriverError> {
        let what = format!("parent {} of network {:?}", net.parent.name, net.info.name);
        let parent = self
            .rtnl()
            .link(&net.parent.name)
            .await
            .map_err(sys_ctx(&what))?
            .ok_or_else(|| {
                DriverError::Failed(format!(
                    "{what} is gone from the host namespace (deleted behind Plexus's back?)"
                ))
            })?;
        let name = self.make_device(net, ep, parent.index, rs, naming).await?;
        match self.configure(net, ep, endpoint_id, rs, &name).await {
            Ok((ifindex, gateways)) => Ok((name, ifindex, gateways)),
            Err(e) => {
                // Ours: just made under this name.
                if let Ok(Some(l)) = rs.link(&name).await {
                    if let Err(u) = rs.delete_link(l.index).await {
                        tracing::warn!(error = %u, "cannot delete the device after a failed join");
                    }
                }
                Err(e)
            }
        }
    }

    /// Makes the device straight inside the sandbox (down, unmarked), named as `naming`
    /// says: the guess, or if the kernel says it is taken there, the first free name after
    /// it (then the sandbox's links are listed).
    async fn make_device(
        &self,
        net: &NetState,
        ep: &EpState,
        parent: u32,
        rs: &Rtnl,
        naming: Naming<'_>,
    ) -> Result<String, DriverError> {
        let (mut n, last) = match naming {
            Naming::Free(i) => (i.first, i.first + 63),
            Naming::Exact(_) => (0, 0),
        };
        let mut taken: Option<BTreeSet<String>> = None;
        let mut settled = false;
        loop {
            let name = match naming {
                Naming::Free(i) => format!("{}{n}", i.prefix),
                Naming::Exact(name) => name.to_string(),
            };
            if taken.as_ref().is_some_and(|t| t.contains(&name)) {
                n += 1;
                continue;
            }
            let spec = SubLink {
                name: &name,
                parent,
                kind: net.opts.kind,
                mac: ep.mac,
                mtu: None,
                born_in: Some(rs.netns()),
            };
            match self.rtnl().add_sublink(&spec).await {
                Ok(()) => return Ok(name),
                // Perhaps a device retired a moment ago, running until the reaper deletes
                // it; then the name is free again.
                Err(SysError::Exists { .. }) if !settled && !self.shared.reaper.idle() => {
                    self.shared.reaper.settle().await;
                    settled = true;
                }
                Err(SysError::Exists { .. }) if matches!(naming, Naming::Exact(_)) => {
                    return Err(DriverError::Conflict(format!(
                        "interface name {name:?} is taken in the sandbox by another link"
                    )));
                }
                Err(SysError::Exists { .. }) if n < last => {
                    if taken.is_none() {
                        let links = rs.links().await.map_err(sys_ctx("sandbox links"))?;
                        taken = Some(links.into_iter().map(|l| l.name).collect());
                    }
                    n += 1;
                }
                Err(e) => {
                    return Err(sys_ctx(format!(
                        "{} device {name} on parent {} into the sandbox",
                        self.kind.name(),
                        net.parent.name
                    ))(e))
                }
            }
        }
    }

    /// Sets up a freshly made device inside the sandbox: addresses, its mark, up, loopback
    /// and the default routes. Returns its index and the default routes it gave.
    async fn configure(
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
        let alias = device_alias(self.marker(), self.kind, &ep.network_id, endpoint_id);
        let mut up = rs
            .set_up_marked(link.index, &alias, ep.ipv6.is_some())
            .await;
        if up.as_ref().err().and_then(SysError::errno) == Some(nix::libc::EADDRINUSE) {
            // A device retired a moment ago with this MAC still runs on the parent until the
            // reaper deletes it.
            self.shared.reaper.settle().await;
            up = rs
                .set_up_marked(link.index, &alias, ep.ipv6.is_some())
                .await;
        }
        up.map_err(sys_ctx(&what))?;
        rs.set_up(LOOPBACK_IFINDEX)
            .await
            .map_err(sys_ctx("sandbox lo"))?;
        let gateways = sandbox::add_default_routes(rs, default_routes(net, ep, link.index)).await?;
        if let Some(IpAddr::V6(v6)) = ep.ipv6.map(|a| a.addr()) {
            sandbox::wait_usable(rs, link.index, v6).await;
        }
        Ok((link.index, gateways))
    }

    /// Takes a joined endpoint's device out of its sandbox (a sandbox or device already gone
    /// is fine) and, if it gave the sandbox its default route, hands that over to another
    /// joined endpoint of these drivers in the sandbox. Idempotent. A macvlan device is
    /// retired at once ([`retire`]) and deleted in the background: the kernel's deletion
    /// waits for RCU grace periods, most of a disconnect. Passthru and ipvlan devices go at
    /// once: a passthru parent takes one device, and an ipvlan's addresses stay claimed on
    /// the parent while it exists.
    pub(super) async fn unplug_locked(&self, st: &mut State, endpoint_id: &str) {
        let Some(ep) = st.endpoints.get_mut(endpoint_id) else {
            return;
        };
        let (joined, had_default, ipv4) = (ep.joined.take(), !ep.gateways.is_empty(), ep.ipv4);
        ep.gateways.clear();
        let alias = device_alias(self.marker(), self.kind, &ep.network_id, endpoint_id);
        let Some(at) = joined else {
            return;
        };
        let in_background = self.kind == super::Kind::Macvlan
            && st
                .networks
                .get(&ep.network_id)
                .is_some_and(|n| !n.passthru());
        let rs = match sandbox_rtnl(&at.key).await {
            Ok(rs) => rs,
            Err(e) => {
                // The sandbox's namespace is gone, and its devices with it.
                tracing::debug!(endpoint = %endpoint_id, sandbox = %at.key, error = %e, "sandbox gone");
                return;
            }
        };
        match rs.link(&at.ifname).await {
            Ok(Some(l)) if l.alias.as_deref() == Some(alias.as_str()) => {
                if in_background && retire(&rs, l.index, &at.ifname, ipv4).await {
                    self.shared.reaper.delete_in(
                        rs.netns().clone(),
                        at.ifname.clone(),
                        alias.clone(),
                    );
                } else if let Err(e) = rs.delete_link(l.index).await {
                    tracing::warn!(endpoint = %endpoint_id, interface = %at.ifname, error = %e, "cannot delete the device");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(endpoint = %endpoint_id, interface = %at.ifname, error = %e, "cannot look up the device")
            }
        }
        if had_default {
            self.hand_over_default_route(st, &at.key, &rs).await;
        }
    }

    /// Gives the sandbox at `key` its default route through another joined endpoint of these
    /// drivers there (on a network that is not internal), as Docker moves the gateway when the
    /// gateway endpoint leaves.
    async fn hand_over_default_route(&self, st: &mut State, key: &str, rs: &Rtnl) {
        let next = st.endpoints.iter().find_map(|(id, e)| {
            let at = e.joined.as_ref().filter(|at| at.key == key)?;
            let net = st.networks.get(&e.network_id)?;
            (!net.info.internal).then(|| (id.clone(), at.ifindex, net.clone(), e.clone()))
        });
        let Some((id, ifindex, net, ep)) = next else {
            return;
        };
        let mut added = Vec::new();
        for (route, given) in default_routes(&net, &ep, ifindex) {
            match rs.add_route(&route).await {
                Ok(()) => added.push(given),
                Err(SysError::Exists { .. }) => {}
                Err(e) => {
                    tracing::warn!(sandbox = %key, error = %e, "no default route handed over")
                }
            }
        }
        if let Some(e) = st.endpoints.get_mut(&id) {
            e.gateways.extend(added);
        }
    }
}

/// Takes the joined macvlan device `index` (named `name`, IPv4 address `ipv4`) out of
/// service while it runs, for the reaper to delete; `false` if it could not (delete it now).
///
/// Neither down nor renamed: each waits for an RCU grace period, as long as the rest of a
/// disconnect. With its IPv4 address off (the kernel then drops its IPv4 routes) and IPv6
/// turned off on it (addresses, link-local too, and routes), it carries nothing to or from
/// the sandbox. Until the reaper deleted it, it keeps its name, and a join wanting that
/// name waits for the reaper ([`MacvlanDriver::make_device`]); it keeps its MAC on the
/// parent, and a join wanting that MAC does the same ([`MacvlanDriver::configure`]).
async fn retire(rs: &Rtnl, index: u32, name: &str, ipv4: Option<IpNet>) -> bool {
    if let Some(v4) = ipv4 {
        match rs.delete_address(index, v4.addr(), v4.prefix_len()).await {
            Ok(()) | Err(SysError::NotFound { .. }) => {}
            Err(e) => {
                tracing::debug!(link = name, error = %e, "cannot take the IPv4 address off");
                return false;
            }
        }
    }
    if let Err(e) = rs.disable_ipv6(name).await {
        tracing::debug!(link = name, error = %e, "cannot turn IPv6 off");
        return false;
    }
    true
}
