//! VXLAN devices for overlay networks: made with the options a statically programmed overlay
//! needs, and born in the namespace they serve while their UDP socket stays in the namespace
//! of the connection that made them (the underlay's).

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use rtnetlink::LinkVxlan;

use super::{check_ifname, Link, Rtnl};
use crate::error::{Result, SysError};

/// VXLAN's IANA UDP port (Docker's `defaultVXLANUDPPort`).
pub const VXLAN_PORT: u16 = 4789;

/// Bytes VXLAN adds to each frame over IPv4: outer IPv4 (20), UDP (8), VXLAN (8) and the
/// inner Ethernet header (14). An overlay interface's MTU is the underlay's minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A VXLAN device to make with [`Rtnl::add_vxlan_spec`].
///
/// The defaults of [`VxlanSpec::overlay`] are those of an overlay whose forwarding tables are
/// programmed from a control plane (as libnetwork's overlay driver, with learning off): no
/// source-address learning (a remote's MAC is where the control plane says, never where a
/// frame came from), ARP/NDP proxy on (the device answers ARP and neighbour solicitations
/// from its static neighbour entries, so no broadcast crosses the underlay), UDP checksums
/// computed (libnetwork leaves the kernel's default, which computes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanSpec<'a> {
    /// The device's name.
    pub name: &'a str,
    /// The VXLAN network identifier (1 to 2^24 - 1).
    pub vni: u32,
    /// The UDP port it sends to and listens on.
    pub port: u16,
    /// The underlay address its packets leave from (`local`); `None` lets routing choose.
    pub local: Option<IpAddr>,
    /// Whether it learns remote MACs from the packets it receives (`learning`).
    pub learning: bool,
    /// Whether it answers ARP and neighbour solicitations from its neighbour table (`proxy`).
    pub proxy: bool,
    /// Whether it computes UDP checksums of IPv4-encapsulated packets (`udpcsum`).
    pub udp_csum: bool,
    /// MTU; `None` for the kernel's default (1450 over IPv4).
    pub mtu: Option<u32>,
}

impl<'a> VxlanSpec<'a> {
    /// An overlay's device: port 4789, learning off, proxy on, UDP checksums on.
    pub fn overlay(name: &'a str, vni: u32, local: Option<IpAddr>) -> Self {
        Self {
            name,
            vni,
            port: VXLAN_PORT,
            local,
            learning: false,
            proxy: true,
            udp_csum: true,
            mtu: None,
        }
    }
}

/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

impl Rtnl {
    /// Creates a VXLAN device with port `port` and learning off (proxy off, UDP checksums on).
    pub async fn add_vxlan(&self, name: &str, vni: u32, port: u16, alias: &str) -> Result<Link> {
        let spec = VxlanSpec {
            port,
            proxy: false,
            ..VxlanSpec::overlay(name, vni, None)
        };
        self.add_vxlan_spec(&spec, None, alias).await
    }

    /// Creates the VXLAN device `spec` describes, down, marked with `alias`, and returns it.
    /// With `born_in`, the device is made straight inside that connection's namespace (one
    /// request, no move between namespaces) while its UDP socket, and so its underlay, stays
    /// in this connection's namespace: how an overlay network's namespace gets its tunnel.
    /// If marking fails the device is deleted. [`SysError::Exists`] when the name is taken or
    /// the underlay namespace has a device with that VNI and port already.
    pub async fn add_vxlan_spec(
        &self,
        spec: &VxlanSpec<'_>,
        born_in: Option<&Rtnl>,
        alias: &str,
    ) -> Result<Link> {
        let name = spec.name;
        check_ifname("vxlan name", name)?;
        if spec.vni == 0 || spec.vni > MAX_VNI {
            return Err(SysError::Invalid {
                field: "vxlan id",
                value: spec.vni.to_string(),
                reason: "must be from 1 to 16777215",
            });
        }
        let mut builder = LinkVxlan::new(name, spec.vni)
            .port(spec.port)
            .learning(spec.learning)
            .proxy(spec.proxy)
            .udp_csum(spec.udp_csum);
        match spec.local {
            Some(IpAddr::V4(a)) => builder = builder.local(a),
            Some(IpAddr::V6(a)) => builder = builder.local6(a),
            None => {}
        }
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(target) = born_in {
            builder = builder.setns_by_fd(target.netns().fd().as_raw_fd());
        }
        self.add(format!("vxlan {name:?} (id {})", spec.vni), builder.build())
            .await?;
        born_in.unwrap_or(self).marked(name, alias).await
    }
}
