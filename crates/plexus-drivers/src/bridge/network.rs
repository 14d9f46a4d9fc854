//! A bridge network's kernel objects: the bridge, its addresses, its firewall elements.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cnm::{DriverError, NetworkInfo};
use plexus_sys::rtnl::{BridgeSpec, Link};
use plexus_sys::SysError;

use super::{BridgeDriver, NetState, State, Undo};
use crate::firewall::NetworkRules;
use crate::gso;
use crate::names::{self, Marked};
use crate::options::BridgeOptions;
use crate::sys_ctx;

pub(super) fn subnets(info: &NetworkInfo) -> Vec<(IpAddr, u8)> {
    let v6 = if info.enable_ipv6 {
        &info.ipv6[..]
    } else {
        &[]
    };
    info.ipv4
        .iter()
        .chain(v6)
        .map(|p| (p.subnet.network(), p.subnet.prefix_len()))
        .collect()
}

/// The gateway addresses a network's bridge holds: IPv4 unless `inhibit_ipv4`, IPv6 when
/// the network has it.
fn gateways<'a>(info: &'a NetworkInfo, opts: &BridgeOptions) -> impl Iterator<Item = IpNet> + 'a {
    let (v4, v6) = (
        !opts.inhibit_ipv4,
        info.enable_ipv6 && !info.ipv6.is_empty(),
    );
    let v4 = info.ipv4.iter().filter(move |_| v4);
    let v6 = info.ipv6.iter().filter(move |_| v6);
    v4.chain(v6).filter_map(|p| p.gateway)
}

impl BridgeDriver {
    /// Makes (or adopts) a network's kernel objects and remembers it. `auto_gso` is
    /// `plexus.bridge.gso_ipv4_max_size=auto` on this host when the caller already knows it (one
    /// link dump for all the networks a restart restores), `None` to look it up if needed.
    pub(super) async fn create_network_locked(
        &self,
        st: &mut State,
        info: &NetworkInfo,
        auto_gso: Option<Option<u32>>,
    ) -> Result<(), DriverError> {
        if st.networks.contains_key(&info.id) {
            return Ok(());
        }
        let opts = BridgeOptions::parse(&info.options)?;
        let bridge = opts
            .bridge_name
            .clone()
            .unwrap_or_else(|| names::default_bridge(&info.id));
        let alias = names::bridge_alias(&self.marker, &info.id);
        if alias.len() > names::MAX_ALIAS {
            return Err(DriverError::Invalid(format!(
                "network id {:?} is too long",
                info.id
            )));
        }
        let ipv6 = info.enable_ipv6 && !info.ipv6.is_empty();
        self.ensure_host(ipv6)?;
        let gso_ipv4_max_size = match (opts.gso_ipv4_max_size, auto_gso) {
            (Some(size), _) => Some(size),
            (None, Some(auto)) => auto,
            (None, None) => self.auto_gso_ipv4_max_size().await?,
        };
        let mut undo = Vec::new();
        let r = self
            .make_network(info, &opts, &bridge, &alias, ipv6, &mut undo)
            .await;
        match r {
            Ok((index, bridge_mac, foreign)) => {
                st.networks.insert(
                    info.id.clone(),
                    NetState {
                        info: info.clone(),
                        opts,
                        bridge: bridge.clone(),
                        bridge_index: index,
                        bridge_mac,
                        gso_ipv4_max_size,
                        foreign,
                    },
                );
                tracing::info!(network = %info.name, %bridge, ?gso_ipv4_max_size, "bridge network ready");
                Ok(())
            }
            Err(e) => {
                self.undo(undo).await;
                Err(e)
            }
        }
    }

    /// `plexus.bridge.gso_ipv4_max_size=auto` on this host: see [`gso`](crate::gso).
    pub(super) async fn auto_gso_ipv4_max_size(&self) -> Result<Option<u32>, DriverError> {
        let links = self.rtnl.links().await.map_err(sys_ctx("host links"))?;
        Ok(gso::auto_ipv4_max_size(&links, |l| self.made_by_us(l)))
    }

    /// Whether this driver made `link`: marked by it, or (made but not yet marked when a
    /// daemon died, or retired and unmarked) unmarked with a name it derives.
    pub(super) fn made_by_us(&self, link: &Link) -> bool {
        match link.alias.as_deref() {
            Some(alias) => names::parse_alias(&self.marker, alias).is_some(),
            None => names::is_derived_name(&link.name, link.kind.as_deref()),
        }
    }

    pub(super) async fn make_network(
        &self,
        info: &NetworkInfo,
        opts: &BridgeOptions,
        bridge: &str,
        alias: &str,
        ipv6: bool,
        undo: &mut Vec<Undo>,
    ) -> Result<(u32, [u8; 6], bool), DriverError> {
        let what = format!("bridge {bridge}");
        let mut foreign = false;
        let br = match self.rtnl.link(bridge).await.map_err(sys_ctx(&what))? {
            // Ours already (a restart, or reconciliation): adopt it.
            Some(l) if l.alias.as_deref() == Some(alias) => l,
            // The user's own bridge, named on purpose: used as Docker uses it.
            Some(l) if opts.bridge_name.is_some() && self.is_users_bridge(&l) => {
                tracing::info!(%bridge, "using an existing bridge that Plexus did not make; it stays when the network goes");
                foreign = true;
                l
            }
            Some(l) => {
                return Err(DriverError::Conflict(format!(
                    "bridge name {bridge:?} is already used by another interface{}",
                    l.alias
                        .as_deref()
                        .and_then(|a| names::parse_alias(&self.marker, a))
                        .map(|m| match m {
                            Marked::Bridge { network } => format!(" (network {network})"),
                            Marked::Veth { endpoint, .. } => format!(" (endpoint {endpoint})"),
                            Marked::Other { kind, .. } => format!(" (a {kind} of Plexus)"),
                        })
                        .unwrap_or_default()
                )))
            }
            None => {
                let l = self
                    .rtnl
                    .add_bridge(
                        &BridgeSpec {
                            name: bridge,
                            mtu: opts.mtu,
                            // Fixed, so the gateway's MAC never changes under the sandboxes.
                            mac: Some(names::bridge_mac(&info.id)),
                            mcast_snooping: opts.mcast_snooping,
                        },
                        alias,
                    )
                    .await
                    .map_err(sys_ctx(&what))?;
                undo.push(Undo::DeleteLink(l.index));
                l
            }
        };
        if ipv6 {
            // The gateway is usable at once (no duplicate address detection).
            self.sysctl(&format!("net.ipv6.conf.{bridge}.accept_dad"), "0")?;
        }
        for gw in gateways(info, opts) {
            match self
                .rtnl
                .add_address(br.index, gw.addr(), gw.prefix_len())
                .await
            {
                Ok(()) | Err(SysError::Exists { .. }) => {}
                Err(e) => return Err(sys_ctx(format!("gateway {gw} on {bridge}"))(e)),
            }
        }
        self.sysctl(&format!("net.ipv4.conf.{bridge}.route_localnet"), "1")?;
        self.rtnl.set_up(br.index).await.map_err(sys_ctx(&what))?;
        let rules = NetworkRules {
            bridge: bridge.to_string(),
            subnets: subnets(info),
            masquerade: opts.enable_ip_masquerade,
            internal: info.internal,
        };
        self.fw
            .setup_network(&rules)
            .map_err(sys_ctx(format!("firewall of {bridge}")))?;
        undo.push(Undo::Teardown(rules));
        let mac = br
            .mac
            .as_deref()
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
            .unwrap_or_else(|| names::bridge_mac(&info.id));
        Ok((br.index, mac, foreign))
    }

    /// Whether `link` is a bridge nobody in Plexus made: no mark of this driver's (nor a
    /// name it derives), so a user's.
    pub(super) fn is_users_bridge(&self, link: &Link) -> bool {
        link.kind.as_deref() == Some("bridge") && !self.made_by_us(link)
    }

    /// Takes off a user's bridge the gateway addresses the network gave it.
    pub(super) async fn remove_gateways(&self, net: &NetState) {
        for gw in gateways(&net.info, &net.opts) {
            match self
                .rtnl
                .delete_address(net.bridge_index, gw.addr(), gw.prefix_len())
                .await
            {
                Ok(()) | Err(SysError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(bridge = %net.bridge, %gw, error = %e, "cannot take the gateway address off the bridge")
                }
            }
        }
    }

    /// Removes a network's firewall elements and bridge, knowing only the kernel: the bridge
    /// is found by its mark, the subnets by its addresses.
    pub(super) async fn delete_unknown_network(&self, network_id: &str) -> Result<(), DriverError> {
        let alias = names::bridge_alias(&self.marker, network_id);
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        for link in links.iter().filter(|l| l.alias.as_deref() == Some(&alias)) {
            self.remove_bridge_link(link).await?;
        }
        Ok(())
    }

    pub(super) async fn remove_bridge_link(&self, link: &Link) -> Result<(), DriverError> {
        let addrs = self
            .rtnl
            .addresses(link.index)
            .await
            .map_err(sys_ctx(format!("addresses of {}", link.name)))?;
        let subnets = addrs
            .into_iter()
            .filter(|(a, _)| !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .filter_map(|(a, len)| IpNet::new(a, len).ok())
            .map(|n| (n.network(), n.prefix_len()))
            .collect();
        let rules = NetworkRules {
            bridge: link.name.clone(),
            subnets,
            masquerade: true,
            internal: true,
        };
        self.fw
            .teardown_network(&rules)
            .map_err(sys_ctx(format!("firewall of {}", link.name)))?;
        self.delete_link(link.index).await
    }
}
