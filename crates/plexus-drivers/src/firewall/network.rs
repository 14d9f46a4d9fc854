//! A network's elements: its bridge in the isolation sets, its subnets in the NAT sets.

use std::collections::HashMap;
use std::net::IpAddr;

use plexus_sys::nft::{Batch, Element, Family};
use plexus_sys::{Result, SysError};

use super::addr::{contains, family_of, ifname_key, prefix_elements};
use super::ports::{forget, PortMapping};
use super::*;

/// What the firewall needs to know of one bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge's interface name.
    pub bridge: String,
    /// The network's subnets (IPv4 and/or IPv6), as prefix and length.
    pub subnets: Vec<(IpAddr, u8)>,
    /// `com.docker.network.bridge.enable_ip_masquerade`: masquerade egress.
    pub masquerade: bool,
    /// `--internal`: nothing is forwarded into or out of the bridge.
    pub internal: bool,
}

pub(super) struct NetElements {
    bridge: Vec<u8>,
    nets: HashMap<Family, Vec<Element>>,
}

impl Firewall {
    pub(super) fn network_elements(net: &NetworkRules) -> Result<NetElements> {
        let bridge = ifname_key(&net.bridge)?;
        let mut nets: HashMap<Family, Vec<Element>> = HashMap::new();
        for &(addr, len) in &net.subnets {
            let (_, elems) = prefix_elements(addr, len)?;
            nets.entry(family_of(addr)).or_default().extend(elems);
        }
        Ok(NetElements { bridge, nets })
    }

    pub(super) fn network_adds(b: &mut Batch, net: &NetworkRules, e: &NetElements) {
        let bridge = [Element {
            key: e.bridge.clone(),
            ..Element::default()
        }];
        let intra = [Element {
            key: [e.bridge.clone(), e.bridge.clone()].concat(),
            ..Element::default()
        }];
        b.add_elements(Family::Inet, FILTER_TABLE, BRIDGES, &bridge, false);
        b.add_elements(Family::Inet, FILTER_TABLE, INTRA, &intra, false);
        if net.internal {
            b.add_elements(Family::Inet, FILTER_TABLE, INTERNAL, &bridge, false);
        }
        for f in [Family::Ip, Family::Ip6] {
            b.add_elements(f, NAT_TABLE, BRIDGES, &bridge, false);
            if let Some(nets) = e.nets.get(&f) {
                b.add_elements(f, NAT_TABLE, NETS, nets, false);
                if net.masquerade && !net.internal {
                    b.add_elements(f, NAT_TABLE, MASQ_NETS, nets, false);
                }
            }
        }
    }

    /// Adds a network: its bridge to the isolation sets, its subnets to the NAT sets
    /// (masqueraded unless internal or masquerade is off). One batch of element inserts;
    /// adding the same network again is harmless.
    pub fn setup_network(&self, net: &NetworkRules) -> Result<()> {
        let e = Self::network_elements(net)?;
        let mut b = self.nft.batch();
        Self::network_adds(&mut b, net, &e);
        self.nft.apply(b).map_err(|e| named(e, &net.bridge))?;
        tracing::debug!(bridge = %net.bridge, subnets = ?net.subnets, masquerade = net.masquerade, internal = net.internal, "network firewall set up");
        Ok(())
    }

    /// Removes a network's elements, and the published ports that point into its subnets.
    /// Missing elements are not an error (for clean-up and reconciliation).
    pub fn teardown_network(&self, net: &NetworkRules) -> Result<()> {
        let e = Self::network_elements(net)?;
        // Ports published through another handle count too.
        self.reload_ports()?;
        let bridge = [Element {
            key: e.bridge.clone(),
            ..Element::default()
        }];
        let intra = [Element {
            key: [e.bridge.clone(), e.bridge.clone()].concat(),
            ..Element::default()
        }];
        let inside = |p: &PortMapping| net.subnets.iter().any(|&(a, len)| contains(a, len, p.addr));
        let ports: Vec<PortMapping> = self
            .lock_ports()
            .values()
            .flatten()
            .filter(|p| inside(p))
            .cloned()
            .collect();
        let mut b = self.nft.batch();
        b.destroy_elements(Family::Inet, FILTER_TABLE, BRIDGES, &bridge);
        b.destroy_elements(Family::Inet, FILTER_TABLE, INTRA, &intra);
        b.destroy_elements(Family::Inet, FILTER_TABLE, INTERNAL, &bridge);
        for f in [Family::Ip, Family::Ip6] {
            b.destroy_elements(f, NAT_TABLE, BRIDGES, &bridge);
            if let Some(nets) = e.nets.get(&f) {
                b.destroy_elements(f, NAT_TABLE, NETS, nets);
                b.destroy_elements(f, NAT_TABLE, MASQ_NETS, nets);
            }
        }
        Self::port_deletes(&mut b, &ports);
        self.nft.apply(b).map_err(|e| named(e, &net.bridge))?;
        let mut map = self.lock_ports();
        for p in &ports {
            forget(&mut map, p);
        }
        tracing::debug!(bridge = %net.bridge, ports = ports.len(), "network firewall torn down");
        Ok(())
    }
}

/// Adds the bridge name to a "not found" error (a missing table: `ensure_base` not called).
pub(super) fn named(e: SysError, bridge: &str) -> SysError {
    match e {
        SysError::NotFound { what } => SysError::NotFound {
            what: format!("{what} (for bridge {bridge:?}; was ensure_base called?)"),
        },
        other => other,
    }
}
