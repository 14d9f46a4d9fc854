//! Links made on top of another: macvlan and ipvlan devices (born in the namespace they
//! serve while their parent stays in this connection's), 802.1q VLAN sub-interfaces, and the
//! dummy links that stand in for a parent where there is none.

use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{IpVlanFlags, IpVlanMode, LinkMessage, MacVlanMode};
use rtnetlink::{LinkDummy, LinkIpVlan, LinkMacVlan, LinkMessageBuilder, LinkVlan};

use super::{check_ifname, Link, Rtnl};
use crate::error::{Result, SysError};
use crate::netns::Netns;

/// The largest 802.1q VLAN id a sub-interface may carry (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// How macvlan devices on one parent reach each other (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacvlanMode {
    /// Devices of the parent reach each other inside the host; the rest goes out the parent.
    Bridge,
    /// Devices of the parent never reach each other, not even through an outside switch
    /// that sends their frames back (hairpin).
    Private,
    /// Every frame goes out the parent: devices of the parent reach each other only through
    /// an outside switch that sends frames back where they came from (802.1Qbg VEPA, a
    /// Linux bridge port in hairpin mode).
    Vepa,
    /// One device takes the parent over (the parent turns promiscuous and hands it
    /// everything); a second device on the parent is refused by the kernel.
    Passthru,
}

/// How ipvlan devices of one parent forward (`IFLA_IPVLAN_MODE`, the same for every device
/// of a parent: the last one made sets it for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvlanMode {
    /// Switched by MAC (the parent's, shared by every device); ARP and broadcasts work.
    L2,
    /// Routed by IP: no broadcast, no ARP from the devices; the outside must route the
    /// devices' addresses to the host.
    L3,
    /// `l3` through the netfilter hooks of the host's namespace (conntrack sees the traffic).
    L3s,
}

/// How ipvlan devices of one parent reach each other (`IFLA_IPVLAN_FLAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvlanFlag {
    /// Devices reach each other inside the host.
    Bridge,
    /// Devices never reach each other.
    Private,
    /// Devices reach each other only through an outside switch that sends frames back.
    Vepa,
}

/// What a [`SubLink`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubLinkKind {
    /// A macvlan device: its own MAC on the parent's wire.
    Macvlan(MacvlanMode),
    /// An ipvlan device: the parent's MAC, its own addresses.
    Ipvlan(IpvlanMode, IpvlanFlag),
}

impl SubLinkKind {
    /// The kernel's name of the kind (`macvlan`, `ipvlan`).
    pub fn name(self) -> &'static str {
        match self {
            SubLinkKind::Macvlan(_) => "macvlan",
            SubLinkKind::Ipvlan(..) => "ipvlan",
        }
    }
}

/// A macvlan or ipvlan device to make with [`Rtnl::add_sublink`], on a parent of the
/// connection's namespace. With `born_in` it is made straight inside that namespace with its
/// final name (one request; no move between namespaces, which waits for an RCU grace period),
/// its parent staying where it is.
#[derive(Debug, Clone, Copy)]
pub struct SubLink<'a> {
    /// Its name (in `born_in`, or in the connection's namespace).
    pub name: &'a str,
    /// The parent's index, in the connection's namespace.
    pub parent: u32,
    /// Macvlan or ipvlan, with its mode.
    pub kind: SubLinkKind,
    /// Hardware address (macvlan only: an ipvlan device has its parent's); `None` lets the
    /// kernel choose.
    pub mac: Option<[u8; 6]>,
    /// MTU; `None`: the parent's.
    pub mtu: Option<u32>,
    /// The namespace it is born in; `None`: the connection's.
    pub born_in: Option<&'a Netns>,
}

fn macvlan_mode(mode: MacvlanMode) -> MacVlanMode {
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

fn ipvlan_mode(mode: IpvlanMode) -> IpVlanMode {
    match mode {
        IpvlanMode::L2 => IpVlanMode::L2,
        IpvlanMode::L3 => IpVlanMode::L3,
        IpvlanMode::L3s => IpVlanMode::L3S,
    }
}

fn ipvlan_flags(flag: IpvlanFlag) -> IpVlanFlags {
    match flag {
        IpvlanFlag::Bridge => IpVlanFlags::empty(),
        IpvlanFlag::Private => IpVlanFlags::Private,
        IpvlanFlag::Vepa => IpVlanFlags::Vepa,
    }
}

/// The common attributes of a sub-link's message.
fn finish<T>(mut b: LinkMessageBuilder<T>, spec: &SubLink<'_>) -> LinkMessage {
    if let Some(mac) = spec.mac {
        b = b.address(mac.to_vec());
    }
    if let Some(mtu) = spec.mtu {
        b = b.mtu(mtu);
    }
    if let Some(ns) = spec.born_in {
        b = b.setns_by_fd(ns.fd().as_raw_fd());
    }
    b.build()
}

impl Rtnl {
    /// Makes the macvlan or ipvlan device `spec` describes, down and unmarked: the caller
    /// configures it where it was born, marks it and brings it up (or deletes it).
    /// [`SysError::Exists`] when its name is taken where it is born;
    /// [`SysError::Unsupported`] when the kernel lacks the kind (module `macvlan` or
    /// `ipvlan`); a netlink error `EINVAL` or `EBUSY` when the parent cannot take it (a
    /// passthru macvlan there already, or a device of the other kind).
    pub async fn add_sublink(&self, spec: &SubLink<'_>) -> Result<()> {
        check_ifname("interface name", spec.name)?;
        let message = match spec.kind {
            SubLinkKind::Macvlan(mode) => finish(
                LinkMacVlan::new(spec.name, spec.parent, macvlan_mode(mode)),
                spec,
            ),
            SubLinkKind::Ipvlan(mode, flag) => {
                if spec.mac.is_some() {
                    return Err(SysError::Invalid {
                        field: "mac address",
                        value: spec.name.into(),
                        reason: "an ipvlan device has its parent's MAC",
                    });
                }
                finish(
                    LinkIpVlan::new(spec.name, spec.parent, ipvlan_mode(mode))
                        .flag(ipvlan_flags(flag)),
                    spec,
                )
            }
        };
        let what = format!(
            "{} {:?} on link {}",
            spec.kind.name(),
            spec.name,
            spec.parent
        );
        match self.add(what, message).await {
            Err(SysError::Unsupported { .. }) => Err(SysError::Unsupported {
                feature: format!("{} links", spec.kind.name()),
                hint: format!(
                    "the kernel has no {kind} devices: it needs CONFIG_{upper} (module {kind})",
                    kind = spec.kind.name(),
                    upper = spec.kind.name().to_ascii_uppercase()
                ),
            }),
            other => other,
        }
    }

    /// Makes the 802.1q sub-interface `name` of `parent` with VLAN id `vlan_id`, marks it
    /// with `alias`, brings it up and returns it. [`SysError::Invalid`] for an id outside
    /// 1..=4094, [`SysError::Unsupported`] when the kernel has no 802.1q (module `8021q`).
    pub async fn add_vlan(
        &self,
        name: &str,
        parent: u32,
        vlan_id: u16,
        alias: &str,
    ) -> Result<Link> {
        check_ifname("vlan name", name)?;
        if !(1..=MAX_VLAN_ID).contains(&vlan_id) {
            return Err(SysError::Invalid {
                field: "vlan id",
                value: vlan_id.to_string(),
                reason: "must be from 1 to 4094",
            });
        }
        let message = LinkVlan::new(name, parent, vlan_id).build();
        match self.add(format!("vlan {name:?} (id {vlan_id})"), message).await {
            Err(SysError::Unsupported { .. }) => {
                return Err(SysError::Unsupported {
                    feature: "802.1q vlan links".into(),
                    hint: "the kernel has no 802.1q sub-interfaces: it needs CONFIG_VLAN_8021Q (module 8021q)".into(),
                })
            }
            other => other?,
        }
        self.marked_up(name, alias).await
    }

    /// Makes the dummy link `name`, marks it with `alias`, brings it up and returns it: a
    /// parent that goes nowhere. [`SysError::Unsupported`] when the kernel has no dummy links
    /// (module `dummy`). The caller should know the kernel has them first (see
    /// [`probe`](crate::probe)): where `dummy` is a module not yet loaded, this request loads
    /// it, and loading it adds a `dummy0` link to the machine's own namespace.
    pub async fn add_dummy(&self, name: &str, alias: &str) -> Result<Link> {
        check_ifname("dummy name", name)?;
        match self
            .add(format!("dummy {name:?}"), LinkDummy::new(name).build())
            .await
        {
            Err(SysError::Unsupported { .. }) => {
                return Err(SysError::Unsupported {
                    feature: "dummy links".into(),
                    hint: "the kernel has no dummy links: it needs CONFIG_DUMMY (module dummy)"
                        .into(),
                })
            }
            other => other?,
        }
        self.marked_up(name, alias).await
    }

    /// Marks a link just made and brings it up; deletes it if either fails.
    async fn marked_up(&self, name: &str, alias: &str) -> Result<Link> {
        let link = self.marked(name, alias).await?;
        if let Err(e) = self.set_up(link.index).await {
            let _ = self.delete_link(link.index).await;
            return Err(e);
        }
        self.require_link(name).await
    }
}
