//! Links: listing, making (bridges, veth pairs, vxlan and macvlan devices), changing and
//! deleting them.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoPortKind,
    InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{
    LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
};

use super::{check_ifname, LinkRef, Rtnl};
use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::sysctl;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Kind (`bridge`, `veth`, `vxlan`, ...), when the link has one.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Index of the bridge (or other controller) it is attached to.
    pub master: Option<u32>,
    /// The alias (`ifalias`): Plexus marks the links it makes with it.
    pub alias: Option<String>,
    /// Hardware address.
    pub mac: Option<Vec<u8>>,
    /// Number of transmit queues.
    pub tx_queues: Option<u32>,
    /// For a bridge: whether it snoops IGMP/MLD (multicast snooping).
    pub mcast_snooping: Option<bool>,
    /// Largest GSO packet the stack builds for it over IPv6 (`gso_max_size`).
    pub gso_max_size: Option<u32>,
    /// Largest GSO packet the stack builds for it over IPv4 (`gso_ipv4_max_size`); `None` on
    /// kernels before 6.3, which have no IPv4 BIG TCP.
    pub gso_ipv4_max_size: Option<u32>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mtu: None,
            up: m.header.flags.contains(LinkFlags::Up),
            master: None,
            alias: None,
            mac: None,
            tx_queues: None,
            mcast_snooping: None,
            gso_max_size: None,
            gso_ipv4_max_size: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = Some(*v),
                LinkAttribute::Controller(v) => link.master = Some(*v),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::NumTxQueues(n) => link.tx_queues = Some(*n),
                LinkAttribute::GsoMaxSize(n) => link.gso_max_size = Some(*n),
                LinkAttribute::GsoIpv4MaxSize(n) => link.gso_ipv4_max_size = Some(*n),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                link.mcast_snooping = opts.iter().find_map(|o| match o {
                                    InfoBridge::MulticastSnooping(on) => Some(*on),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// The attributes that set a link's IPv4 GSO and GRO limits (a kernel before 6.3 ignores
/// them: it has no IPv4 BIG TCP).
fn ipv4_gso_attributes(size: u32) -> [LinkAttribute; 2] {
    [
        LinkAttribute::GsoIpv4MaxSize(size),
        LinkAttribute::GroIpv4MaxSize(size),
    ]
}

/// A veth pair made with one request: the near end in the connection's namespace (on a
/// bridge), the far end straight in another namespace with its final name, hardware address
/// and MTU (down: the caller brings it up once configured). Making the far end inside its
/// namespace avoids moving a link between namespaces, which waits for an RCU grace period
/// (15–30 ms) on every move.
#[derive(Debug, Clone)]
pub struct VethPair<'a> {
    /// Name of the near end.
    pub name: &'a str,
    /// Bridge (or other controller) the near end is attached to.
    pub master: Option<u32>,
    /// Hardware address of the near end; `None` lets the kernel choose.
    pub mac: Option<[u8; 6]>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// Name of the far end, in `peer_ns`.
    pub peer_name: &'a str,
    /// The namespace the far end is made in.
    pub peer_ns: &'a Netns,
    /// Hardware address of the far end.
    pub peer_mac: Option<[u8; 6]>,
    /// Largest IPv4 GSO and GRO packet of both ends; above
    /// [`GSO_LEGACY_MAX_SIZE`](super::GSO_LEGACY_MAX_SIZE) that is IPv4 BIG TCP (fewer,
    /// larger packets through the bridge and its netfilter hooks). `None` leaves the kernel's
    /// 64 KiB. IPv6 keeps 64 KiB either way.
    pub gso_ipv4_max_size: Option<u32>,
}

/// A bridge to make with [`Rtnl::add_bridge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// MTU; `None` for the kernel's default.
    pub mtu: Option<u32>,
    /// Hardware address; `None` lets the kernel choose, and then the bridge takes the lowest
    /// address among its ports as they come and go: the gateway's MAC changes under the
    /// sandboxes (stale ARP caches) and every port added or removed walks all ports.
    pub mac: Option<[u8; 6]>,
    /// Whether it snoops IGMP/MLD; without, it floods multicast like broadcast (see the
    /// bridge driver's `plexus.bridge.mcast_snooping`).
    pub mcast_snooping: bool,
}

/// Bridge port flags (see [`Rtnl::activate_port`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFlags {
    /// `isolated`: no frames to or from other isolated ports.
    pub isolated: bool,
    /// `hairpin`: frames may leave through the port they came in by.
    pub hairpin: bool,
}

/// `IFLA_AF_SPEC` with the IPv6 address generation mode `none`: no link-local address.
fn no_link_local() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

impl Rtnl {
    /// Every link.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list links", "links", e))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        check_ifname("interface name", name)?;
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) => match SysError::netlink("get link", &format!("link {name:?}"), e) {
                SysError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The link called `name`, or [`SysError::NotFound`].
    pub async fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name).await?.ok_or_else(|| SysError::NotFound {
            what: format!("link {name:?} in {}", self.ns.path().display()),
        })
    }

    pub(super) async fn add(&self, what: String, message: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| SysError::netlink(format!("create {what}"), &what, e))
    }

    /// Creates a bridge (see [`BridgeSpec`]), marked with `alias`, and returns it.
    pub async fn add_bridge(&self, spec: &BridgeSpec<'_>, alias: &str) -> Result<Link> {
        let name = spec.name;
        check_ifname("bridge name", name)?;
        let mut builder = LinkBridge::new(name).mcast_snooping(spec.mcast_snooping);
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = spec.mac {
            builder = builder.address(mac.to_vec());
        }
        self.add(format!("bridge {name:?}"), builder.build())
            .await?;
        self.marked(name, alias).await
    }

    /// Creates a veth pair `name` ↔ `peer` in this namespace, both marked with `alias`.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        mtu: Option<u32>,
        alias: &str,
    ) -> Result<(Link, Link)> {
        check_ifname("veth name", name)?;
        check_ifname("veth peer name", peer)?;
        let mut builder = LinkVeth::new(name, peer);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.add(format!("veth {name:?}"), builder.build()).await?;
        let a = self.marked(name, alias).await?;
        let b = self.require_link(peer).await?;
        if let Some(mtu) = mtu {
            self.set(b.index, |m| m.mtu(mtu), "set mtu").await?;
        }
        let b = self.marked(peer, alias).await?;
        Ok((a, b))
    }

    /// Makes a veth pair (see [`VethPair`]), both ends down and unmarked: the caller
    /// configures the far end, then brings the near end into service with
    /// [`Rtnl::activate_port`] (or deletes it). Each end has one queue pair (the kernel's
    /// default, one per possible CPU, gives every queue its own sysfs objects and makes
    /// creation slower) and the near end no IPv6 at all (a bridge port needs none; with IPv6
    /// on, every port adds an `ff00::/8` route that each later link event of the namespace
    /// walks). An [`SysError::Exists`] means one of the two names is taken (the near one here
    /// or the far one in `peer_ns`). If turning IPv6 off fails the pair is deleted.
    pub async fn add_veth_pair(&self, pair: &VethPair<'_>) -> Result<()> {
        check_ifname("veth name", pair.name)?;
        check_ifname("interface name", pair.peer_name)?;
        // Not up: veth refuses to open an end before the pair is linked (ENOTCONN), which
        // happens after the far end is configured.
        let mut peer = LinkUnspec::new_with_name(pair.peer_name)
            .setns_by_fd(pair.peer_ns.fd().as_raw_fd())
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if let Some(mac) = pair.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = pair.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(size) = pair.gso_ipv4_max_size {
            for attr in ipv4_gso_attributes(size) {
                peer = peer.append_extra_attribute(attr);
            }
        }
        let peer = peer.build();
        let mut near = LinkVeth::new(pair.name, pair.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if let Some(size) = pair.gso_ipv4_max_size {
            for attr in ipv4_gso_attributes(size) {
                near = near.append_extra_attribute(attr);
            }
        }
        if let Some(mtu) = pair.mtu {
            near = near.mtu(mtu);
        }
        if let Some(master) = pair.master {
            near = near.controller(master);
        }
        if let Some(mac) = pair.mac {
            near = near.address(mac.to_vec());
        }
        let what = format!("veth {:?} (peer {:?})", pair.name, pair.peer_name);
        self.add(what, near.build()).await?;
        // While it is down, so IPv6 never starts on it.
        if let Err(e) = self.disable_ipv6(pair.name).await {
            if let Ok(Some(link)) = self.link(pair.name).await {
                let _ = self.delete_link(link.index).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Turns IPv6 off on link `name` (`net.ipv6.conf.<name>.disable_ipv6`): its IPv6
    /// addresses, link-local too, and the routes through it go, and none comes back while it
    /// is off. A kernel without IPv6, or a link that is gone, has nothing to turn off.
    /// Written through the namespace's own conf directory, whose lookup cost does not grow
    /// with other namespaces (`SysctlDir`).
    pub async fn disable_ipv6(&self, name: &str) -> Result<()> {
        let written = self
            .ipv6_conf
            .get_or_try_init(|| async { sysctl::SysctlDir::open(&self.ns, "net.ipv6.conf") })
            .await
            .and_then(|conf| conf.write(&[name, "disable_ipv6"], "1"));
        match written {
            // No /proc/sys/net/ipv6 (a kernel without IPv6) or no such link.
            Err(SysError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(link = name, "no IPv6 sysctls: IPv6 left as it is");
                Ok(())
            }
            r => r,
        }
    }

    /// Brings the bridge port `name` into service with one request: sets its port flags,
    /// marks it with `alias` and brings it up. Port settings need RTM_NEWLINK on the existing
    /// link (RTM_SETLINK ignores them); the kernel applies them before the alias and the flags.
    pub async fn activate_port(&self, name: &str, flags: PortFlags, alias: &str) -> Result<()> {
        check_ifname("interface name", name)?;
        let port = LinkMessageBuilder::<LinkBridgePort>::default()
            .name(name)
            .set_port_kind(InfoPortKind::Bridge)
            .alias(alias)
            .up();
        self.send_port(
            port,
            flags,
            &format!("link {name:?}"),
            "bring up bridge port",
        )
        .await
    }

    /// Sets the alias of the link `name` (no lookup first); an empty `alias` clears it.
    /// Cheap: unlike bringing a bridge port down, it waits for no RCU grace period and makes
    /// the bridge recompute nothing.
    pub async fn set_alias_named(&self, name: &str, alias: &str) -> Result<()> {
        check_ifname("interface name", name)?;
        self.set_ref(LinkRef::Name(name), |m| m.alias(alias), "set alias")
            .await
    }

    /// Renames a link and brings it down with one request: how an interface leaves a
    /// sandbox at once while its deletion (slow: RCU grace periods) goes on in the background.
    pub async fn retire(&self, index: u32, new_name: &str) -> Result<()> {
        check_ifname("interface name", new_name)?;
        self.set(index, |m| m.name(new_name.to_string()).down(), "retire")
            .await
    }

    /// Creates a macvlan device on `parent` in bridge mode.
    pub async fn add_macvlan(&self, name: &str, parent: u32, alias: &str) -> Result<Link> {
        check_ifname("macvlan name", name)?;
        let builder = LinkMacVlan::new(name, parent, MacVlanMode::Bridge);
        self.add(format!("macvlan {name:?}"), builder.build())
            .await?;
        self.marked(name, alias).await
    }

    /// Marks a freshly made link with `alias` (the kernel ignores an alias given at creation)
    /// and returns it. If marking fails the link is deleted, so nothing unmarked is left.
    pub(super) async fn marked(&self, name: &str, alias: &str) -> Result<Link> {
        if let Err(e) = self
            .set_ref(LinkRef::Name(name), |m| m.alias(alias), "set alias")
            .await
        {
            if let Ok(Some(link)) = self.link(name).await {
                let _ = self.delete_link(link.index).await;
            }
            return Err(e);
        }
        self.require_link(name).await
    }

    /// Creates a link of any kind from a prepared message (for probing and rare kinds).
    pub async fn add_message(&self, what: &str, message: LinkMessage) -> Result<()> {
        self.add(what.to_string(), message).await
    }

    async fn set(
        &self,
        index: u32,
        f: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
        op: &str,
    ) -> Result<()> {
        self.set_ref(LinkRef::Index(index), f, op).await
    }

    /// One RTM_SETLINK on the link `link` names.
    async fn set_ref(
        &self,
        link: LinkRef<'_>,
        f: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
        op: &str,
    ) -> Result<()> {
        let (builder, what) = match link {
            LinkRef::Index(index) => (LinkUnspec::new_with_index(index), format!("link {index}")),
            LinkRef::Name(name) => (LinkUnspec::new_with_name(name), format!("link {name:?}")),
        };
        self.handle
            .link()
            .set(f(builder).build())
            .execute()
            .await
            .map_err(|e| SysError::netlink(format!("{op} of {what}"), &what, e))
    }

    /// Brings a link up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set(index, |m| m.up(), "bring up").await
    }

    /// Marks a link with `alias` and brings it up (the far end of a [`VethPair`] comes down
    /// and unmarked). Without `link_local` it gets no IPv6 link-local address and so sends
    /// no IPv6 chatter: for an interface on a network without IPv6. That goes through this
    /// connection (`IFLA_INET6_ADDR_GEN_MODE`) rather than a sysctl, which for a link in
    /// another namespace needs the namespace helper thread. The kernel applies flags before
    /// address-family settings within one request, so the mode is set while the link is down
    /// and it comes up with a second request.
    pub async fn set_up_marked(&self, index: u32, alias: &str, link_local: bool) -> Result<()> {
        if link_local {
            return self
                .set(index, |m| m.up().alias(alias), "bring up and mark")
                .await;
        }
        self.set(
            index,
            |m| m.alias(alias).append_extra_attribute(no_link_local()),
            "mark",
        )
        .await?;
        self.set(index, |m| m.up(), "bring up").await
    }

    /// Brings a link down.
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.set(index, |m| m.down(), "bring down").await
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set(index, |m| m.mtu(mtu), "set mtu").await
    }

    /// Sets a link's hardware (MAC) address; the link should be down.
    pub async fn set_mac(&self, index: u32, mac: &[u8]) -> Result<()> {
        let mac = mac.to_vec();
        self.set(index, |m| m.address(mac), "set hardware address")
            .await
    }

    /// Attaches a link to a bridge.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set(index, |m| m.controller(master), "attach").await
    }

    /// Sets the bridge port flags of a link attached to a bridge. `isolated`
    /// (`IFLA_BRPORT_ISOLATED`): isolated ports cannot exchange frames with each other, only
    /// with non-isolated ports and the bridge itself — how Plexus enforces `enable_icc=false`
    /// without `br_netfilter`. `hairpin` (`IFLA_BRPORT_MODE`): frames may leave through the
    /// port they came in by — with `br_netfilter` active, a sandbox reaching its own published
    /// port through a host address needs it. [`Rtnl::activate_port`] sets them when a port
    /// comes into service.
    pub async fn set_port_flags(&self, index: u32, flags: PortFlags) -> Result<()> {
        self.send_port(
            LinkBridgePort::new(index),
            flags,
            &format!("link {index}"),
            "set bridge port flags",
        )
        .await
    }

    /// One RTM_NEWLINK on an existing bridge port with its flags (RTM_SETLINK ignores port
    /// settings) and whatever else `port` carries.
    async fn send_port(
        &self,
        port: LinkMessageBuilder<LinkBridgePort>,
        flags: PortFlags,
        what: &str,
        op: &str,
    ) -> Result<()> {
        let message = port
            .append_info_data(InfoBridgePort::Isolated(flags.isolated))
            .append_info_data(InfoBridgePort::HairpinMode(flags.hairpin))
            .build();
        self.handle
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(|e| SysError::netlink(format!("{op} of {what}"), what, e))
    }

    /// Renames a link (it must be down).
    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        check_ifname("interface name", name)?;
        self.set(index, |m| m.name(name.to_string()), "rename")
            .await
    }

    /// Moves a link into another namespace, optionally renaming it on the way.
    pub async fn move_to(&self, index: u32, target: &Netns, new_name: Option<&str>) -> Result<()> {
        if let Some(n) = new_name {
            check_ifname("interface name", n)?;
        }
        let fd = target.fd().as_raw_fd();
        self.set(
            index,
            |m| {
                let m = m.setns_by_fd(fd);
                match new_name {
                    Some(n) => m.name(n.to_string()),
                    None => m,
                }
            },
            "move to namespace",
        )
        .await
    }

    /// Deletes a link (a veth takes its peer with it).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle.link().del(index).execute().await.map_err(|e| {
            SysError::netlink(format!("delete link {index}"), &format!("link {index}"), e)
        })
    }
}
