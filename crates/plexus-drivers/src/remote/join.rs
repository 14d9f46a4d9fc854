//! A plugin's interface into a sandbox and back: the plugin makes a link in the host
//! namespace and names it in its Join answer; Plexus moves it into the sandbox under the
//! sandbox's name for it, gives it the endpoint's addresses, the gateway and the static
//! routes, as libnetwork's sandbox code does for remote drivers. At leave it goes back to
//! the host namespace under the plugin's name. The interface carries that name in its alias
//! ([`SRC_ALIAS`]), so a daemon restarted in between still knows where it goes back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use plexus_cnm::{DriverError, InterfaceName, Joined};
use plexus_ipam::plugin::PluginError;
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Route, Rtnl, LOOPBACK_IFINDEX};
use plexus_sys::SysError;
use serde_json::{json, Value};

use super::wire::{self, JoinPlan};
use super::{plugin_error, EpState, RemoteDriver};
use crate::{sandbox, sys_ctx};

/// The alias a plugin's interface carries in a sandbox: this, then the plugin's `SrcName`.
pub(super) const SRC_ALIAS: &str = "plexus-remote:";

/// The plugin's name for a link that carries `alias`, if it is one of ours.
fn src_name_of(alias: Option<&str>) -> Option<&str> {
    alias
        .and_then(|a| a.strip_prefix(SRC_ALIAS))
        .filter(|n| !n.is_empty())
}

/// Where a joined endpoint's interface is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InSandbox {
    /// The sandbox's namespace path.
    pub key: String,
    /// Its name there.
    pub ifname: String,
    /// Its name in the host namespace (the plugin's `SrcName`); empty when a restarted
    /// daemon learned of the endpoint from the store (the interface's alias says it then).
    pub src_name: String,
}

impl RemoteDriver {
    /// The plugin's Join, then the interface into the sandbox. On failure after the plugin's
    /// Join, the interface goes back to the host namespace and the plugin's Leave is called:
    /// nothing stays joined.
    pub(super) async fn join_sandbox(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ep: &EpState,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<(Joined, InSandbox), DriverError> {
        let netns = Netns::open(Path::new(sandbox_key)).map_err(sys_ctx("sandbox"))?;
        let rs = Rtnl::connect(&netns).await.map_err(sys_ctx("sandbox"))?;
        let op = super::OP_JOIN;
        let answer = self
            .client
            .call::<_, wire::JoinReply>(
                op,
                &json!({
                    "NetworkID": network_id,
                    "EndpointID": endpoint_id,
                    "SandboxKey": sandbox_key,
                    "Options": {},
                }),
            )
            .await;
        let reply = match answer {
            Ok(r) => Ok(r),
            // The plugin thinks it joined: it is told to leave below.
            Err(e @ PluginError::Malformed { .. }) => Err(plugin_error(e)),
            // It refused, or never answered: nothing to leave.
            Err(e) => return Err(plugin_error(e)),
        };
        let steps = async {
            let plan = wire::join_plan(self.client.name(), reply?).map_err(plugin_error)?;
            self.plug(&plan, ep, &netns, &rs, interface).await
        };
        match steps.await {
            Ok(done) => Ok(done),
            Err(e) => {
                if let Err(u) = self
                    .call::<Value>(super::OP_LEAVE, &wire::ids(network_id, endpoint_id))
                    .await
                {
                    tracing::warn!(plugin = self.name_str(), error = %u, "cannot leave after a failed join");
                }
                Err(e)
            }
        }
    }

    fn name_str(&self) -> &str {
        self.client.name()
    }

    /// Moves the plugin's link into the sandbox and configures it there; on failure it is
    /// moved back (or, if that fails, deleted).
    async fn plug(
        &self,
        plan: &JoinPlan,
        ep: &EpState,
        netns: &Netns,
        rs: &Rtnl,
        interface: InterfaceName<'_>,
    ) -> Result<(Joined, InSandbox), DriverError> {
        let what = format!(
            "interface {:?} of plugin {:?} (its Join's InterfaceName.SrcName)",
            plan.src_name,
            self.name_str()
        );
        let link = self
            .rtnl
            .link(&plan.src_name)
            .await
            .map_err(sys_ctx(&what))?
            .ok_or_else(|| DriverError::Failed(format!("{what} is not in the host namespace")))?;
        if let Err(e) = self.rtnl.set_down(link.index).await {
            tracing::debug!(error = %e, "cannot set the plugin's link down before the move");
        }
        let name = self.move_in(link.index, netns, rs, plan, interface).await?;
        let at = InSandbox {
            key: netns.path().display().to_string(),
            ifname: name.clone(),
            src_name: plan.src_name.clone(),
        };
        match self.configure(plan, ep, rs, &name).await {
            Ok(gateways) => Ok((
                Joined {
                    interface: Some(name),
                    gateways,
                    static_routes: plan.routes.clone(),
                    disable_gateway: plan.disable_gateway,
                },
                at,
            )),
            Err(e) => {
                self.unplug(&at).await;
                Err(e)
            }
        }
    }

    /// Moves link `index` into the sandbox under the exact name asked for, or the plugin's
    /// prefix and the first free number (from the controller's guess when the prefixes are
    /// the same, else from 0). Returns the name.
    async fn move_in(
        &self,
        index: u32,
        netns: &Netns,
        rs: &Rtnl,
        plan: &JoinPlan,
        interface: InterfaceName<'_>,
    ) -> Result<String, DriverError> {
        if let Some(exact) = interface.exact {
            return match self.rtnl.move_to(index, netns, Some(exact)).await {
                Ok(()) => Ok(exact.to_string()),
                Err(SysError::Exists { .. }) => Err(DriverError::Conflict(format!(
                    "interface name {exact:?} is taken in the sandbox by another link"
                ))),
                Err(e) => Err(sys_ctx(format!(
                    "moving {} into the sandbox",
                    plan.src_name
                ))(e)),
            };
        }
        let prefix = plan.dst_prefix.as_str();
        let first = if prefix == interface.prefix {
            interface.first
        } else {
            0
        };
        let mut taken: Option<BTreeSet<String>> = None;
        for n in first..first + 64 {
            let name = format!("{prefix}{n}");
            if taken.as_ref().is_some_and(|t| t.contains(&name)) {
                continue;
            }
            match self.rtnl.move_to(index, netns, Some(&name)).await {
                Ok(()) => return Ok(name),
                Err(SysError::Exists { .. }) => {
                    if taken.is_none() {
                        let links = rs.links().await.map_err(sys_ctx("sandbox links"))?;
                        taken = Some(links.into_iter().map(|l| l.name).collect());
                    }
                }
                Err(e) => {
                    return Err(sys_ctx(format!(
                        "moving {} into the sandbox as {name}",
                        plan.src_name
                    ))(e))
                }
            }
        }
        Err(DriverError::Conflict(format!(
            "no free interface name {prefix}{first}…{prefix}{} in the sandbox",
            first + 63
        )))
    }

    /// Addresses, MAC, up, loopback, default routes through the plugin's gateways and its
    /// static routes. Returns the gateways whose default route this interface gave.
    async fn configure(
        &self,
        plan: &JoinPlan,
        ep: &EpState,
        rs: &Rtnl,
        name: &str,
    ) -> Result<Vec<IpAddr>, DriverError> {
        let what = format!("sandbox interface {name}");
        let link = rs.require_link(name).await.map_err(sys_ctx(&what))?;
        if let Some(mac) = &ep.mac {
            rs.set_mac(link.index, mac).await.map_err(sys_ctx(&what))?;
        }
        sandbox::add_addresses(rs, link.index, name, ep.ipv4, ep.ipv6).await?;
        let alias = format!("{SRC_ALIAS}{}", plan.src_name);
        rs.set_up_marked(link.index, &alias, true)
            .await
            .map_err(sys_ctx(&what))?;
        rs.set_up(LOOPBACK_IFINDEX)
            .await
            .map_err(sys_ctx("sandbox lo"))?;
        let mut routes = Vec::new();
        if !plan.disable_gateway {
            for gw in plan.gateway.iter().chain(plan.gateway_v6.iter()) {
                let route = Route {
                    destination: None,
                    gateway: Some(*gw),
                    oif: Some(link.index),
                };
                routes.push((route, *gw));
            }
        }
        let gateways = sandbox::add_default_routes(rs, routes).await?;
        for r in &plan.routes {
            let route = Route {
                destination: Some((r.destination.addr(), r.destination.prefix_len())),
                gateway: r.next_hop,
                oif: Some(link.index),
            };
            match rs.add_route(&route).await {
                Ok(()) | Err(SysError::Exists { .. }) => {}
                Err(e) => {
                    return Err(sys_ctx(format!(
                        "static route {} of plugin {:?}",
                        r.destination,
                        self.name_str()
                    ))(e))
                }
            }
        }
        if let Some(IpAddr::V6(v6)) = ep.ipv6.map(|a| a.addr()) {
            crate::sandbox::wait_usable(rs, link.index, v6).await;
        }
        Ok(gateways)
    }

    /// Moves a joined interface back to the host namespace under the plugin's name, where
    /// the plugin's DeleteEndpoint finds it; deletes it when it cannot go back. A sandbox or
    /// an interface already gone is fine (the kernel took it with the namespace).
    pub(super) async fn unplug(&self, at: &InSandbox) {
        let Ok(netns) = Netns::open(Path::new(&at.key)) else {
            return;
        };
        let Ok(rs) = Rtnl::connect(&netns).await else {
            return;
        };
        let Ok(Some(link)) = rs.link(&at.ifname).await else {
            return;
        };
        let src_name = match src_name_of(link.alias.as_deref()) {
            Some(n) => n.to_string(),
            None if !at.src_name.is_empty() => at.src_name.clone(),
            None => {
                // Not ours (another link took the name since), and nothing says whose.
                tracing::warn!(plugin = self.name_str(), interface = %at.ifname, "the interface carries no plugin name; left in place");
                return;
            }
        };
        if let Err(e) = rs.set_down(link.index).await {
            tracing::debug!(error = %e, "cannot set the interface down before it leaves");
        }
        let host = self.rtnl.netns().clone();
        if let Err(e) = rs.move_to(link.index, &host, Some(&src_name)).await {
            tracing::warn!(plugin = self.name_str(), interface = %at.ifname, error = %e, "cannot move the interface back to the host namespace; deleting it");
            if let Err(e) = rs.delete_link(link.index).await {
                tracing::warn!(interface = %at.ifname, error = %e, "cannot delete the interface");
            }
        }
    }
}
